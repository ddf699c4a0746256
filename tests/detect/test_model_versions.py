"""Versioned manifest: name@version entries, deployments (deployed / previous / canary / history), backward
compatibility with one-entry-per-name manifests, and hash checks on promote and rollback. Real model files
(copies of models/*.onnx in tmp), no inference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.detect.model_versions import (
    ModelRef,
    ModelVersionError,
    add_version,
    deployed_version,
    deployment_of,
    promote,
    read_doc,
    rollback,
)
from pipeline.detect.registry import load_manifest, sha256_file

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """A pre-versions manifest (one entry per name) with fire v2 = a copy of models/fire.onnx."""
    shutil.copy(MODELS / "fire.onnx", tmp_path / "fire.onnx")
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"models": [
        {"name": "fire", "file": "fire.onnx", "sha256": sha256_file(tmp_path / "fire.onnx"), "classes": 2,
         "input_size": 416, "version": "2", "threshold": 0.64}]}))
    return path


def test_old_format_reads_as_before(manifest: Path) -> None:
    entries = load_manifest(manifest)
    assert entries["fire"].version == "2" and entries["fire"].input_size == 416
    assert entries["fire@2"] == entries["fire"]
    assert deployed_version(read_doc(manifest), "fire") == "2"


def test_add_promote_rollback(manifest: Path, tmp_path: Path) -> None:
    v3 = tmp_path / "fire-v3.onnx"
    shutil.copy(MODELS / "fire-int8.onnx", v3)
    entry = add_version(manifest, "fire", "v3", v3)
    assert entry["input_size"] == 416 and entry["threshold"] == 0.64  # copied from the deployed version
    assert entry["sha256"] == sha256_file(v3)
    assert load_manifest(manifest)["fire"].version == "2"  # adding does not deploy
    with pytest.raises(ModelVersionError, match="already"):
        add_version(manifest, "fire", "3", v3)  # v3 and 3 are the same version

    dep = promote(manifest, ModelRef.parse("fire@v3"), reason="better on site benchmark", by="ana")
    assert (dep.deployed, dep.previous) == ("v3", ["2"])
    entries = load_manifest(manifest)
    assert entries["fire"].file == v3 and entries["fire@2"].file == tmp_path / "fire.onnx"
    rec = deployment_of(read_doc(manifest), "fire").history[-1]
    assert rec["action"] == "promote" and rec["from"] == "2" and rec["by"] == "ana" and rec["ts"] > 1.7e9

    dep = rollback(manifest, "fire", reason="operators report misses")
    assert (dep.deployed, dep.previous) == ("2", [])
    assert load_manifest(manifest)["fire"].version == "2"
    with pytest.raises(ModelVersionError, match="no earlier version"):
        rollback(manifest, "fire")


def test_canary_then_full_then_rollback_ends_canary(manifest: Path, tmp_path: Path) -> None:
    v3 = tmp_path / "fire-v3.onnx"
    shutil.copy(MODELS / "fire-int8.onnx", v3)
    add_version(manifest, "fire", "v3", v3)
    dep = promote(manifest, ModelRef("fire", "v3"), canary=["cam-7"])
    assert (dep.deployed, dep.canary_version, dep.canary_cameras) == ("2", "v3", ["cam-7"])
    assert load_manifest(manifest)["fire"].version == "2"
    dep = rollback(manifest, "fire")  # ends the canary, deployed stays
    assert (dep.deployed, dep.canary_version) == ("2", None)
    promote(manifest, ModelRef("fire", "v3"), canary=["cam-7"])
    dep = promote(manifest, ModelRef("fire", "v3"))
    assert (dep.deployed, dep.canary_version, dep.previous) == ("v3", None, ["2"])
    assert [h["action"] for h in dep.history] == ["canary", "rollback", "canary", "promote"]


def test_promote_refuses_a_file_that_changed_since_it_was_added(manifest: Path, tmp_path: Path) -> None:
    v3 = tmp_path / "fire-v3.onnx"
    shutil.copy(MODELS / "fire-int8.onnx", v3)
    add_version(manifest, "fire", "v3", v3)
    with v3.open("r+b") as f:  # truncated by a half-finished copy
        f.truncate(4096)
    before = manifest.read_text()
    with pytest.raises(ModelVersionError, match="sha256"):
        promote(manifest, ModelRef("fire", "v3"))
    assert manifest.read_text() == before  # nothing written
    with pytest.raises(ModelVersionError, match="no version"):
        promote(manifest, ModelRef("fire", "v9"))
    with pytest.raises(ModelVersionError, match="NAME@VERSION"):
        ModelRef.parse("fire@")


def test_repository_manifest_still_loads() -> None:
    entries = load_manifest(MODELS / "manifest.yaml")
    assert entries["fire"].file.name == "fire.onnx"
    assert "fire@2" in entries and entries["fire@2"] == entries["fire"]


def test_concurrent_promotions_all_land_in_the_history(manifest: Path, tmp_path: Path) -> None:
    import threading

    v3 = tmp_path / "fire-v3.onnx"
    shutil.copy(MODELS / "fire-int8.onnx", v3)
    add_version(manifest, "fire", "v3", v3)
    threads = [threading.Thread(target=promote, args=(manifest, ModelRef("fire", v)), kwargs={"reason": str(i)})
               for i, v in enumerate(["v3", "2", "v3", "2", "v3", "2"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = deployment_of(read_doc(manifest), "fire").history
    assert sorted(h["reason"] for h in history) == [str(i) for i in range(6)]
