"""A site's frozen benchmark, candidate vs. deployed model on it, and the promotion gate.

A benchmark is a YAML file (or a folder holding ``benchmark.yaml``; a folder with only a YOLO ``data.yaml``
and optionally an ``events.yaml`` works too). Paths are relative to the YAML::

    hazard: fire                # what the model is for (default model name)
    model: fire                 # manifest model name (default: hazard)
    frames:                     # held-back labelled frames, YOLO format
      data: ../../shared/datasets/fire/data.yaml
      split: val
      only: "AdhyaksaWP__*"     # optional file-name glob
      limit: 40                 # optional: the first N images (after `only`)
      negatives: [../../shared/datasets/clutter/images/val]   # extra negative frames (any image)
      negatives_limit: 40
      imgsz: 416                # default: the manifest entry's input_size
      map: []                   # model_class=data_class renames
    events: ../configs/events.yaml   # optional: labelled clips (scripts/evaluate_events.py format)
    clips: [corridor-fire]      # optional: only these clips of it
    gate:                       # how much worse a candidate may be and still be promoted
      operating_point: 0.02     # share of positive frames alarmed at the 1 % false-alarm threshold
      missed_events: 0
      false_per_hour: 0.0

Scores per model (:class:`ModelScore`): AP50 (mean over the data classes), the frame-level operating point
(share of positive frames alarmed at the threshold where 1 % of negative frames alarm), missed events and
false events per hour of the clips.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.evaluation.events import ClipResult, ModelOverride, parse_events, run_clip, total
from pipeline.evaluation.frames import FrameEvalOptions, evaluate_detector, list_images, load_split, only


class BenchmarkError(ValueError):
    """A benchmark file or folder that cannot be used (the message says why)."""


@dataclass
class Tolerance:
    """How much worse than the deployed model a candidate may be (:func:`gate`)."""

    operating_point: float = 0.02
    missed_events: int = 0
    false_per_hour: float = 0.0


@dataclass
class Benchmark:
    """A parsed benchmark (see the module docstring)."""

    source: Path
    hazard: str
    model: str
    data: Path | None = None
    split: str = "val"
    only: str | None = None
    limit: int | None = None
    negatives: list[Path] = field(default_factory=list)
    negatives_limit: int | None = None
    imgsz: int | None = None
    class_map: list[str] = field(default_factory=list)
    events: Path | None = None
    clips: list[str] | None = None
    tolerance: Tolerance = field(default_factory=Tolerance)


def load_benchmark(path: Path, hazard: str | None = None) -> Benchmark:
    """Read a benchmark YAML or folder.

    Raises:
        BenchmarkError: missing file, bad YAML, or neither frames nor events.
    """
    if path.is_dir():
        spec = path / "benchmark.yaml"
        if spec.is_file():
            path = spec
        else:
            data, events = path / "data.yaml", path / "events.yaml"
            if not data.is_file() and not events.is_file():
                raise BenchmarkError(f"{path}: no benchmark.yaml, data.yaml or events.yaml in the folder")
            return Benchmark(path, hazard or "fire", hazard or "fire", data if data.is_file() else None,
                             events=events if events.is_file() else None)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BenchmarkError(f"{path}: {exc}") from None
    if not isinstance(doc, dict):
        raise BenchmarkError(f"{path}: want a mapping (hazard, frames, events, gate)")
    base = path.parent
    frames = doc.get("frames") or {}
    haz = str(doc.get("hazard") or hazard or "")
    if not haz:
        raise BenchmarkError(f"{path}: say which `hazard:` the benchmark is for (or pass --hazard)")
    if hazard and hazard != haz:
        raise BenchmarkError(f"{path} is a benchmark for {haz!r}, not {hazard!r}")
    gate = doc.get("gate") or {}
    b = Benchmark(path, haz, str(doc.get("model") or haz),
                  base / str(frames["data"]) if frames.get("data") else None, str(frames.get("split", "val")),
                  frames.get("only"), int(frames["limit"]) if frames.get("limit") else None,
                  [base / str(d) for d in frames.get("negatives") or []],
                  int(frames["negatives_limit"]) if frames.get("negatives_limit") else None,
                  int(frames["imgsz"]) if frames.get("imgsz") else None, [str(m) for m in frames.get("map") or []],
                  base / str(doc["events"]) if doc.get("events") else None,
                  [str(c) for c in doc["clips"]] if doc.get("clips") else None,
                  Tolerance(float(gate.get("operating_point", 0.02)), int(gate.get("missed_events", 0)),
                            float(gate.get("false_per_hour", 0.0))))
    if b.data is None and b.events is None:
        raise BenchmarkError(f"{path}: needs `frames: {{data: ...}}`, `events: ...` or both")
    return b


@dataclass
class ModelScore:
    """One model's numbers on a benchmark (NaN / None where the benchmark has no such part)."""

    label: str
    file: str
    ap50: float = math.nan
    operating_point: float = math.nan
    threshold_1pct: float = math.nan
    positive_frames: int = 0
    negative_frames: int = 0
    expected_events: int = 0
    missed_events: int | None = None
    false_events: int | None = None
    false_per_hour: float | None = None
    video_s: float = 0.0
    clips: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as None), rounded, for the manifest history and ``--json``."""
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if math.isnan(v) else round(v, 4)
            return v
        return {k: clean(v) for k, v in asdict(self).items()}


def score_model(bench: Benchmark, label: str, model: Path, input_size: int | None) -> ModelScore:
    """Run ``model`` over the benchmark's frames and clips.

    Raises:
        BenchmarkError: the model cannot be loaded (not an ONNX detector), or a clip fails.
    """
    from pipeline.detect.yolo import YoloDetector

    out = ModelScore(label, str(model))
    imgsz = bench.imgsz or input_size or 640
    try:
        YoloDetector(model, input_size=imgsz, threads=1)  # a corrupt file fails here, with its name
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise BenchmarkError(f"{label}: cannot load {model} as a detector: {type(exc).__name__}: {exc}") from None
    if bench.data is not None:
        names, items = load_split(bench.data, bench.split)
        items = only(items, bench.only)[: bench.limit]
        negatives = list_images(bench.negatives, {p.name for p, _ in items})[: bench.negatives_limit]
        res = evaluate_detector(model, names, items, negatives,
                                FrameEvalOptions(imgsz=imgsz, map=bench.class_map, time_n=0))
        out.ap50 = float(res["map50"])
        op = res.get("operating_point") or {}
        out.operating_point = float(op.get("frames_alarmed", math.nan))
        out.threshold_1pct = float(op.get("threshold", math.nan))
        out.positive_frames = int(op.get("positive_frames", 0))
        out.negative_frames = int(op.get("negative_frames", 0))
    if bench.events is not None:
        results = clip_results(bench, {bench.model: ModelOverride(model, imgsz)})
        t = total(results)
        out.expected_events, out.missed_events, out.false_events = t.expected, t.missed, t.false
        out.false_per_hour, out.video_s = t.false_per_hour, t.video_s
        out.clips = [{"name": r.name, "status": r.status, "missed": r.missed, "false": r.false,
                      "time_to_alert": r.time_to_alert} for r in results]
    return out


def clip_results(bench: Benchmark, models: dict[str, ModelOverride]) -> list[ClipResult]:
    """Replay the benchmark's clips with ``models``; a missing clip is an error (a frozen set must be whole)."""
    assert bench.events is not None
    try:
        doc = yaml.safe_load(bench.events.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BenchmarkError(f"{bench.events}: {exc}") from None
    clips = doc.get("clips") if isinstance(doc, dict) else None
    if not isinstance(clips, list):
        raise BenchmarkError(f"{bench.events}: want a mapping with a `clips:` list")
    chosen = [c for c in clips if isinstance(c, dict) and (bench.clips is None or c.get("name") in bench.clips)]
    if bench.clips is not None and len(chosen) != len(bench.clips):
        raise BenchmarkError(f"{bench.events}: clips {sorted(set(bench.clips) - {c.get('name') for c in chosen})} "
                             "not found")
    results = []
    for entry in chosen:
        parse_events(entry.get("events", "none"), str(entry.get("name")))  # a bad label fails before replaying
        r = run_clip(entry, bench.events.resolve().parent, doc.get("defaults") or {}, models)
        if r.status != "ok":
            raise BenchmarkError(f"benchmark clip {r.name}: {r.status}")
        results.append(r)
    return results


def gate(candidate: ModelScore, deployed: ModelScore, tol: Tolerance) -> list[str]:
    """Why ``candidate`` must not replace ``deployed`` (empty: it may)."""
    why = []
    if not (math.isnan(candidate.operating_point) or math.isnan(deployed.operating_point)) \
            and candidate.operating_point < deployed.operating_point - tol.operating_point:
        why.append(f"operating point {candidate.operating_point:.1%} of positive frames < deployed "
                   f"{deployed.operating_point:.1%} - tolerance {tol.operating_point:.1%}")
    if candidate.missed_events is not None and deployed.missed_events is not None \
            and candidate.missed_events > deployed.missed_events + tol.missed_events:
        why.append(f"missed events {candidate.missed_events} > deployed {deployed.missed_events} + tolerance "
                   f"{tol.missed_events}")
    if candidate.false_per_hour is not None and deployed.false_per_hour is not None \
            and candidate.false_per_hour > deployed.false_per_hour + tol.false_per_hour:
        why.append(f"false events {candidate.false_per_hour:.1f}/h > deployed {deployed.false_per_hour:.1f}/h + "
                   f"tolerance {tol.false_per_hour:.1f}/h")
    return why
