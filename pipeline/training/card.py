"""The model card of a trained candidate, and its registration in the manifest (not deployed)."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.detect.model_versions import add_version
from pipeline.training.plan import TrainPlan


def data_summary(data_yaml: Path) -> dict[str, Any]:
    """Sources and counts of the training set: its ``manifest.json`` (``gridwatch dataset export``) if any."""
    manifest = data_yaml.parent / "manifest.json"
    if manifest.is_file():
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        return {"set": str(data_yaml.parent), "exported_at": doc.get("created_at"), "counts": doc.get("counts"),
                "split": doc.get("split"), "sources": doc.get("sources"), "skipped": doc.get("skipped"),
                "imports": [{k: i.get(k) for k in ("at", "tool", "format", "changed")} for i in doc.get("imports", [])],
                "corrected_frames": sum(1 for f in doc.get("frames", []) if f.get("corrected"))}
    counts = {}
    for split in ("train", "val"):
        folder = data_yaml.parent / "images" / split
        counts[split] = {"images": len(list(folder.iterdir())) if folder.is_dir() else None}
    return {"set": str(data_yaml.parent), "counts": counts, "sources": {"data_yaml": str(data_yaml)}}


def not_tested_on(plan: TrainPlan, data: dict[str, Any]) -> list[str]:
    """What the numbers of this card do not cover (the card says so, so nobody reads more into them)."""
    counts = data.get("counts") or {}
    cams = sorted({c for s in counts.values() if isinstance(s, dict) for c in s.get("cameras") or []})
    out = ["the site's frozen benchmark (held-back verified frames + event clips): run `gridwatch model evaluate "
           f"--candidate {plan.label}` before `promote`",
           "events over time (missed events, false events per hour on clips): only single frames were scored",
           f"any camera but {', '.join(cams) if cams else 'those of the set'} (the only ones in this set): other "
           "angles, lighting, night, rain, glare",
           f"the data sets {plan.base} was measured on (its card): not re-measured here",
           "an INT8 copy (none was made) and other input sizes than "
           f"{plan.imgsz}"]
    got = counts.get("val")
    val: dict[str, Any] = got if isinstance(got, dict) else {}
    for cls, n in (val.get("boxes") or {}).items():
        if not n:
            out.append(f"class `{cls}`: no val boxes, so nothing about it is measured")
    if val.get("images") == 0:
        out.append("no val split at all (one camera): the metrics are on the training cameras")
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def card_text(plan: TrainPlan, entry: dict[str, Any], data: dict[str, Any], final: dict[str, float],
              history: list[dict[str, float]], runtime: dict[str, Any], env: dict[str, Any]) -> str:
    """The Markdown card."""
    counts = data.get("counts") or {}
    rows = "\n".join(f"| {s} | {_fmt(c.get('images'))} | {_fmt(c.get('positives'))} | {_fmt(c.get('negatives'))} | "
                     f"{', '.join(f'{k} {v}' for k, v in (c.get('boxes') or {}).items()) or '-'} | "
                     f"{', '.join(c.get('cameras') or []) or '-'} |" for s, c in counts.items())
    curve = ", ".join(f"{_fmt(h.get('metrics/mAP50(B)'))}" for h in history)
    rt = "\n".join(f"| {name} | {r.get('input_size', '-')} | {_fmt(r['threshold'])} | "
                   f"{_fmt(r['positive_frames_alarmed'])} of {r['positive_frames']} | "
                   f"{_fmt(r['false_alarm_rate'])} of {r['negative_frames']} |"
                   for name, r in runtime.items())
    nots = "\n".join(f"- {n}" for n in not_tested_on(plan, data))
    base_sha = f", sha256 {plan.base_sha256[:16]}…" if plan.base_sha256 else ""
    skipped = json.dumps(data.get("skipped") or {})
    return f"""# Model card: {plan.label} (candidate)

| | |
|---|---|
| status | **candidate, not deployed** (`gridwatch model evaluate` / `promote`, docs/retraining.md) |
| file | `{Path(plan.onnx).name}` (fp32 ONNX, sha256 `{entry['sha256'][:16]}…`, {entry.get('size_mb')} MB) |
| classes | {', '.join(f'{i} `{c}`' for i, c in enumerate(plan.classes))} |
| input | {plan.imgsz} × {plan.imgsz} letterbox, dynamic batch, no NMS in the graph |
| started from | {plan.base} (`{Path(plan.base_file).name}`{base_sha}) |
| trained | {datetime.now(UTC).strftime('%Y-%m-%d')}, {plan.epochs} epochs, batch {plan.batch}, seed {plan.seed}, \
{env['device']}{' (' + env['gpu'] + ')' if env.get('gpu') else ''}, {env['minutes']} min, Ultralytics \
{env['ultralytics']}, torch {env['torch']} |

## Data

`{data.get('set')}` (exported {data.get('exported_at') or '-'}; split {json.dumps(data.get('split') or {})};
{data.get('corrected_frames', '-')} frames with boxes corrected by a person; skipped {skipped};
imports {json.dumps(data.get('imports') or [])}). Sources: `{json.dumps(data.get('sources') or {})}`.

| split | images | positives | negatives | boxes | cameras |
|---|---|---|---|---|---|
{rows}

## Metrics (val split: cameras held out from training)

Ultralytics validation of best.pt: mAP50 {_fmt(final.get('metrics/mAP50(B)'))}, mAP50-95
{_fmt(final.get('metrics/mAP50-95(B)'))}, precision {_fmt(final.get('metrics/precision(B)'))}, recall
{_fmt(final.get('metrics/recall(B)'))}. Val mAP50 per epoch: {curve or '-'}.

Through gridwatch's runtime (`YoloDetector`, the starting model's threshold; `start` at its own input size),
share of frames with any detection:

| model | input | threshold | positive frames alarmed | false-alarm rate (negative frames) |
|---|---|---|---|---|
{rt}

## Not tested on

{nots}
"""


def register_candidate(plan: TrainPlan, onnx: Path, history: list[dict[str, float]], final: dict[str, float],
                       runtime: dict[str, Any], env: dict[str, Any]) -> dict[str, Any]:
    """Add ``plan.label`` to the manifest (not deployed) and write its card next to it; returns the entry."""
    manifest = Path(plan.manifest)
    data = data_summary(Path(plan.data_yaml))
    card = Path(plan.card)
    training = {"from": plan.base, "from_sha256": plan.base_sha256, "epochs": plan.epochs,
                "epochs_completed": len(history) or None, "imgsz": plan.imgsz, "batch": plan.batch,
                "seed": plan.seed, "lr0": plan.lr0, "hyp": plan.hyp or None, **env,
                "data": os.path.relpath(Path(plan.data_yaml).parent, manifest.parent),
                "data_counts": data.get("counts"),
                "ultralytics_val": {k.split("/")[-1]: round(v, 4) for k, v in final.items()
                                    if k.startswith("metrics/")}}
    entry = add_version(manifest, plan.hazard, plan.version, onnx, input_size=plan.imgsz, classes=len(plan.classes),
                        class_names=plan.classes, card=card.name, status="candidate", training=training,
                        metrics=[{"eval": "gridwatch runtime, val split of the training set", **runtime}])
    card.write_text(card_text(plan, entry, data, final, history, runtime, env), encoding="utf-8")
    return entry
