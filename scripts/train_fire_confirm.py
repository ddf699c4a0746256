#!/usr/bin/env python3
"""Train, export and measure the fire second stage (``models/fire-confirm.onnx``, fire / smoke / neither).

Three steps, each cached under ``--work`` (default ``runs/fire_confirm``, ignored by git)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/train_fire_confirm.py crops     # mine + cut crops
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/train_fire_confirm.py train      # 6 epochs, <= 9 min
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python scripts/train_fire_confirm.py measure   # val numbers -> JSON

Crops (72 x 72 BGR; training takes random 64 x 64 windows, measuring the centre):

- positives: every labelled fire/smoke box of the TRAIN splits of ``shared/datasets/fire`` and ``fire2``
  (3 crops each, context padding 5..35 % and a shift of up to 10 % of the box), plus the detector's own
  boxes (score >= ``--mine-conf``, 0.03) that overlap a label (IoU >= 0.3), labelled with its class;
- negatives: the detector's boxes (score >= ``--mine-conf``, 2 jittered crops) on the negative frames (empty
  label files) of those train splits and on ``--extra-negatives`` train frames (clutter, vehicles: street
  scenes without fire; images that are also in a fire set, in either split, are left out), plus 3 random
  boxes per negative frame.

The val crops are cut the same way (one centred crop per box, padding 15 %) from the VAL splits only; the
splits are independent by source video/camera (data set READMEs), so no frame of a val source is trained on.

``measure`` reports (a) crop-level ROC AUC of ``1 - p(neither)`` per val split, and (b) the frame-level
operating point of the deployed detector alone vs. detector + classifier, both at the threshold where 1 %
of the negative frames alarm (empty-label val frames + clutter/vehicles val frames, as scripts/evaluate.py
counts them). A frame's score: detector alone = max box score; ``product`` = max over boxes of
``det_score * (1 - p(neither))``; ``gate g`` = max det_score over boxes whose ``1 - p(neither) >= g`` (what the
rule does with ``confirm_min_score``). Smoke is reported on its own (smoke frames with a smoke box alarmed).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.detect.fire_confirm import CLASS_NAMES, FireConfirmClassifier, crop_box  # noqa: E402
from pipeline.detect.yolo import YoloDetector  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
SETS = ("fire", "fire2")
EXTRA = ("clutter", "vehicles")
STORE, SIZE, PAD = 72, 64, 0.15
NEITHER = 2
IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp"}


def split_items(ds: str, split: str) -> list[tuple[Path, np.ndarray]]:
    """(image, labels (N, 5) class, x1, y1, x2, y2 normalised) of one split."""
    out = []
    for p in sorted((SHARED / ds / "images" / split).iterdir()):
        if p.suffix.lower() not in IMG_EXT:
            continue
        lab = SHARED / ds / "labels" / split / (p.stem + ".txt")
        rows = np.loadtxt(lab, ndmin=2).reshape(-1, 5) if lab.is_file() and lab.stat().st_size else np.zeros((0, 5))
        xyxy = np.c_[rows[:, 0], rows[:, 1] - rows[:, 3] / 2, rows[:, 2] - rows[:, 4] / 2,
                     rows[:, 1] + rows[:, 3] / 2, rows[:, 2] + rows[:, 4] / 2]
        out.append((p, xyxy))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a, area_b = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / (area_a[:, None] + area_b[None] - inter + 1e-9))


def cut(img: np.ndarray, box: np.ndarray, rng: np.random.Generator | None) -> np.ndarray | None:
    """A STORE x STORE crop of a box: centred with PAD (rng None) or jittered (training)."""
    b = np.asarray(box, float).copy()
    pad = PAD
    if rng is not None:
        w, h = b[2] - b[0], b[3] - b[1]
        b += np.array([w, h, w, h]) * np.tile(rng.uniform(-0.1, 0.1, 2), 2)
        pad = float(rng.uniform(0.05, 0.35))
    if b[2] - b[0] < 6 or b[3] - b[1] < 6:
        return None
    c = crop_box(img, b, pad)
    return None if c is None else cv2.resize(c, (STORE, STORE), interpolation=cv2.INTER_AREA)


def random_boxes(w: int, h: int, n: int, rng: np.random.Generator) -> np.ndarray:
    side = rng.uniform(0.06, 0.5, (n, 2)) * np.array([w, h])
    x1, y1 = rng.uniform(0, 1, n) * (w - side[:, 0]), rng.uniform(0, 1, n) * (h - side[:, 1])
    return np.asarray(np.c_[x1, y1, x1 + side[:, 0], y1 + side[:, 1]])


def crops_of_split(det: YoloDetector, split: str, mine_conf: float, extra_cap: int,
                   rng: np.random.Generator) -> dict[str, Any]:
    """Crops, labels and source set of one split; for val also the detections of every frame."""
    train = split == "train"
    xs: list[np.ndarray] = []
    ys: list[int] = []
    srcs: list[str] = []
    kinds: list[str] = []
    frames: list[dict[str, Any]] = []

    def add(c: np.ndarray | None, y: int, src: str, kind: str) -> None:
        if c is not None:
            xs.append(c)
            ys.append(y)
            srcs.append(src)
            kinds.append(kind)

    jobs = [(ds, it) for ds in SETS for it in split_items(ds, split)]
    # clutter/vehicles share some images with the fire sets (either split): those stay out of the extras,
    # or a fire-train frame would be a val negative (and a fire-val frame a training negative)
    in_fire = {p.name for ds in SETS for sp in ("train", "val") for p in (SHARED / ds / "images" / sp).iterdir()}
    for ds in EXTRA:
        items = [it for it in split_items(ds, split) if it[0].name not in in_fire]
        step = max(1, len(items) // extra_cap) if train else 1
        jobs += [(ds, (p, np.zeros((0, 5)))) for p, _ in items[::step]]
    for k, (ds, (p, lab)) in enumerate(jobs):
        img = cv2.imread(str(p))
        if img is None:
            raise SystemExit(f"cannot read {p}")
        h, w = img.shape[:2]
        gt = lab[:, 1:] * np.array([w, h, w, h])
        d = det.detect(img)
        frames.append({"set": ds, "path": str(p), "gt_cls": lab[:, 0].astype(int), "gt": gt,
                       "boxes": d.xyxy.astype(float), "scores": d.confidence.astype(float),
                       "cls": d.class_id.astype(int)})
        mined = d.xyxy[d.confidence >= mine_conf].astype(float)
        src = ds if ds in SETS else "extra"
        reps = 3 if train else 1
        for g, c in zip(gt, lab[:, 0].astype(int), strict=True):
            for _ in range(reps):
                add(cut(img, g, rng if train else None), int(c), src, "label")
        if len(gt):
            if train and len(mined):
                ov = iou(mined, gt)
                for i in np.flatnonzero(ov.max(1) >= 0.3):
                    add(cut(img, mined[i], rng), int(lab[int(ov[i].argmax()), 0]), src, "det_pos")
            continue
        for b in mined:
            for _ in range(2 if train else 1):
                add(cut(img, b, rng if train else None), NEITHER, src, "hard")
        for b in random_boxes(w, h, 3 if train else 2, rng):
            add(cut(img, b, None), NEITHER, src, "random")
        if k % 200 == 0:
            print(f"  {split}: {k}/{len(jobs)} frames, {len(xs)} crops", flush=True)
    return {"x": np.stack(xs), "y": np.array(ys), "src": np.array(srcs), "kind": np.array(kinds),
            "frames": frames}


def cmd_crops(args: argparse.Namespace) -> None:
    det = YoloDetector(args.detector, input_size=args.imgsz, threads=1, min_confidence=0.01)
    rng = np.random.default_rng(0)
    for split in args.splits:
        t = time.time()
        data = crops_of_split(det, split, args.mine_conf, args.extra_cap, rng)
        with (args.work / f"crops_{split}.pkl").open("wb") as f:
            pickle.dump(data, f)
        counts = {f"{CLASS_NAMES[c]}/{k}": int(((data["y"] == c) & (data["kind"] == k)).sum())
                  for c in range(3) for k in ("label", "det_pos", "hard", "random")}
        print(split, f"{time.time() - t:.0f}s", {k: v for k, v in counts.items() if v})


def build_net():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    def block(i: int, o: int, s: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(*block(3, 16, 2), *block(16, 32, 1), *block(32, 32, 2), *block(32, 64, 1),
                                      *block(64, 64, 2), *block(64, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Dropout(0.2), nn.Linear(128, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # RGB 0..1 in, logits out
            return self.body((x - 0.45) / 0.25)  # type: ignore[no-any-return]

    return Net()


def to_tensor(x_bgr: np.ndarray):  # type: ignore[no-untyped-def]
    import torch
    return torch.from_numpy(np.ascontiguousarray(x_bgr[..., ::-1].transpose(0, 3, 1, 2))).float() / 255.0


def cmd_train(args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tr = pickle.loads((args.work / "crops_train.pkl").read_bytes())
    x, y = tr["x"], tr["y"]
    counts = np.bincount(y, minlength=3)
    weight = torch.tensor(counts.sum() / (3 * np.maximum(counts, 1)), dtype=torch.float32)
    print("train crops per class", dict(zip(CLASS_NAMES, counts.tolist(), strict=True)), "weights", weight)
    net = build_net()  # type: ignore[no-untyped-call]
    if args.init is not None:  # continue from an earlier run's weights (e.g. on more hard negatives)
        net.load_state_dict(torch.load(args.init))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    lossf = nn.CrossEntropyLoss(weight=weight, label_smoothing=0.05)
    start, epoch, step = time.time(), 0, 0
    budget, total = 60 * args.minutes, args.epochs * int(np.ceil(len(x) / args.batch))
    while epoch < args.epochs and time.time() - start < budget:
        net.train()
        order = rng.permutation(len(x))
        run_loss = 0.0
        for i in range(0, len(x), args.batch):
            idx = order[i:i + args.batch]
            ox, oy = rng.integers(0, STORE - SIZE + 1, 2)
            xb = x[idx, oy:oy + SIZE, ox:ox + SIZE].astype(np.float32)
            flip = rng.random(len(idx)) < 0.5
            xb[flip] = xb[flip, :, ::-1]
            # brightness/contrast jitter (day/night cameras); hue is left alone: colour is evidence
            n4 = (len(idx), 1, 1, 1)
            xb = (xb - 128) * rng.uniform(0.7, 1.3, n4) + 128 + rng.uniform(-30, 30, n4)
            grey = rng.random(len(idx)) < 0.05  # night IR cameras
            xb[grey] = xb[grey].mean(axis=3, keepdims=True)
            xt = to_tensor(np.clip(xb, 0, 255))
            loss = lossf(net(xt), torch.from_numpy(y[idx]).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            # warm-up then cosine decay over whichever runs out first: the epochs or the time budget
            prog = min(1.0, max(step / total, (time.time() - start) / budget))
            for g in opt.param_groups:
                g["lr"] = args.lr * (min(1.0, prog / 0.05) * 0.5 * (1 + np.cos(np.pi * prog)) + 0.01)
            run_loss += float(loss.detach()) * len(idx)
        epoch += 1
        left = (budget - time.time() + start) / 60
        print(f"epoch {epoch}: loss {run_loss / len(x):.4f} ({left:.1f} min left)", flush=True)
    net.eval()
    torch.save(net.state_dict(), args.work / "net.pt")
    export(net, args.out, epoch)


def export(net, out: Path, epochs: int) -> None:  # type: ignore[no-untyped-def]
    import onnx
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net(x), dim=1)

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(WithSoftmax().eval(), (torch.zeros(1, 3, SIZE, SIZE),), str(out), opset_version=17,
                      input_names=["crops"], output_names=["probs"], dynamo=False,
                      dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}})
    m = onnx.load(str(out))
    for k, v in {"names": repr(list(CLASS_NAMES)), "input_size": str(SIZE), "pad": str(PAD),
                 "epochs": str(epochs), "trainer": "scripts/train_fire_confirm.py"}.items():
        m.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(m, str(out))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties count half)."""
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.r_[pos, neg]
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    for v in np.unique(allv):  # average ranks of ties
        same = allv == v
        ranks[same] = ranks[same].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def threshold_1pct(neg: np.ndarray) -> float:
    """Lowest threshold at which at most 1 % of the negative frame scores alarm (as evaluate.py)."""
    srt = np.sort(neg)[::-1]
    allowed = int(np.floor(0.01 * len(srt)))
    return float(np.nextafter(srt[allowed], 1)) if allowed < len(srt) else 0.0


def operating_point(frames: list[dict[str, Any]], score: str) -> dict[str, Any]:
    neg = np.array([f[score] for f in frames if not len(f["gt"])])
    thr = threshold_1pct(neg)
    pos = [f for f in frames if len(f["gt"])]
    own = [f[score] >= thr for f in frames if not len(f["gt"]) and f["set"] in SETS]  # the split's own
    out: dict[str, Any] = {"threshold": round(thr, 4), "negative_frames": len(neg),
                           "false_alarm_rate": round(float((neg >= thr).mean()), 4),
                           "in_split_negatives_alarmed": f"{sum(own)}/{len(own)}", "positive_frames": len(pos),
                           "frames_alarmed": round(float(np.mean([f[score] >= thr for f in pos])), 4)}
    for k, name in enumerate(("fire", "smoke")):
        of = [f for f in pos if (f["gt_cls"] == k).any()]
        out[f"{name}_frames"] = len(of)
        out[f"{name}_frames_alarmed"] = round(float(np.mean([f[f"{score}_{name}"] >= thr for f in of])), 4)
    return out


def frame_scores(f: dict[str, Any], p_obj: np.ndarray, gates: list[float]) -> None:
    """Adds the frame scores (overall and per detector class) of every scoring scheme to ``f``."""
    s, c = f["scores"], f["cls"]
    schemes = {"det": s, "product": s * p_obj} | {f"gate{g}": np.where(p_obj >= g, s, 0.0) for g in gates}
    for name, v in schemes.items():
        f[name] = float(v.max()) if len(v) else 0.0
        for k, cname in enumerate(("fire", "smoke")):
            f[f"{name}_{cname}"] = float(v[c == k].max()) if (c == k).any() else 0.0


def cmd_measure(args: argparse.Namespace) -> None:
    clf = FireConfirmClassifier(args.out, threads=1)
    va = pickle.loads((args.work / "crops_val.pkl").read_bytes())
    x = va["x"][:, (STORE - SIZE) // 2:(STORE + SIZE) // 2, (STORE - SIZE) // 2:(STORE + SIZE) // 2]
    p = clf.classify(list(x))
    res: dict[str, Any] = {"model": str(args.out), "detector": str(args.detector), "crops": {}, "frames": {}}
    for ds in SETS:
        m = (va["src"] == ds) | (va["src"] == "extra")
        y, pobj = va["y"][m], 1 - p[m, NEITHER]
        hard = va["kind"][m] == "hard"
        res["crops"][ds] = {
            "fire": int((y == 0).sum()), "smoke": int((y == 1).sum()), "neither": int((y == NEITHER).sum()),
            "auc_fire_smoke_vs_neither": round(auc(pobj[y != NEITHER], pobj[y == NEITHER]), 4),
            "auc_vs_hard_negatives": round(auc(pobj[y != NEITHER], pobj[(y == NEITHER) & hard]), 4),
            "auc_fire_vs_neither": round(auc(pobj[y == 0], pobj[y == NEITHER]), 4),
            "auc_smoke_vs_neither": round(auc(pobj[y == 1], pobj[y == NEITHER]), 4)}
    t0, n_boxes = time.process_time(), 0
    extras = []
    for f in va["frames"]:
        img = cv2.imread(f["path"])
        if img is None:
            raise SystemExit(f"cannot read {f['path']}")
        f["p"] = clf.score_boxes(img, f["boxes"])
        n_boxes += len(f["boxes"])
        frame_scores(f, 1 - f["p"][:, NEITHER], args.gates)
        if f["set"] in EXTRA:
            extras.append(f)
    res["ms_per_box_cpu"] = round(1000 * (time.process_time() - t0) / max(1, n_boxes), 3)
    for ds in SETS:
        frames = [f for f in va["frames"] if f["set"] == ds] + extras
        schemes = ["det", "product", *[f"gate{g}" for g in args.gates]]
        res["frames"][ds] = {s: operating_point(frames, s) for s in schemes}
        # at the rule's own detector floor (hazards.fire.min_confidence), without the 1 % calibration
        for thr in args.at:
            neg = [f for f in frames if not len(f["gt"])]
            pos = [f for f in frames if len(f["gt"])]
            res["frames"][ds][f"at{thr}"] = {
                s: {"false_alarm_rate": round(float(np.mean([f[s] >= thr for f in neg])), 4),
                    "frames_alarmed": round(float(np.mean([f[s] >= thr for f in pos])), 4)}
                for s in schemes if s != "product"}
    print(json.dumps(res, indent=1))
    (args.work / "measure.json").write_text(json.dumps(res, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["crops", "train", "measure"])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "fire_confirm")
    ap.add_argument("--detector", type=Path, default=REPO / "models" / "fire.onnx")
    ap.add_argument("--imgsz", type=int, default=416, help="detector input size")
    ap.add_argument("--mine-conf", type=float, default=0.03, help="detector score of mined boxes")
    ap.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"],
                    help="splits to (re)build; `--splits val` re-measures a new detector with the same classifier")
    ap.add_argument("--extra-cap", type=int, default=800, help="train frames per extra negative set")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "fire-confirm.onnx")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--minutes", type=float, default=9.0, help="training stops after this long")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, cosine)")
    ap.add_argument("--init", type=Path, help="start from these weights (net.pt of an earlier run)")
    ap.add_argument("--gates", type=float, nargs="*", default=[0.3, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--at", type=float, nargs="*", default=[0.4], help="fixed detector thresholds to report")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    {"crops": cmd_crops, "train": cmd_train, "measure": cmd_measure}[args.step](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
