"""`gridwatch model train`: argument checks (no torch needed) and, with torch, a tiny real run and a resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.detect.model_versions import ModelRef, deployed_version, find_entry, read_doc, sha256_of
from pipeline.training.plan import next_version
from tests.dataset.support import fire_manifest, tiny_fire_set

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_fire_set(tmp_path_factory.mktemp("set") / "fire")


def _train(tmp_path: Path, *args: str) -> tuple[int, str]:
    r = runner.invoke(cli_app, ["model", "train", "--hazard", "fire", "--manifest", str(tmp_path / "manifest.yaml"),
                                "--runs", str(tmp_path / "runs"), "--no-progress", *args])
    return r.exit_code, r.output


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "fire@9"], "no version '9' of 'fire'"),
    (["--from", "nosuch@1"], "no model 'nosuch'"),
    (["--from", "missing.onnx"], "missing.onnx: no such file"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--imgsz", "100"], "multiple of 32"),
    (["--version", "2"], "fire@2 is in"),
    (["--version", "a/b"], "letters, digits"),
    (["--hyp", "nonsense"], "want KEY=VALUE"),
])
def test_bad_requests_fail_fast_with_one_line(tiny_set: Path, tmp_path: Path, args: list[str], message: str) -> None:
    fire_manifest(tmp_path / "manifest.yaml")
    base = ["--from", "fire@2", "--data", str(tiny_set), "--epochs", "1"]
    code, out = _train(tmp_path, *base, *args)
    assert code == 2 and message in " ".join(out.split()), out
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
    assert [e["name"] for e in read_doc(tmp_path / "manifest.yaml")["models"]] == ["fire"]


def test_data_checks(tiny_set: Path, tmp_path: Path) -> None:
    fire_manifest(tmp_path / "manifest.yaml")
    code, out = _train(tmp_path, "--from", "fire@2", "--data", str(tmp_path))
    assert code == 2 and "no data.yaml" in out
    other = tmp_path / "other"
    other.mkdir()
    for split in ("train", "val"):
        (other / "images" / split).mkdir(parents=True)
    (other / "data.yaml").write_text(yaml.safe_dump({"path": str(other), "train": "images/train",
                                                     "val": "images/val", "names": ["smoke", "fire"]}))
    code, out = _train(tmp_path, "--from", "fire@2", "--data", str(other))
    assert code == 2 and "differ from fire@2's ['fire', 'smoke']" in " ".join(out.split())
    code, out = _train(tmp_path, "--from", "fire@2")
    assert code == 2 and "--from and --data are needed" in out
    code, out = _train(tmp_path, "--resume")
    assert code == 2 and "nothing to resume" in out
    code, out = _train(tmp_path, "--resume", "--from", "fire@2")
    assert code == 2 and "drop --from" in out


def test_next_version_counts_up_from_the_highest_numeric_one() -> None:
    doc = {"models": [{"name": "fire", "version": "2"}, {"name": "fire", "version": "v7"},
                      {"name": "fire", "version": "exp"}, {"name": "coco", "version": "40"}]}
    assert next_version(doc, "fire") == "v8"
    assert next_version(doc, "clutter") == "v1"


def test_without_torch_the_request_is_checked_then_refused(tiny_set: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fire_manifest(tmp_path / "manifest.yaml")
    monkeypatch.setitem(sys.modules, "torch", None)  # as on CI, which has no torch (an import error)
    code, out = _train(tmp_path, "--from", "fire@2", "--data", str(tiny_set), "--epochs", "1")
    assert code == 2 and "pip install -e '.[train]'" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_one_epoch_tiny_run_registers_a_candidate_with_a_card(tiny_set: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    import numpy as np
    import onnxruntime as ort

    manifest = fire_manifest(tmp_path / "manifest.yaml")
    code, out = _train(tmp_path, "--from", "fire@2", "--data", str(tiny_set), "--epochs", "1", "--imgsz", "160",
                       "--batch", "8", "--workers", "0")
    assert code == 0, out
    assert "fire@v3" in out and "registered as a candidate (not deployed)" in " ".join(out.split())
    doc = read_doc(manifest)
    entry = find_entry(doc, ModelRef("fire", "v3"))
    onnx = tmp_path / "fire-v3.onnx"
    assert entry["sha256"] == sha256_of(onnx) and entry["status"] == "candidate" and entry["input_size"] == 160
    assert deployed_version(doc, "fire") == "2"  # a candidate is not deployed
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 160, 160), np.float32)})
    assert y.shape[:2] == (1, 6)  # 4 box + 2 class rows (fire, smoke)
    assert entry["training"]["from"] == "fire@2" and entry["training"]["data_counts"]["val"]["cameras"]
    card = (tmp_path / "fire-v3.md").read_text()
    assert "## Not tested on" in card and "frozen benchmark" in card and "candidate, not deployed" in card
    assert "| train | 12 | 9 | 3 | fire 24, smoke 0 | cam1, cam2, cam3 |" in card
    code, out = _train(tmp_path, "--resume")
    assert code == 2 and "nothing to resume" in out  # the finished run is not resumed


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_end(tiny_set: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    fire_manifest(tmp_path / "manifest.yaml")
    cmd = [sys.executable, "-m", "pipeline.cli", "model", "train", "--hazard", "fire", "--from", "fire@2",
           "--data", str(tiny_set), "--epochs", "3", "--imgsz", "160", "--batch", "8", "--workers", "0",
           "--manifest", str(tmp_path / "manifest.yaml"), "--runs", str(tmp_path / "runs"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    last = tmp_path / "runs" / "fire-v3" / "weights" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # let the epoch-1 checkpoint be written completely
    os.killpg(proc.pid, signal.SIGKILL)  # a real interruption: the process dies mid-run
    proc.wait()
    assert last.is_file(), proc.stdout.read().decode() if proc.stdout else ""
    assert not (tmp_path / "fire-v3.onnx").exists()
    code, out = _train(tmp_path, "--resume")
    assert code == 0, out
    entry = find_entry(read_doc(tmp_path / "manifest.yaml"), ModelRef("fire", "v3"))
    assert entry["training"]["epochs"] == 3 and (tmp_path / "fire-v3.onnx").is_file()


@pytest.mark.slow
def test_verdicts_to_export_to_a_trained_candidate(tmp_path: Path) -> None:
    """The loop's first half on real frames: verdicts through the API -> dataset export -> model train."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from tests.dataset.support import build_world

    (tmp_path / "site").mkdir()
    w = build_world(tmp_path / "site")
    try:
        r = runner.invoke(cli_app, ["dataset", "export", "--config", str(w.config), "--out", str(tmp_path / "ds"),
                                    "--val-camera", "cam2", "--models", str(REPO / "models" / "manifest.yaml")])
        assert r.exit_code == 0, r.output
    finally:
        w.client.__exit__(None, None, None)
    fire_manifest(tmp_path / "manifest.yaml")
    code, out = _train(tmp_path, "--from", "fire@2", "--data", str(tmp_path / "ds" / "fire"), "--epochs", "1",
                       "--imgsz", "160", "--batch", "4", "--workers", "0")
    assert code == 0, out
    entry = find_entry(read_doc(tmp_path / "manifest.yaml"), ModelRef("fire", "v3"))
    counts = entry["training"]["data_counts"]
    assert counts["val"]["cameras"] == ["cam2"] and counts["train"]["negatives"] == 2
    card = (tmp_path / "fire-v3.md").read_text()
    assert "frames with boxes corrected by a person" in card and "2 frames with boxes corrected" in " ".join(
        card.split())
