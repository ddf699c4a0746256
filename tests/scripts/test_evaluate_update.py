"""scripts/evaluate.py --update with versioned manifests: a new version is added beside the deployed one (the
gate deploys it), the same version and metrics-only runs update in place."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.detect.model_versions import entries_of, read_doc
from pipeline.detect.registry import load_manifest
from tests.fixtures.model_gate import fire_manifest
from tests.scripts_loader import load_script


def test_update_adds_new_versions_without_deploying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ev = load_script("evaluate")
    manifest = fire_manifest(tmp_path / "models")
    monkeypatch.setattr(ev, "MANIFEST", manifest)
    ev.update_manifest([{"name": "fire", "version": "3", "file": "fire-v3.onnx", "metrics": [{"eval": "a"}]}])
    assert [e["version"] for e in entries_of(read_doc(manifest), "fire")] == ["2", "3"]
    assert load_manifest(manifest)["fire"].version == "2"
    ev.update_manifest([{"name": "fire", "metrics": [{"eval": "b"}]}])  # --metrics-only: the deployed entry
    ev.update_manifest([{"name": "fire", "version": "3", "file": "fire-v3.onnx", "metrics": [{"eval": "c"}]}])
    v2, v3 = entries_of(read_doc(manifest), "fire")
    assert [r["eval"] for r in v2["metrics"]] == ["b"]
    assert [r["eval"] for r in v3["metrics"]] == ["a", "c"]
    ev.update_manifest([{"name": "fire", "file": "fire.onnx", "metrics": [{"eval": "d"}]}])  # no --version
    assert [r["eval"] for r in entries_of(read_doc(manifest), "fire")[0]["metrics"]] == ["b", "d"]
    ev.update_manifest([{"name": "smoke", "file": "smoke.onnx", "metrics": [{"eval": "e"}]}])  # a new name
    assert load_manifest(manifest)["smoke"].version == "1"
