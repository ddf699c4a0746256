"""`gridwatch model evaluate|promote|rollback` on real models and real frames: a worse candidate (fire.onnx
with noise on its weights) is refused with the side-by-side table and a non-zero exit, `--force` needs a
reason that is recorded, an equal candidate is promoted and rolled back. The benchmark is small: 24 fire val
frames + 12 clutter val negatives, and (in one test) the fire slideshow clip as an event."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.detect.model_versions import deployment_of, read_doc
from pipeline.detect.registry import load_manifest, sha256_file
from pipeline.evaluation import benchmark as benchmark_mod
from pipeline.evaluation.benchmark import Benchmark, ModelScore
from pipeline.model_cli import model_app
from tests.fixtures.model_gate import FIRE, fire_clip, fire_manifest, noisy_copy

runner = CliRunner()


def _benchmark(folder: Path, shared: Path, events: Path | None = None) -> Path:
    doc: dict[str, object] = {
        "hazard": "fire",
        "frames": {"data": str(shared / "datasets" / "fire" / "data.yaml"), "split": "val", "limit": 24,
                   "negatives": [str(shared / "datasets" / "clutter" / "images" / "val")], "negatives_limit": 12},
        "gate": {"operating_point": 0.02, "missed_events": 0, "false_per_hour": 0}}
    if events is not None:
        doc["events"] = str(events)
    path = folder / "benchmark.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cli(*args: str) -> tuple[int, str]:
    r = runner.invoke(model_app, list(args))
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def noisy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The degraded fire detector, written once per module (one file, so its scores can be shared)."""
    return noisy_copy(FIRE, tmp_path_factory.mktemp("noisy") / "fire-noisy.onnx")


@pytest.fixture(scope="module")
def score_cache() -> dict[tuple[object, ...], ModelScore]:
    return {}


@pytest.fixture(autouse=True)
def shared_scores(monkeypatch: pytest.MonkeyPatch, score_cache: dict[tuple[object, ...], ModelScore]) -> None:
    """Share real ``score_model`` results across the module's CLI calls.

    Scoring is deterministic, so the same benchmark (all but its tolerance), the same model file (resolved
    path and sha256) and input size give the same score: the first call per key runs the real evaluation;
    later ones (a second ``promote``, ``evaluate`` then ``promote``, the next test) reuse it under their own
    label. A copy of a model at another path is a different key, so it is really evaluated.
    """
    real = benchmark_mod.score_model

    def cached(bench: Benchmark, label: str, model: Path, input_size: int | None) -> ModelScore:
        spec = {k: v for k, v in asdict(bench).items() if k not in ("source", "tolerance")}
        key = (repr(sorted(spec.items())), str(Path(model).resolve()), sha256_file(Path(model)), input_size)
        if key not in score_cache:
            score_cache[key] = real(bench, label, model, input_size)
        return replace(score_cache[key], label=label, file=str(model))

    monkeypatch.setattr(benchmark_mod, "score_model", cached)


@pytest.fixture
def gate_setup(tmp_path: Path, shared_dir: Path, noisy_model: Path) -> tuple[Path, Path]:
    """(manifest with fire v2 deployed and fire@v3-noisy registered, frames-only benchmark)."""
    manifest = fire_manifest(tmp_path / "models")
    code, out = _cli("add", "fire@v3-noisy", str(noisy_model), "-m", str(manifest))
    assert code == 0, out
    return manifest, _benchmark(tmp_path, shared_dir)


def test_worse_candidate_is_refused_and_force_needs_a_reason(gate_setup: tuple[Path, Path]) -> None:
    manifest, bench = gate_setup
    code, out = _cli("promote", "fire@v3-noisy", "-b", str(bench), "-m", str(manifest))
    assert code == 1, out
    assert "REFUSED" in out and "operating point" in out and "fire@2 (deployed)" in out, out
    assert load_manifest(manifest)["fire"].version == "2"

    code, out = _cli("promote", "fire@v3-noisy", "--force", "-m", str(manifest))
    assert code == 2 and "--reason" in out, out
    code, out = _cli("promote", "fire@v3-noisy", "-b", str(bench), "--force", "--reason", "night test only",
                     "-m", str(manifest))
    assert code == 0, out
    rec = deployment_of(read_doc(manifest), "fire").history[-1]
    assert rec["forced"] is True and rec["reason"] == "night test only" and rec["gate"]["refused"]
    assert rec["gate"]["candidate"]["operating_point"] < rec["gate"]["deployed"]["operating_point"]
    assert load_manifest(manifest)["fire"].version == "v3-noisy"


def test_tolerance_option_lets_a_small_drop_through(gate_setup: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, bench = gate_setup
    out_json = tmp_path / "scores.json"
    code, out = _cli("evaluate", "--candidate", "fire@v3-noisy", "--hazard", "fire", "-b", str(bench),
                     "--json", str(out_json), "-m", str(manifest))
    assert code == 0, out
    scores = json.loads(out_json.read_text())
    drop = scores["deployed"]["operating_point"] - scores["candidate"]["operating_point"]
    assert drop > 0.05 and scores["candidate"]["ap50"] < scores["deployed"]["ap50"], scores
    assert scores["deployed"]["positive_frames"] > 10 and scores["deployed"]["negative_frames"] >= 12
    code, out = _cli("promote", "fire@v3-noisy", "-b", str(bench), "--tolerance-op", f"{drop + 0.01:.3f}",
                     "-m", str(manifest))
    assert code == 0, out
    assert load_manifest(manifest)["fire"].version == "v3-noisy"


@pytest.mark.slow
def test_equal_candidate_promoted_on_frames_and_events_then_rolled_back(tmp_path: Path, shared_dir: Path) -> None:
    manifest = fire_manifest(tmp_path / "models")
    same = shutil.copy(FIRE, tmp_path / "models" / "fire-v3.onnx")
    assert _cli("add", "fire@v3", str(same), "-m", str(manifest))[0] == 0
    events = tmp_path / "events.yaml"
    events.write_text(yaml.safe_dump({"defaults": {"start_ts": 1_800_000_000}, "clips": [
        {"name": "fire-slideshow", "clip": str(fire_clip(shared_dir)), "spec": {"hazards": ["fire"], "fps": 1},
         "hazards": {"fire": {"confirm_model": None}}, "events": [{"hazard": "fire", "window": [0, None]}]}]}))
    bench = _benchmark(tmp_path, shared_dir, events)
    code, out = _cli("promote", "fire@v3", "-b", str(bench), "-m", str(manifest))
    assert code == 0, out
    assert "passes the gate" in out and "missed events" in out, out
    rec = deployment_of(read_doc(manifest), "fire").history[-1]
    dep, cand = rec["gate"]["deployed"], rec["gate"]["candidate"]
    assert dep["expected_events"] == 1 and dep["missed_events"] == cand["missed_events"] == 0, rec
    assert cand["operating_point"] == dep["operating_point"] and cand["video_s"] > 20
    assert load_manifest(manifest)["fire"].version == "v3"

    code, out = _cli("rollback", "fire", "--reason", "check", "-m", str(manifest))
    assert code == 0 and "deployed 2" in out, out
    assert load_manifest(manifest)["fire"].version == "2"
    code, out = _cli("list", "-m", str(manifest))
    assert code == 0 and "fire@v3" in out and "deployed" in out, out


def test_benchmark_errors_are_clear(tmp_path: Path, shared_dir: Path) -> None:
    manifest = fire_manifest(tmp_path / "models")
    code, out = _cli("evaluate", "--candidate", "fire@9", "-b", str(_benchmark(tmp_path, shared_dir)),
                     "-m", str(manifest))
    assert code == 2 and "no version '9'" in out, out
    code, out = _cli("promote", "fire@2", "-m", str(manifest))
    assert code == 2 and "--benchmark" in out, out
    junk = tmp_path / "models" / "fire-junk.onnx"
    junk.write_bytes(b"\x08\x07" + b"junk" * 1000)
    assert _cli("add", "fire@junk", str(junk), "-m", str(manifest))[0] == 0
    code, out = _cli("promote", "fire@junk", "-b", str(_benchmark(tmp_path, shared_dir)), "-m", str(manifest))
    assert code == 2 and "cannot load" in out, out
    assert load_manifest(manifest)["fire"].version == "2"
    bad = tmp_path / "bad.yaml"
    bad.write_text("hazard: fire\n")
    code, out = _cli("evaluate", "--candidate", str(FIRE), "-b", str(bad), "-m", str(manifest))
    assert code == 2 and "frames" in out, out


def test_benchmark_folder_and_gate_rules(tmp_path: Path, shared_dir: Path) -> None:
    from pipeline.evaluation.benchmark import ModelScore, Tolerance, gate, load_benchmark

    yolo = load_benchmark(shared_dir / "datasets" / "fire", "fire")  # a YOLO folder: its data.yaml, val split
    assert yolo.data == shared_dir / "datasets" / "fire" / "data.yaml" and yolo.events is None
    _benchmark(tmp_path, shared_dir)
    folder = load_benchmark(tmp_path)  # a folder holding benchmark.yaml
    assert folder.limit == 24 and folder.tolerance == Tolerance(0.02, 0, 0.0)

    dep = ModelScore("fire@2", "a", operating_point=0.56, missed_events=0, false_events=0, false_per_hour=0.0)
    ok = ModelScore("fire@3", "b", operating_point=0.545, missed_events=0, false_events=0, false_per_hour=0.0)
    assert gate(ok, dep, Tolerance()) == []  # 1.5 points lower: inside the 2-point tolerance
    worse = ModelScore("fire@4", "c", operating_point=0.60, missed_events=1, false_events=2, false_per_hour=25.9)
    why = gate(worse, dep, Tolerance())
    assert len(why) == 2 and "missed events 1" in why[0] and "25.9/h" in why[1]
    assert gate(worse, dep, Tolerance(missed_events=1, false_per_hour=30)) == []
    frames_only = ModelScore("fire@5", "d", operating_point=0.50)  # no clips: events not judged
    assert len(gate(frames_only, ModelScore("fire@2", "a", operating_point=0.56), Tolerance())) == 1
