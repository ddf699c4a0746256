"""Frame metrics of a detector on a YOLO split, through gridwatch's own runtime (no torch, no Ultralytics).

Moved here from ``scripts/evaluate.py`` (which re-exports every name) so ``gridwatch model evaluate`` uses the
same numbers:

- AP50 and AP50-95 per class: COCO-style (greedy matching by descending score to the highest-IoU unmatched
  ground truth of the same class, precision envelope, 101-point recall interpolation, IoU 0.50:0.05:0.95).
- frame-level operating point: at the lowest threshold that keeps false alarms on negative frames at or
  under 1 %, the share of positive frames (any box in the label) with a detection at or above it.

Example:
    >>> s, t, n = match([(np.array([[0, 0, 10, 10.]]), np.array([0.9]))], [np.array([[0, 0, 10, 10.]])], 0.5)
    >>> average_precision(s, t, n)
    1.0
"""

from __future__ import annotations

import fnmatch
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp"}
IOUS = np.round(np.arange(0.5, 0.96, 0.05), 2)

Item = tuple[Path, np.ndarray]
"""(image path, label rows (N, 5): class, cx, cy, w, h normalised)."""
PerImage = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(boxes xyxy px, scores, data class ids, gt rows (class, x1, y1, x2, y2 px)) of one image."""


# ----------------------------------------------------------------------------------------------- data

def load_split(data_yaml: Path, split: str = "val") -> tuple[list[str], list[Item]]:
    """Class names and (image, label rows) pairs of a YOLO ``data.yaml`` split.

    Raises:
        KeyError: the YAML has no such split.
        FileNotFoundError: its image folder does not exist.
    """
    data_yaml = data_yaml.resolve()
    doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(doc.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    raw = doc["names"]
    names = [str(raw[k]) for k in sorted(raw)] if isinstance(raw, dict) else [str(n) for n in raw]
    img_dir = root / doc[split]
    out: list[Item] = []
    for p in sorted(q for q in img_dir.iterdir() if q.suffix.lower() in IMG_EXT):
        lab = Path(str(p.parent).replace("/images", "/labels")) / (p.stem + ".txt")
        rows = np.loadtxt(lab, ndmin=2) if lab.is_file() and lab.stat().st_size else np.zeros((0, 5))
        out.append((p, rows.reshape(-1, 5)))
    return names, out


def list_images(folders: list[Path], exclude: set[str] | None = None) -> list[Path]:
    """Image files of ``folders`` (sorted per folder), leaving out file names in ``exclude``."""
    skip = exclude or set()
    return [p for d in folders for p in sorted(d.iterdir()) if p.suffix.lower() in IMG_EXT and p.name not in skip]


def only(items: list[Item], pattern: str | None) -> list[Item]:
    """The items whose file name matches the glob ``pattern`` (all when None)."""
    return items if not pattern else [(p, r) for p, r in items if fnmatch.fnmatch(p.name, pattern)]


def read_image(path: Path) -> np.ndarray:
    """BGR image of ``path``; a file OpenCV cannot read is an error that names it."""
    img = cv2.imread(str(path))
    if img is None:
        raise SystemExit(f"cannot read image {path}")
    return img


def to_pixels(rows: np.ndarray, w: int, h: int) -> np.ndarray:
    """YOLO rows (class, cx, cy, w, h normalised) as (class, x1, y1, x2, y2) pixels."""
    g = np.zeros((len(rows), 5))
    if len(rows):
        g[:, 0] = rows[:, 0]
        g[:, 1] = (rows[:, 1] - rows[:, 3] / 2) * w
        g[:, 2] = (rows[:, 2] - rows[:, 4] / 2) * h
        g[:, 3] = (rows[:, 1] + rows[:, 3] / 2) * w
        g[:, 4] = (rows[:, 2] + rows[:, 4] / 2) * h
    return g


# ------------------------------------------------------------------------------------------- metrics

def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    aa = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    ab = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    out: np.ndarray = inter / np.maximum(aa[:, None] + ab[None, :] - inter, 1e-12)
    return out


def match(dets: list[tuple[np.ndarray, np.ndarray]], gts: list[np.ndarray], thr: float
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """One class. dets[i] = (boxes, scores) of image i, gts[i] = boxes. Returns scores, tp flags, n_gt."""
    scores, tps = [], []
    for (boxes, sc), gt in zip(dets, gts, strict=True):
        order = np.argsort(-sc, kind="stable")
        ious = iou_matrix(boxes[order], gt)
        used = np.zeros(len(gt), bool)
        for k, i in enumerate(order):
            tp = False
            if len(gt):
                cand = np.where(used, -1.0, ious[k])
                j = int(cand.argmax())
                if cand[j] >= thr:
                    used[j] = tp = True
            scores.append(sc[i])
            tps.append(tp)
    return np.asarray(scores, float), np.asarray(tps, bool), int(sum(len(g) for g in gts))


def average_precision(scores: np.ndarray, tps: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP."""
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    o = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(tps[o])
    fp = np.cumsum(~tps[o])
    rec = tp / n_gt
    prec = tp / np.maximum(tp + fp, 1e-12)
    prec = np.maximum.accumulate(prec[::-1])[::-1]  # envelope
    rs = np.linspace(0, 1, 101)
    idx = np.searchsorted(rec, rs, side="left")
    q = np.where(idx < len(prec), prec[np.minimum(idx, len(prec) - 1)], 0.0)
    return float(q.mean())


def class_metrics(dets: list[tuple[np.ndarray, np.ndarray]], gts: list[np.ndarray], conf: float
                  ) -> dict[str, float]:
    """AP50, AP50-95 and precision/recall at ``conf`` (IoU 0.5) of one class."""
    aps = []
    for thr in IOUS:
        s, t, n = match(dets, gts, float(thr))
        aps.append(average_precision(s, t, n))
    s, t, n = match(dets, gts, 0.5)
    keep = s >= conf
    tp = int(t[keep].sum())
    npred = int(keep.sum())
    return {"ap50": aps[0], "ap50_95": float(np.mean(aps)) if n else float("nan"),
            "precision": tp / npred if npred else float("nan"), "recall": tp / n if n else float("nan"),
            "gt": n, "tp": tp, "pred": npred}


def operating_point(per_img: list[PerImage], names: list[str], thr: float, neg_scores: np.ndarray
                    ) -> dict[str, Any]:
    """Frame-level recall at threshold ``thr`` (the 1 %-false-alarm point of ``neg_scores``).

    ``per_img`` holds (boxes, scores, classes, gt) per val image, gt rows (class, x1, y1, x2, y2).
    """
    pos = [(s, c, g) for _, s, c, g in per_img if len(g)]
    fa_rate = float((neg_scores >= thr).mean()) if len(neg_scores) else float("nan")
    alarmed = float(np.mean([bool((s >= thr).any()) for s, _, _ in pos])) if pos else float("nan")
    out: dict[str, Any] = {"threshold": thr, "false_alarm_rate": fa_rate, "negative_frames": int(len(neg_scores)),
                           "positive_frames": len(pos), "frames_alarmed": alarmed, "classes": {}}
    for k, cname in enumerate(names):
        frames = [bool((s[c == k] >= thr).any()) for s, c, g in pos if (g[:, 0] == k).any()]
        if not frames:
            continue
        dets = [(b[c == k], s[c == k]) for b, s, c, _ in per_img]
        gts = [g[g[:, 0] == k, 1:] for *_, g in per_img]
        sc, tp, n_gt = match(dets, gts, 0.5)
        out["classes"][cname] = {"frames": len(frames), "frames_alarmed": float(np.mean(frames)),
                                 "box_recall": float(tp[sc >= thr].sum() / n_gt) if n_gt else float("nan")}
    return out


def threshold_for_1pct(neg_scores: np.ndarray) -> float:
    """The lowest threshold at which at most 1 % of the negative frames (max scores) alarm."""
    srt = np.sort(neg_scores)[::-1]
    allowed = int(np.floor(0.01 * len(srt)))  # images allowed to alarm for <= 1 %
    return float(np.nextafter(srt[allowed], 1)) if allowed < len(srt) else 0.0


# --------------------------------------------------------------------------------------------- run

def tile_regions(w: int, h: int, n: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """The full frame plus ``n`` x ``n`` overlapping crops (none for ``n`` <= 1)."""
    regs = [(0, 0, w, h)]
    if n > 1:
        tw, th = w / (n - (n - 1) * overlap), h / (n - (n - 1) * overlap)
        for iy in range(n):
            for ix in range(n):
                x1, y1 = ix * tw * (1 - overlap), iy * th * (1 - overlap)
                regs.append((int(x1), int(y1), int(min(w, x1 + tw)), int(min(h, y1 + th))))
    return regs


@dataclass
class FrameEvalOptions:
    """How a detector is run for :func:`evaluate_detector` (the options of scripts/evaluate.py).

    Attributes:
        imgsz: letterbox input size.
        conf: the deployed threshold (precision/recall, false-alarm rate).
        eval_conf: score floor of the accuracy pass (low, so the whole PR curve is seen).
        nms_iou: NMS IoU.
        threads: onnxruntime threads of the accuracy pass.
        tiles: N: the full frame plus N x N crops.
        map: ``model_class=data_class`` renames.
        sweep: thresholds at which the frame-level numbers are also reported.
        time_n: images timed on one thread (0: no speed measurement).
    """

    imgsz: int = 640
    conf: float = 0.25
    eval_conf: float = 0.001
    nms_iou: float = 0.45
    threads: int = 1
    tiles: int = 0
    map: list[str] = field(default_factory=list)
    sweep: list[float] = field(default_factory=list)
    time_n: int = 0


def evaluate_detector(model: Path, names: list[str], items: list[Item], negatives: list[Path],
                      opts: Any) -> dict[str, Any]:
    """Every frame metric of ``model`` on ``items`` (+ ``negatives``) as a JSON-able dict.

    Args:
        model: ONNX file.
        names: the data set's class names; model classes are matched by name (``opts.map`` renames).
        items: labelled images (empty label = negative frame).
        negatives: extra negative images.
        opts: a :class:`FrameEvalOptions` (or scripts/evaluate.py's argparse namespace, same attributes).

    Raises:
        SystemExit: no model class maps to the data classes, or an image cannot be read.
    """
    from pipeline.detect.yolo import YoloDetector

    det = YoloDetector(model, input_size=opts.imgsz, threads=opts.threads, nms_iou=opts.nms_iou,
                       min_confidence=opts.eval_conf)
    mapping = dict(kv.split("=", 1) for kv in opts.map)
    to_data: dict[int, int] = {}
    for mid, mname in det.class_names.items():
        target = mapping.get(mname, mname)
        if target in names:
            to_data[int(mid)] = names.index(target)
    if not to_data:
        raise SystemExit(f"no model class of {model} maps to the data classes {names}")

    def run(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        d = det.detect(img) if opts.tiles <= 1 else det.detect_regions(img, tile_regions(w, h, opts.tiles))
        cls = np.array([to_data.get(int(c), -1) for c in d.class_id], int)
        ok = cls >= 0
        return d.xyxy[ok].astype(float), d.confidence[ok].astype(float), cls[ok]

    per_img: list[PerImage] = []
    n_neg_in_split = 0
    fa_scores = []  # max score per negative image
    for p, rows in items:
        img = read_image(p)
        h, w = img.shape[:2]
        b, s, c = run(img)
        per_img.append((b, s, c, to_pixels(rows, w, h)))
        if len(rows) == 0:
            n_neg_in_split += 1
            fa_scores.append(float(s.max()) if len(s) else 0.0)
    for p in negatives:
        _, s, _ = run(read_image(p))
        fa_scores.append(float(s.max()) if len(s) else 0.0)

    res: dict[str, Any] = {"file": str(model), "classes": {}}
    for k, cname in enumerate(names):
        dets = [(b[c == k], s[c == k]) for b, s, c, _ in per_img]
        gts = [g[g[:, 0] == k, 1:] for *_, g in per_img]
        m: dict[str, Any] = dict(class_metrics(dets, gts, opts.conf))
        has = [len(g) > 0 for g in gts]
        hit = [bool((sc >= opts.conf).any()) for (_, sc), h in zip(dets, has, strict=True) if h]
        m["images"] = int(sum(has))
        m["frame_recall"] = float(np.mean(hit)) if hit else float("nan")  # images of the class alarmed on
        if m["gt"]:
            res["classes"][cname] = m
    valid = list(res["classes"].values())
    res["map50"] = float(np.mean([m["ap50"] for m in valid])) if valid else float("nan")
    res["map50_95"] = float(np.mean([m["ap50_95"] for m in valid])) if valid else float("nan")
    fa = np.asarray(fa_scores)
    res["negatives"] = {"images": int(len(fa)), "in_split": n_neg_in_split,
                        "extra": int(len(fa)) - n_neg_in_split,
                        "false_alarm_rate": float((fa >= opts.conf).mean()) if len(fa) else float("nan"),
                        "false_alarm_rate_in_split": float((fa[:n_neg_in_split] >= opts.conf).mean())
                        if n_neg_in_split else float("nan")}
    if len(fa):
        res["negatives"]["threshold_for_1pct"] = threshold_for_1pct(fa)
        res["operating_point"] = operating_point(per_img, names, res["negatives"]["threshold_for_1pct"], fa)
        res["threshold_sweep"] = [operating_point(per_img, names, thr, fa) for thr in opts.sweep]
    if opts.time_n > 0:
        res["ms_per_frame_1thread"] = time_detector(model, [p for p, _ in items[: opts.time_n]], opts)
    return res


def time_detector(model: Path, images: list[Path], opts: Any) -> dict[str, float]:
    """Median ms per frame of ``detect()`` on one thread (wall clock and process CPU time)."""
    from pipeline.detect.yolo import YoloDetector

    tdet = YoloDetector(model, input_size=opts.imgsz, threads=1, nms_iou=opts.nms_iou, min_confidence=opts.conf)
    imgs = [read_image(p) for p in images]
    for im in imgs[:3]:
        tdet.detect(im)
    wall, cpu = [], []
    for im in imgs:
        t0, c0 = time.perf_counter(), time.process_time()
        h, w = im.shape[:2]
        if opts.tiles <= 1:
            tdet.detect(im)
        else:
            tdet.detect_regions(im, tile_regions(w, h, opts.tiles))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_median": 1000 * float(np.median(wall)), "cpu_median": 1000 * float(np.median(cpu)),
            "frames": len(imgs)}
