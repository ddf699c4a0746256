#!/usr/bin/env python3
"""Train the smoke tile classifier (``models/smoke-tiles.onnx``): fire / smoke / neither on frame tiles.

The fire detector rarely proposes a box on real smoke, so the fire rule also looks at fixed frame tiles
(:func:`pipeline.analyze.smoke_tiles.frame_tiles`). This classifier has the fire-confirm contract (same
network, classes, runner :class:`~pipeline.detect.fire_confirm.FireConfirmClassifier`) but is trained on
tiles, not on detector boxes::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/train_smoke_tiles.py crops
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/train_smoke_tiles.py train --minutes 12

Crops (TRAIN splits only, 72 x 72; training takes random 64 x 64 windows):

- tiles of the fire/fire2 train frames: ``smoke`` when labelled smoke covers >= 25 % of the tile (or
  >= 50 % of a smoke box lies in it), ``fire`` when fire covers >= 10 % and smoke < 5 %; other tiles of
  positive frames are left out (smoke is not always labelled everywhere);
- extra smoke tiles: random squares of 25-60 % of the frame side around each labelled smoke box;
- ``neither``: tiles and random squares of every negative train frame: the empty-label frames of fire and
  fire2 (CCTV scenes, red/orange street objects) and the clutter and vehicles train frames that are in no
  fire set (streets, skies, fog, white walls, garbage compounds).

No val frame of any set is used, and vehicles2/leftobj are kept out: they are the held-out pool on which
``scripts/smoke_operating_point.py`` calibrates the thresholds.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from pipeline.analyze.smoke_tiles import frame_tiles  # noqa: E402
from pipeline.detect.fire_confirm import crop_box  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets"
SETS = ("fire", "fire2")
EXTRA = ("clutter", "vehicles")
STORE = 72
TILE_PAD = 0.0625
"""Context around a tile in the stored crop: the centre 64 of 72 px is the tile itself."""
FIRE, SMOKE, NEITHER = 0, 1, 2
IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp"}


def labels(ds: str, split: str, p: Path) -> np.ndarray:
    lab = SHARED / ds / "labels" / split / (p.stem + ".txt")
    if not lab.is_file() or not lab.stat().st_size:
        return np.zeros((0, 5))
    return np.loadtxt(lab, ndmin=2).reshape(-1, 5)


def coverage(mask: np.ndarray, box: np.ndarray, scale: float) -> float:
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    sub = mask[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
    return float(sub.mean()) if sub.size else 0.0


def cut(img: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    c = crop_box(img, box, TILE_PAD)
    return None if c is None else cv2.resize(c, (STORE, STORE), interpolation=cv2.INTER_AREA)


def random_squares(w: int, h: int, n: int, rng: np.random.Generator, around: np.ndarray | None = None) -> np.ndarray:
    side = rng.uniform(0.25, 0.6, n) * min(w, h)
    if around is None:
        cx, cy = rng.uniform(0, 1, n) * w, rng.uniform(0, 1, n) * h
    else:
        cx = rng.uniform(around[0], around[2], n)
        cy = rng.uniform(around[1], around[3], n)
    x1 = np.clip(cx - side / 2, 0, w - side)
    y1 = np.clip(cy - side / 2, 0, h - side)
    return np.asarray(np.c_[x1, y1, x1 + side, y1 + side])


def cmd_crops(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    in_fire = {p.name for ds in SETS for sp in ("train", "val") for p in (SHARED / ds / "images" / sp).iterdir()}
    jobs: list[tuple[str, Path]] = [(ds, p) for ds in SETS for p in sorted((SHARED / ds / "images" / "train").iterdir())
                                    if p.suffix.lower() in IMG_EXT]
    jobs += [(ds, p) for ds in EXTRA for p in sorted((SHARED / ds / "images" / "train").iterdir())
             if p.suffix.lower() in IMG_EXT and p.name not in in_fire]
    xs: list[np.ndarray] = []
    ys: list[int] = []
    kinds: list[str] = []

    def add(img: np.ndarray, box: np.ndarray, y: int, kind: str) -> None:
        c = cut(img, box)
        if c is not None:
            xs.append(c)
            ys.append(y)
            kinds.append(kind)

    for k, (ds, p) in enumerate(jobs):
        img = cv2.imread(str(p))
        if img is None:
            raise SystemExit(f"cannot read {p}")
        h, w = img.shape[:2]
        lab = labels(ds, "train", p) if ds in SETS else np.zeros((0, 5))
        tiles = frame_tiles(w, h)
        if not len(lab):
            pick = rng.choice(len(tiles), size=min(len(tiles), args.neg_tiles), replace=False)
            for b in tiles[pick]:
                add(img, b, NEITHER, "neg_tile")
            for b in random_squares(w, h, 3, rng):
                add(img, b, NEITHER, "neg_random")
        else:
            scale = 0.25
            gt = np.c_[lab[:, 1] - lab[:, 3] / 2, lab[:, 2] - lab[:, 4] / 2, lab[:, 1] + lab[:, 3] / 2,
                       lab[:, 2] + lab[:, 4] / 2] * np.array([w, h, w, h])
            masks = {c: np.zeros((int(h * scale) + 1, int(w * scale) + 1), np.float32) for c in (FIRE, SMOKE)}
            for c, b in zip(lab[:, 0].astype(int), gt, strict=True):
                x1, y1, x2, y2 = (int(round(v * scale)) for v in b)
                masks[c][max(0, y1):y2 + 1, max(0, x1):x2 + 1] = 1.0
            smoke_boxes = gt[lab[:, 0] == SMOKE]
            for b in tiles:
                cs, cf = coverage(masks[SMOKE], b, scale), coverage(masks[FIRE], b, scale)
                inside = any(coverage_box(s, b) >= 0.5 for s in smoke_boxes)
                if cs >= 0.25 or inside:
                    add(img, b, SMOKE, "smoke_tile")
                elif cf >= 0.1 and cs < 0.05 and rng.random() < args.fire_keep:
                    add(img, b, FIRE, "fire_tile")
            for s in smoke_boxes:
                for b in random_squares(w, h, args.smoke_random, rng, around=s):
                    if coverage(masks[SMOKE], b, scale) >= 0.25 or coverage_box(s, b) >= 0.5:
                        add(img, b, SMOKE, "smoke_random")
        if k % 300 == 0:
            print(f"  {k}/{len(jobs)} frames, {len(xs)} crops", flush=True)
    y = np.array(ys)
    print({n: int((y == c).sum()) for c, n in ((FIRE, "fire"), (SMOKE, "smoke"), (NEITHER, "neither"))})
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "crops_train.pkl").write_bytes(pickle.dumps({"x": np.stack(xs), "y": y, "kind": np.array(kinds)}))


def coverage_box(inner: np.ndarray, outer: np.ndarray) -> float:
    """Share of box ``inner``'s area that lies inside box ``outer``."""
    ix = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    iy = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = max(1e-6, (inner[2] - inner[0]) * (inner[3] - inner[1]))
    return float(ix * iy / area)


def cmd_train(args: argparse.Namespace) -> None:
    import onnx
    import train_fire_confirm as tfc

    ns = argparse.Namespace(work=args.work, out=args.out, epochs=args.epochs, minutes=args.minutes,
                            batch=args.batch, lr=args.lr, init=None)
    tfc.cmd_train(ns)
    m = onnx.load(str(args.out))  # tiles are cut with their own context, not the box padding of fire-confirm
    for prop in m.metadata_props:
        if prop.key == "pad":
            prop.value = str(TILE_PAD)
        if prop.key == "trainer":
            prop.value = "scripts/train_smoke_tiles.py"
    onnx.save(m, str(args.out))
    print(f"pad metadata set to {TILE_PAD}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["crops", "train"])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "smoke_tiles")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "smoke-tiles.onnx")
    ap.add_argument("--neg-tiles", type=int, default=8, help="fixed tiles per negative frame")
    ap.add_argument("--smoke-random", type=int, default=4, help="random squares per smoke box")
    ap.add_argument("--fire-keep", type=float, default=0.35, help="share of fire tiles kept")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    {"crops": cmd_crops, "train": cmd_train}[args.step](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
