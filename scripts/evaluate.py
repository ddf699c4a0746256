#!/usr/bin/env python3
"""Evaluate a gridwatch ONNX detector on a YOLO val split through ``pipeline.detect.YoloDetector``.

No torch or Ultralytics: the numbers are what gridwatch itself produces at run time.

    nice -n 19 python3 scripts/evaluate.py --model models/fire.onnx --int8 models/fire-int8.onnx \
        --data ../shared/datasets/fire/data.yaml --name fire --imgsz 416 --conf 0.25 \
        --extra-negatives ../shared/datasets/clutter/images/val ../shared/datasets/vehicles/images/val \
        --run runs/train/fire --update

Measures, per model file:
- AP50 and AP50-95 per class: COCO-style (greedy matching by descending score to the highest-IoU unmatched
  ground truth of the same class, precision envelope, 101-point recall interpolation, IoU 0.50:0.05:0.95),
  own numpy code, detections at ``--eval-conf`` (0.001) so the whole PR curve is seen.
- precision / recall per class at the deployed threshold ``--conf`` (IoU 0.5).
- false-alarm rate: fraction of negative images (empty label file in the split, plus every image of
  ``--extra-negatives`` folders) with any detection >= ``--conf``; also the lowest threshold that keeps it
  at or under 1 %.
- frame-level operating point (what an operator feels): at that 1 %-false-alarm threshold, the share of
  positive frames (any box in the label) with any detection at or above it, per class the share of the
  class's frames with a detection of that class, and the box recall (IoU 0.5) there.
- speed: median ms per frame of ``detect()`` on ``--time-n`` val images with ``threads=1`` (wall clock and
  process CPU time; CPU time is what one free core would take, wall clock includes contention).

Model classes are matched to the data set's classes by name; ``--map model=data`` renames (several model
classes may map to one data class) and model classes without a match are ignored (e.g. the COCO model on
the vehicles set). ``--tiles N`` adds N x N overlapping crops (``detect_regions``) to the full frame.

With ``--confirm MODEL`` (the fire second stage, e.g. models/fire-confirm.onnx) it also reports the fire
rule's per-frame box logic (``pipeline.evaluation.fire_stage``): fire/smoke frames alarmed with the stage,
smoke proposals from ``--smoke-floor`` at p(smoke) >= ``--smoke-min-score``, at the rule's thresholds and at
the 1 % point (both thresholds scaled together), and the same without smoke proposals.

With ``--update`` it writes the entry ``--name`` (and ``<name>-int8``) into ``models/manifest.yaml``
(file, sha256, classes, input_size, version, training data with attributions from SOURCES.csv, metrics)
and regenerates the metrics block of ``models/<name>.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import fnmatch
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
MANIFEST = REPO / "models" / "manifest.yaml"
CARD_BEGIN, CARD_END = "<!-- metrics:begin (scripts/evaluate.py) -->", "<!-- metrics:end -->"


# The metrics live in pipeline.evaluation.frames (also used by `gridwatch model evaluate`); re-exported here.
from pipeline.evaluation.frames import (  # noqa: E402
    IMG_EXT,
    IOUS,
    average_precision,
    class_metrics,
    iou_matrix,
    load_split,
    match,
    operating_point,
    read_image,
    tile_regions,
    to_pixels,
)
from pipeline.evaluation.frames import evaluate_detector as evaluate_model  # noqa: E402

__all__ = ["IMG_EXT", "IOUS", "average_precision", "class_metrics", "evaluate_model", "iou_matrix", "load_split",
           "match", "operating_point", "read_image", "tile_regions", "to_pixels"]


# ------------------------------------------------------------------------------------ manifest/card

def sha256(path: Path) -> str:
    from pipeline.detect.registry import sha256_file

    return sha256_file(path)


def attributions(sources_csv: Path) -> list[dict[str, Any]]:
    if not sources_csv.is_file():
        return []
    cnt: Counter[tuple[str, str, str]] = Counter()
    with sources_csv.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            split = "train" if r["file"].startswith("images/train") else "val"
            cnt[(r["source_repo"], r["license"], split)] += 1
    agg: dict[tuple[str, str], dict[str, Any]] = {}
    for (repo, lic, split), n in cnt.items():
        a = agg.setdefault((repo, lic), {"repository": f"https://github.com/{repo}", "license": lic})
        a[f"{split}_images"] = n
    return sorted(agg.values(), key=lambda a: -a.get("train_images", 0))


def rel_to_manifest(p: Path) -> str:
    import os

    return os.path.relpath(p.resolve(), MANIFEST.parent.resolve())


def training_info(run_dir: Path | None, data_yaml: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if run_dir and (run_dir / "args.yaml").is_file():
        a = yaml.safe_load((run_dir / "args.yaml").read_text())
        info = {k: a.get(k) for k in ("epochs", "imgsz", "batch", "lr0", "optimizer", "seed")}
        info["base"] = "../shared/models/yolo11n-coco.pt (Ultralytics YOLO11n COCO, AGPL-3.0)"
        rc = run_dir / "results.csv"
        if rc.is_file():
            rows = list(csv.DictReader(rc.open()))
            info["epochs_completed"] = len(rows)
            if rows:
                r = {k.strip(): v for k, v in rows[-1].items()}
                info["ultralytics_val_last_epoch"] = {
                    "mAP50": round(float(r["metrics/mAP50(B)"]), 4),
                    "mAP50-95": round(float(r["metrics/mAP50-95(B)"]), 4)}
    info["data"] = str(Path(data_yaml).resolve().parent).replace(str(REPO.parent.resolve()) + "/", "")
    return info


def rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def update_manifest(entries: list[dict[str, Any]]) -> None:
    """Merge ``entries`` into the manifest: same name and version (or a metrics-only entry: the deployed one of
    the name) updates in place; a new version of a name is added beside the deployed one, not deployed (the
    gate deploys: ``gridwatch model promote``, docs/retraining.md)."""
    from pipeline.detect.model_versions import ModelRef, find_entry, locked, read_doc, same_version, write_doc

    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    with locked(MANIFEST):
        doc = read_doc(MANIFEST)
        models = doc["models"]
        for e in entries:
            named = [m for m in models if m.get("name") == e["name"]]
            if "version" not in e:  # no --version (or --metrics-only): the version that runs
                old = find_entry(doc, ModelRef(e["name"])) if named else None
                if old is None and "file" in e:
                    e = {**e, "version": "1"}
            else:
                old = next((m for m in named if same_version(str(m.get("version")), str(e["version"]))), None)
                if old is None and named and all(m.get("version") is None for m in named):
                    old = named[0]  # an unversioned entry: replaced as before versions existed
            if old is None:
                models.append(e)
                if named:
                    print(f"added {e['name']}@{e.get('version')} beside the deployed version; deploy it with "
                          f"`gridwatch model promote {e['name']}@{e.get('version')} --benchmark ...`")
            else:
                runs = [r for r in old.get("metrics", []) if r.get("eval") != e["metrics"][0]["eval"]]
                old.update({k: v for k, v in e.items() if k != "metrics"})
                old["metrics"] = runs + e["metrics"]
        write_doc(MANIFEST, doc)


def metrics_table(name: str, runs: list[tuple[str, dict[str, Any]]]) -> str:
    lines = []
    for label, r in runs:
        m = r
        lines.append(f"**{label}** — `{r['eval']}` (threshold {m['conf']}, input {m['imgsz']}):\n")
        lines.append("| class | val boxes | AP50 | AP50-95 | P@thr | R@thr | images with the class alarmed |")
        lines.append("|---|---|---|---|---|---|---|")
        for c, v in m["classes"].items():
            fr = f"{v['frame_recall']:.3f} of {v['images']}" if "frame_recall" in v else "-"
            lines.append(f"| {c} | {v['gt']} | {v['ap50']:.3f} | {v['ap50_95']:.3f} | "
                         f"{v['precision']:.3f} | {v['recall']:.3f} | {fr} |")
        lines.append(f"| **mean** | | **{m['map50']:.3f}** | **{m['map50_95']:.3f}** | | | |\n")
        n = m["negatives"]
        if n["images"]:
            lines.append(f"- false alarms: {n['false_alarm_rate']:.1%} of {n['images']} negative images "
                         f"({n['in_split']} in the split: {n['false_alarm_rate_in_split']:.1%}; {n['extra']} extra); "
                         f"threshold keeping it ≤ 1 %: {n.get('threshold_for_1pct', float('nan')):.3f}")
        op = m.get("operating_point")
        if op:
            per = "; ".join(f"{c} {v['frames_alarmed']:.1%} of {v['frames']} frames, box recall {v['box_recall']:.1%}"
                            for c, v in op["classes"].items())
            lines.append(f"- **operating point** (threshold {op['threshold']:.3f}, {op['false_alarm_rate']:.1%} of "
                         f"{op['negative_frames']} negative frames alarmed): **{op['frames_alarmed']:.1%}** of "
                         f"{op['positive_frames']} positive frames alarmed ({per})")
        ss = m.get("second_stage")
        if ss:
            for key, title in (("without_smoke_proposals", "with the second stage"),
                               ("", "with the second stage and smoke proposals")):
                part = ss.get(key) if key else ss
                if not part:
                    continue
                r = part["operating_point"]
                per = "; ".join(f"{c} {v['frames_alarmed']:.1%} of {v['frames']} frames"
                                for c, v in r["classes"].items())
                lines.append(f"- **{title}** (1 % point, rule thresholds x{r['scale']:.3f}; "
                             f"{r['false_alarm_rate']:.1%} of {r['negative_frames']} negative frames): "
                             f"**{r['frames_alarmed']:.1%}** of {r['positive_frames']} positive frames ({per})")
        t = m["ms_per_frame_1thread"]
        lines.append(f"- speed, 1 thread: {t['cpu_median']:.1f} ms CPU / {t['wall_median']:.1f} ms wall per frame "
                     f"(median of {t['frames']})\n")
    return "\n".join(lines)


def write_card(name: str) -> None:
    doc = yaml.safe_load(MANIFEST.read_text())
    ents = [m for m in doc["models"] if m["name"] in (name, name + "-int8")]
    runs = [(f"{m['name']} ({Path(m['file']).name})", r) for m in ents for r in m.get("metrics", [])]
    block = f"{CARD_BEGIN}\n## Measured metrics\n\n{metrics_table(name, runs)}\n{CARD_END}"
    card = REPO / "models" / f"{name}.md"
    if card.is_file() and CARD_BEGIN in card.read_text():
        t = card.read_text()
        t = t[: t.index(CARD_BEGIN)] + block + t[t.index(CARD_END) + len(CARD_END):]
    else:
        e = ents[0]
        att = "\n".join(f"- {a['repository']} — {a['license']} ({a.get('train_images', 0)} train / "
                        f"{a.get('val_images', 0)} val images)" for a in e.get("training", {}).get("attributions", []))
        classes = e.get("class_names") or e.get("classes")
        t = (f"# Model card: {name}\n\nFile `{e['file']}` (relative to models/), classes {classes}, "
             f"input {e.get('input_size')}.\n\n## Training data and attribution\n\n{att or '-'}\n\n{block}\n")
    card.write_text(t)


# ------------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--int8", type=Path, help="INT8 twin of --model, evaluated the same way")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--name", required=True, help="manifest entry / model card name")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--conf", type=float, default=0.25, help="deployed threshold")
    ap.add_argument("--eval-conf", type=float, default=0.001)
    ap.add_argument("--nms-iou", type=float, default=0.45)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the accuracy pass")
    ap.add_argument("--tiles", type=int, default=0, help="N: full frame + N x N overlapping crops")
    ap.add_argument("--map", nargs="*", default=[], help="model_class=data_class renames")
    ap.add_argument("--extra-negatives", type=Path, nargs="*", default=[], help="folders of images without "
                    "the data set's classes (files also present in the training split are skipped)")
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.25, 0.3, 0.4, 0.5, 0.6, 0.7],
                    help="thresholds at which the frame-level numbers are also reported (json, printed)")
    ap.add_argument("--confirm", type=Path, help="fire second-stage classifier: also report the rule's "
                    "per-class operating point with it (fire/smoke data sets)")
    ap.add_argument("--fire-floor", type=float, default=0.4, help="with --confirm: hazards.fire.min_confidence")
    ap.add_argument("--confirm-gate", type=float, default=0.6, help="with --confirm: confirm_min_score")
    ap.add_argument("--smoke-floor", type=float, default=0.1, help="with --confirm: smoke_min_confidence")
    ap.add_argument("--smoke-min-score", type=float, default=0.29,
                    help="with --confirm: smoke_min_score (negative: no smoke proposals)")
    ap.add_argument("--time-n", type=int, default=30)
    ap.add_argument("--run", type=Path, help="Ultralytics run dir (args.yaml, results.csv) for the card")
    ap.add_argument("--version", help="version of the evaluated file: a new one is added beside the deployed "
                    "entry (deploy it with `gridwatch model promote`); default: update the deployed entry "
                    "(version 1 for a new name)")
    ap.add_argument("--train-note", help="free text stored under training.note in the manifest")
    ap.add_argument("--eval-label", help="id of this evaluation in the manifest (default from the options)")
    ap.add_argument("--update", action="store_true", help="write models/manifest.yaml and models/<name>.md")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", help="evaluate only val images whose file name matches this glob (a subset)")
    ap.add_argument("--metrics-only", action="store_true", help="with --update: only add this evaluation to "
                    "an existing entry (an alternative input size/tiling), keep its deployed settings")
    ap.add_argument("--card-only", action="store_true", help="only regenerate models/<name>.md")
    args = ap.parse_args(argv)

    if args.card_only:
        write_card(args.name)
        return 0
    names, items = load_split(args.data, args.split)
    if args.only:
        items = [(p, r) for p, r in items if fnmatch.fnmatch(p.name, args.only)]
    train_names: set[str] = set()
    try:
        _, tr = load_split(args.data, "train")
        train_names = {p.name for p, _ in tr}
    except (KeyError, FileNotFoundError):
        pass
    negatives = [p for d in args.extra_negatives for p in sorted(d.iterdir())
                 if p.suffix.lower() in IMG_EXT and p.name not in train_names
                 and p.name not in {q.name for q, _ in items}]
    label = args.eval_label or (f"{Path(args.data).resolve().parent.name}/{args.split}@{args.imgsz}"
                                + (f"+tiles{args.tiles}" if args.tiles > 1 else "")
                                + (f" only {args.only}" if args.only else ""))
    out = {}
    for key, path in (("fp32", args.model), ("int8", args.int8)):
        if path is None:
            continue
        t0 = time.time()
        r = evaluate_model(path, names, items, negatives, args)
        r.update(conf=args.conf, imgsz=args.imgsz, nms_iou=args.nms_iou, tiles=args.tiles,
                 images=len(items), date=_dt.date.today().isoformat())
        out[key] = r
        print(f"== {key} {path} ({time.time() - t0:.0f} s) [{label}]")
        for c, m in r["classes"].items():
            print(f"  {c:16s} gt={m['gt']:4d} AP50={m['ap50']:.3f} AP50-95={m['ap50_95']:.3f} "
                  f"P={m['precision']:.3f} R={m['recall']:.3f} @conf {args.conf}; "
                  f"frame recall {m['frame_recall']:.3f} of {m['images']} images")
        n = r["negatives"]
        print(f"  mAP50={r['map50']:.3f} mAP50-95={r['map50_95']:.3f}; false alarms "
              f"{n['false_alarm_rate']:.2%} of {n['images']} negatives ({n['in_split']} in split: "
              f"{n['false_alarm_rate_in_split']:.2%}); thr for <=1%: {n.get('threshold_for_1pct', float('nan')):.3f}; "
              f"{r['ms_per_frame_1thread']['cpu_median']:.1f} ms CPU / "
              f"{r['ms_per_frame_1thread']['wall_median']:.1f} ms wall per frame, 1 thread", flush=True)
        op = r.get("operating_point")
        if op:
            print(f"  operating point: thr {op['threshold']:.3f} -> {op['false_alarm_rate']:.2%} of "
                  f"{op['negative_frames']} negatives alarm, {op['frames_alarmed']:.1%} of {op['positive_frames']} "
                  f"positive frames alarmed; " + "; ".join(
                      f"{c}: {v['frames_alarmed']:.1%} of {v['frames']} frames, box recall {v['box_recall']:.1%}"
                      for c, v in op["classes"].items()), flush=True)
        for sw in r.get("threshold_sweep", []):
            print(f"    at {sw['threshold']:.2f}: {sw['false_alarm_rate']:.2%} negatives, {sw['frames_alarmed']:.1%} "
                  "positive frames; " + ", ".join(f"{c} {v['frames_alarmed']:.1%} / box R {v['box_recall']:.1%}"
                                                  for c, v in sw["classes"].items()))
    if args.confirm is not None:
        from pipeline.evaluation.fire_stage import StageRule, evaluate_with_stage

        rule = StageRule(args.fire_floor, args.confirm_gate, args.smoke_floor,
                         args.smoke_min_score if args.smoke_min_score >= 0 else None)
        st = evaluate_with_stage(args.model, args.confirm, names, items, negatives, rule, args.imgsz, args.nms_iou)
        out["fp32"]["second_stage"] = st
        for key, title in (("without_smoke_proposals", "stage, no smoke proposals"), ("", "stage + smoke")):
            part = st.get(key) if key else st
            if not part:
                continue
            for where in ("at_rule", "operating_point"):
                r = part[where]
                per = "; ".join(f"{c} {v['frames_alarmed']:.1%} of {v['frames']} (any alarm {v['any_alarm']:.1%})"
                                for c, v in r["classes"].items())
                print(f"  {title} {where} (x{r['scale']:.3f}): {r['false_alarm_rate']:.2%} of {r['negative_frames']} "
                      f"negatives, {r['frames_alarmed']:.1%} of {r['positive_frames']} positive frames; {per}; "
                      f"smoke-only {r['smoke_only']['frames_alarmed']} of {r['smoke_only']['frames']}", flush=True)
    if "int8" in out:
        d = out["int8"]["map50"] - out["fp32"]["map50"]
        d2 = out["int8"]["map50_95"] - out["fp32"]["map50_95"]
        print(f"== INT8 - fp32: mAP50 {d:+.3f}, mAP50-95 {d2:+.3f}")
    if args.json:
        args.json.write_text(json.dumps(rounded(out), indent=1))
    if args.update:
        cmd = "python3 scripts/evaluate.py " + " ".join(sys.argv[1:])
        src = Path(args.data).resolve().parent / "SOURCES.csv"
        entries = []
        for key, path in (("fp32", args.model), ("int8", args.int8)):
            if key not in out:
                continue
            from pipeline.detect import YoloDetector

            d = YoloDetector(path, input_size=args.imgsz, threads=1)
            r = out[key]
            metrics = {"eval": label, "command": cmd, "conf": args.conf, "imgsz": args.imgsz, "tiles": args.tiles,
                       "images": r["images"], "date": r["date"], "map50": r["map50"],
                       "map50_95": r["map50_95"], "classes": r["classes"], "negatives": r["negatives"],
                       **({"operating_point": r["operating_point"]} if "operating_point" in r else {}),
                       **({"second_stage": r["second_stage"]} if "second_stage" in r else {}),
                       "ms_per_frame_1thread": r["ms_per_frame_1thread"]}
            if key == "int8":
                metrics["vs_fp32"] = {"map50": out["int8"]["map50"] - out["fp32"]["map50"],
                                      "map50_95": out["int8"]["map50_95"] - out["fp32"]["map50_95"]}
            e = {"name": args.name + ("-int8" if key == "int8" else ""), "file": rel_to_manifest(path),
                 "sha256": sha256(path), "classes": len(d.class_names), "input_size": args.imgsz,
                 **({"version": args.version} if args.version is not None else {}), "threshold": args.conf,
                 "size_mb": round(path.stat().st_size / 1e6, 2)}
            if len(d.class_names) <= 20:
                e["class_names"] = [d.class_names[i] for i in sorted(d.class_names)]
            if args.metrics_only:
                e = {"name": e["name"]}
            if args.run:
                e["training"] = training_info(args.run, args.data)
                e["training"]["attributions"] = attributions(src)
                if args.train_note:
                    e["training"]["note"] = args.train_note
                if key == "int8":
                    e["quantization"] = ("static INT8 QDQ (onnxruntime quantize_static, per-channel, MinMax), "
                                         "calibrated on training images; Detect-head post-processing fp32")
            e["metrics"] = [rounded(metrics)]
            entries.append(e)
        update_manifest(entries)
        write_card(args.name)
        print(f"updated {MANIFEST} and models/{args.name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
