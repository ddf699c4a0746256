#!/usr/bin/env python3
"""Per-class (fire, smoke) frame-level operating points of fire.onnx + the fire-confirm second stage.

Two steps, cached under ``--work`` (default ``runs/smoke_op``, ignored by git)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/smoke_operating_point.py cache     # detect + classify
    .venv/bin/python scripts/smoke_operating_point.py report --json runs/smoke_op/report.json

``cache`` runs the detector (``--imgsz`` list, floor 0.01) and the crop classifier on every box of:

- the VAL frames of ``fire`` and ``fire2`` plus the negative val pool of ``scripts/evaluate.py`` (clutter and
  vehicles val frames that are in no fire set);
- the TRAIN side: ``fire``/``fire2`` train frames, clutter/vehicles train frames in no fire set, and a
  held-out pool the classifier never saw (vehicles2 and leftobj, both splits, minus names in a fire set).

``report`` scores each frame on two channels, as the fire rule does per box:

- **fire channel**: max detector score over boxes (either class) with det >= ``fire_floor`` whose crop gets
  p(fire) + p(smoke) >= ``gate`` (the deployed rule: floor 0.4, gate 0.6);
- **smoke channel**: max p(smoke) over ``smoke`` boxes with det >= ``smoke_floor`` (lower than the fire floor).

A frame alarms when a channel reaches its threshold. The thresholds are calibrated on TRAIN-side negatives
only: the smoke threshold so that the smoke channel alone alarms on at most ``--smoke-budget`` (0.5 %) of
them, the fire threshold so that the union alarms on at most 1 %; each threshold is the stricter of the one
from the train negatives (which the classifier was trained on) and the one from the held-out pool (which it
never saw). The val splits are then reported at those thresholds (false-alarm rate and positive frames,
per class), and also by the metric's own definition (the union's 1 % point on the val negatives, with the
channel ratio fixed on train).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.detect.fire_confirm import FireConfirmClassifier  # noqa: E402
from pipeline.detect.yolo import YoloDetector  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
SETS = ("fire", "fire2")
IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp"}
FIRE, SMOKE, NEITHER = 0, 1, 2


def split_items(ds: str, split: str) -> list[tuple[Path, np.ndarray]]:
    """(image, label class ids) of one split (an empty array for a negative frame)."""
    out: list[tuple[Path, np.ndarray]] = []
    root = SHARED / ds / "images" / split
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        if p.suffix.lower() not in IMG_EXT:
            continue
        lab = SHARED / ds / "labels" / split / (p.stem + ".txt")
        rows = np.loadtxt(lab, ndmin=2).reshape(-1, 5) if lab.is_file() and lab.stat().st_size else np.zeros((0, 5))
        out.append((p, rows[:, 0].astype(int)))
    return out


def frame_lists() -> dict[str, list[tuple[str, Path, np.ndarray]]]:
    """Frames per pool: (source set, image, label classes); extra sets carry no fire labels."""
    in_fire = {p.name for ds in SETS for sp in ("train", "val") for p in (SHARED / ds / "images" / sp).iterdir()}
    none = np.zeros(0, int)

    def extra(sets: tuple[str, ...], splits: tuple[str, ...]) -> list[tuple[str, Path, np.ndarray]]:
        return [(ds, p, none) for ds in sets for sp in splits for p, _ in split_items(ds, sp) if p.name not in in_fire]

    return {
        "val": [(ds, p, c) for ds in SETS for p, c in split_items(ds, "val")]
        + extra(("clutter", "vehicles"), ("val",)),
        # every 2nd train frame: enough for a 1 % point on ~700 negatives at a CPU cost that fits
        "train": ([(ds, p, c) for ds in SETS for p, c in split_items(ds, "train")]
                  + extra(("clutter", "vehicles"), ("train",)))[::2],
        "heldout": extra(("vehicles2", "leftobj"), ("train", "val")),
    }


def cmd_cache(args: argparse.Namespace) -> None:
    clf = FireConfirmClassifier(args.confirm, threads=1)
    dets = {s: YoloDetector(args.detector, input_size=s, threads=1, min_confidence=0.01) for s in args.imgsz}
    lists = frame_lists()
    for pool in ("val", "heldout", "train"):
        frames = lists[pool]
        out = args.work / f"{pool}.pkl"
        if out.is_file():
            print(f"{out} exists, kept")
            continue
        rows = []
        for k, (ds, p, cls) in enumerate(frames):
            img = cv2.imread(str(p))
            if img is None:
                raise SystemExit(f"cannot read {p}")
            r: dict[str, Any] = {"set": ds, "path": str(p), "gt_cls": cls}
            for s, det in dets.items():
                d = det.detect(img)
                xyxy = d.xyxy.astype(float)
                r[s] = {"score": d.confidence.astype(float), "cls": d.class_id.astype(int),
                        "p": clf.score_boxes(img, xyxy), "xyxy": xyxy}
            rows.append(r)
            if k % 200 == 0:
                print(f"  {pool}: {k}/{len(frames)}", flush=True)
        out.write_bytes(pickle.dumps(rows))
        print(f"wrote {out} ({len(rows)} frames)", flush=True)


def cmd_tiles(args: argparse.Namespace) -> None:
    """Adds the classifier's probabilities on the frame tiles of :func:`frame_tiles` to every cached frame."""
    from pipeline.analyze.smoke_tiles import frame_tiles

    clf = FireConfirmClassifier(args.tile_model or args.confirm, threads=1)
    key = "tiles" if args.tile_model is None else "tiles_model"
    for pool in ("val", "heldout", "train"):
        path = args.work / f"{pool}.pkl"
        rows = pickle.loads(path.read_bytes())
        for r in rows:
            img = cv2.imread(r["path"])
            if img is None:
                raise SystemExit(f"cannot read {r['path']}")
            h, w = img.shape[:2]
            r[key] = clf.score_boxes(img, frame_tiles(w, h))
        path.write_bytes(pickle.dumps(rows))
        print(f"tiles of {pool}: {len(rows)} frames", flush=True)


# ------------------------------------------------------------------------------------------- scoring

def channel_scores(r: dict[Any, Any], fire_size: int, smoke_size: int, fire_floor: float, gate: float,
                   smoke_floor: float, smoke_source: str = "boxes") -> tuple[float, float, float, float]:
    """Channel scores of one cached frame (see the module docstring): fire channel over all boxes, over
    its ``fire`` boxes, over its ``smoke`` boxes, and the smoke channel."""
    f = r[fire_size]
    ok = (f["score"] >= fire_floor) & (1 - f["p"][:, NEITHER] >= gate)

    def top(m: np.ndarray, v: np.ndarray) -> float:
        return float(v[m].max()) if m.any() else 0.0

    s = r[smoke_size]
    smoke = 0.0
    if smoke_source in ("boxes", "tiles+boxes", "tilemodel+boxes"):  # smoke-class boxes from the lower floor
        smoke = top((s["cls"] == SMOKE) & (s["score"] >= smoke_floor), s["p"][:, SMOKE])
    if smoke_source == "anybox":  # boxes of either class
        smoke = top(s["score"] >= smoke_floor, s["p"][:, SMOKE])
    if smoke_source in ("tiles", "tiles+boxes"):  # fire-confirm on the frame tiles
        smoke = max(smoke, float(r["tiles"][:, SMOKE].max()))
    if smoke_source in ("tilemodel", "tilemodel+boxes"):  # the smoke tile classifier (train_smoke_tiles.py)
        smoke = max(smoke, float(r["tiles_model"][:, SMOKE].max()))
    return (top(ok, f["score"]), top(ok & (f["cls"] == FIRE), f["score"]),
            top(ok & (f["cls"] == SMOKE), f["score"]), smoke)


def thr_at(neg: np.ndarray, rate: float) -> float:
    """Lowest threshold at which at most ``rate`` of the negative scores reach it (as evaluate.py)."""
    srt = np.sort(neg)[::-1]
    allowed = int(np.floor(rate * len(srt)))
    return float(np.nextafter(srt[allowed], 2)) if allowed < len(srt) else 0.0


def calibrate(fs: np.ndarray, ss: np.ndarray, smoke_budget: float, rate: float = 0.01) -> tuple[float, float]:
    """(fire threshold, smoke threshold) on negative channel scores: smoke alone <= smoke_budget, union <= rate."""
    ts = thr_at(ss, smoke_budget) if smoke_budget > 0 and ss.max() > 0 else 2.0  # 2.0: no smoke channel
    rest = fs[ss < ts]  # frames the smoke channel already alarms on use up their share of the budget
    allowed = int(np.floor(rate * len(fs))) - int((ss >= ts).sum())
    srt = np.sort(rest)[::-1]
    tf = float(np.nextafter(srt[allowed], 2)) if 0 <= allowed < len(srt) else (0.0 if allowed >= 0 else 2.0)
    return tf, ts


def per_class(frames: list[dict[str, Any]], v: np.ndarray, tf: float, ts: float) -> dict[str, Any]:
    """Frame-level numbers at thresholds (tf, ts) of the channel scores ``v`` (rows of channel_scores):
    any alarm; per class, the class's frames alarmed by a box of that class; smoke-only frames alarmed."""
    alarm = (v[:, 0] >= tf) | (v[:, 3] >= ts)
    by_class = {FIRE: v[:, 1] >= tf, SMOKE: (v[:, 2] >= tf) | (v[:, 3] >= ts)}
    pos = np.array([len(r["gt_cls"]) > 0 for r in frames])

    def rate(a: np.ndarray, m: np.ndarray) -> float | None:
        return round(float(a[m].mean()), 4) if m.any() else None

    out: dict[str, Any] = {"negative_frames": int((~pos).sum()), "false_alarm_rate": rate(alarm, ~pos),
                           "positive_frames": int(pos.sum()), "frames_alarmed": rate(alarm, pos)}
    for k, name in ((FIRE, "fire"), (SMOKE, "smoke")):
        m = np.array([(r["gt_cls"] == k).any() for r in frames])
        out[name] = {"frames": int(m.sum()), "alarmed": rate(by_class[k], m), "any_alarm": rate(alarm, m)}
    only = np.array([len(r["gt_cls"]) > 0 and (r["gt_cls"] == SMOKE).all() for r in frames])
    out["smoke_only"] = {"frames": int(only.sum()), "alarmed": rate(alarm, only)}
    return out


def evaluate(recipe: dict[str, Any], pools: dict[str, list[dict[str, Any]]], smoke_budget: float,
             fixed: tuple[float, float] | None = None) -> dict[str, Any]:
    def sc(frames: list[dict[str, Any]]) -> np.ndarray:
        return np.array([channel_scores(r, **recipe) for r in frames]).reshape(-1, 4)

    tr_neg = [r for r in pools["train"] if not len(r["gt_cls"])]
    cal = [calibrate(v[:, 0], v[:, 3], smoke_budget) for v in (sc(tr_neg), sc(pools["heldout"]))]
    tf, ts = max(c[0] for c in cal), max(c[1] for c in cal)
    if fixed is not None:  # the deployed thresholds (rule floor, smoke_min_score) instead of the calibration
        tf, ts = fixed
    res: dict[str, Any] = {"recipe": recipe, "fire_threshold": round(tf, 4), "smoke_threshold": round(ts, 4),
                           "calibration": {"train_negatives": len(tr_neg), "heldout": len(pools["heldout"]),
                                           "per_pool": [[round(a, 4), round(b, 4)] for a, b in cal]}}
    res["train"] = per_class(pools["train"], sc(pools["train"]), tf, ts)
    extras = [r for r in pools["val"] if r["set"] not in SETS]
    for ds in SETS:
        frames = [r for r in pools["val"] if r["set"] == ds] + extras
        v = sc(frames)
        # the metric's own definition: the union's 1 % point on the val negatives, channel ratio from train
        u = np.maximum(v[:, 0] / max(tf, 1e-6), v[:, 3] / max(ts, 1e-6))
        neg = np.array([not len(r["gt_cls"]) for r in frames])
        k = thr_at(u[neg], 0.01)
        own = per_class(frames, v, k * tf, k * ts)
        own["scale"] = round(k, 4)
        res[ds] = {"at_train_thresholds": per_class(frames, v, tf, ts), "val_1pct_point": own}
    return res


def cmd_report(args: argparse.Namespace) -> None:
    pools = {p: pickle.loads((args.work / f"{p}.pkl").read_bytes()) for p in ("val", "train", "heldout")}
    sizes = sorted(k for k in pools["val"][0] if isinstance(k, int))
    base = {"fire_size": sizes[0], "smoke_size": sizes[0], "fire_floor": 0.4, "gate": 0.6}
    recipes: list[dict[str, Any]] = [base | {"smoke_floor": 2.0}, base | {"smoke_floor": 2.0, "smoke_source": "tiles"}]
    if "tiles_model" in pools["val"][0]:
        recipes.append(base | {"smoke_floor": 2.0, "smoke_source": "tilemodel"})
    for source in args.sources:
        for smoke_size in sizes:
            for floor in args.smoke_floors:
                recipes.append(base | {"smoke_size": smoke_size, "smoke_floor": floor, "smoke_source": source})
    results = [evaluate(r, pools, args.smoke_budget) for r in recipes]
    if args.fixed:  # the deployed rule: fire floor 0.4 + gate 0.6, smoke boxes from 0.1 at p(smoke) >= 0.29
        fire_thr, smoke_floor, smoke_thr = args.fixed
        dep = base | {"smoke_floor": smoke_floor, "smoke_source": "boxes"}
        results += [evaluate(base | {"smoke_floor": 2.0}, pools, 0.0, (fire_thr, 2.0)),
                    evaluate(dep, pools, 0.0, (fire_thr, smoke_thr))]
    for r in results:
        rc = r["recipe"]
        line = (f"{rc.get('smoke_source', 'boxes')}@{rc['smoke_size']} floor {rc['smoke_floor']:.2f}: "
                f"thr fire {r['fire_threshold']:.3f} "
                f"smoke {r['smoke_threshold']:.3f} | train fire {r['train']['fire']['alarmed']:.3f} smoke "
                f"{r['train']['smoke']['alarmed']:.3f} FA "
                f"{r['train']['false_alarm_rate']:.4f}")
        for ds in SETS:
            a, o = r[ds]["at_train_thresholds"], r[ds]["val_1pct_point"]
            line += (f" | {ds}: FA {a['false_alarm_rate']:.3f} fire {a['fire']['alarmed']:.3f} smoke "
                     f"{a['smoke']['alarmed']:.3f} all {a['frames_alarmed']:.3f} ; @1% fire {o['fire']['alarmed']:.3f} "
                     f"smoke {o['smoke']['alarmed']:.3f} all {o['frames_alarmed']:.3f}")
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["cache", "tiles", "report"])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "smoke_op")
    ap.add_argument("--detector", type=Path, default=REPO / "models" / "fire.onnx")
    ap.add_argument("--confirm", type=Path, default=REPO / "models" / "fire-confirm.onnx")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[416, 640], help="detector input sizes to cache")
    ap.add_argument("--smoke-floors", type=float, nargs="*", default=[0.02, 0.05, 0.1, 0.2, 0.3])
    ap.add_argument("--smoke-budget", type=float, default=0.005, help="share of train negatives the smoke "
                    "channel alone may alarm on")
    ap.add_argument("--sources", nargs="*", default=["boxes", "anybox", "tiles+boxes"],
                    help="smoke channel sources to sweep with --smoke-floors (also tilemodel+boxes)")
    ap.add_argument("--tile-model", type=Path, help="tiles step: cache this tile classifier's output instead "
                    "of fire-confirm's (key tiles_model)")
    ap.add_argument("--fixed", type=float, nargs=3, metavar=("FIRE_THR", "SMOKE_FLOOR", "SMOKE_THR"),
                    help="also report these deployed thresholds (without and with the smoke channel)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    {"cache": cmd_cache, "tiles": cmd_tiles, "report": cmd_report}[args.step](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
