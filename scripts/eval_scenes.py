#!/usr/bin/env python3
"""Measure state-classification scenes (pipeline/scenes) on the real corridor clip: numbers for docs/scenes.md.

Three scenes, all built on ``shared/clips/one-by-one-person-detection.mp4`` at 1 frame/s (people walk through
the whole time) with real objects of ``shared/datasets/clutter`` composited in known stretches:

* ``floor`` (``clear`` / ``blocked``): garbage bags on the floor (the tests' scene, tests/fixtures/scene_media.py).
* ``same_bin`` (``normal`` / ``overflowing``, 垃圾满溢): one clean bin by the wall the whole time; in 20-45 s and
  95-125 s garbage bags heap on its lid and beside it (``clutter/train`` bags before 70 s, ``clutter/val`` after).
* ``bin`` (``normal`` / ``overflowing``): a bin stands by the wall the whole time; a clean ``bin`` in some
  stretches, an ``overflowing_bin`` in others; a *different* bin every 10 s. Training bins come from
  ``clutter/train``, the bins of the unseen part from ``clutter/val``. A hard, deliberately unfair case: the
  state changes together with the object's identity, and 4 bins a state are far too few to learn
  "overflowing" in general (a real camera watches the same bins; label crops of those).

Each scene trains on the clip's first 70 s (the trainer's own time-split hold-out is reported too) and is
scored on the remaining 69 s, as is and darkened (gain 0.55, gamma 1.3: dusk), and the rule is run on the
unseen part (incidents opened inside / outside the bad stretches).

    python scripts/eval_scenes.py            # prints a table (about 30 s on one core)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.analyze.analyzer import CameraAnalyzer  # noqa: E402
from pipeline.config import SiteConfig  # noqa: E402
from pipeline.ingest.frame import Frame  # noqa: E402
from pipeline.scenes.classifier import StateClassifier  # noqa: E402
from pipeline.scenes.crop import cut_crop  # noqa: E402
from pipeline.scenes.train import Sample, train_scene  # noqa: E402
from tests.fixtures import scene_media as floor_media  # noqa: E402
from tests.fixtures.hazard_media import cutout, paste, placed  # noqa: E402

SHARED = REPO.parent / "shared"
CLUTTER = SHARED / "datasets" / "clutter"
BACKBONE = SHARED / "models" / "yolo11n-coco.onnx"
T0 = 1_796_000_000.25
SPLIT = 70.0
BIN_AT, BIN_HEIGHT = (655, 360), 120
BIN_BOX = [0.74, 0.45, 1.0, 0.92]
BIN_BAD = ((20.0, 45.0), (95.0, 125.0))
"""Stretches (clip s) where the bin overflows; elsewhere a clean bin stands there."""


def _objects(split: str, cls: int, n: int) -> list[np.ndarray]:
    """Up to ``n`` cut-outs of the largest ``cls`` box of images of ``split`` (both sides > 20 % of the image)."""
    out: list[np.ndarray] = []
    for lab in sorted((CLUTTER / "labels" / split).glob("*.txt")):
        rows = [r.split() for r in lab.read_text().splitlines() if r.strip() and int(r.split()[0]) == cls]
        if rows and max(min(float(r[3]), float(r[4])) for r in rows) > 0.2:
            out.append(placed(cutout(CLUTTER / "images" / split / f"{lab.stem}.jpg", lab, cls), BIN_AT, BIN_HEIGHT)[0])
        if len(out) == n:
            break
    return out


def bin_frames(frames: list[tuple[float, np.ndarray]]) -> tuple[list[tuple[float, np.ndarray]], list[str]]:
    pools = {(s, c): _objects(s, c, 4) for s in ("train", "val") for c in (1, 2)}
    out, states = [], []
    for t, img in frames:
        bad = any(a <= t < b for a, b in BIN_BAD)
        pool = pools[("train" if t < SPLIT else "val", 1 if bad else 2)]
        obj = pool[int(t // 10) % len(pool)]
        out.append((t, paste(img, obj, (BIN_AT[0] - obj.shape[1] // 2, BIN_AT[1] - obj.shape[0]))))
        states.append("overflowing" if bad else "normal")
    return out, states


def same_bin_frames(frames: list[tuple[float, np.ndarray]]) -> tuple[list[tuple[float, np.ndarray]], list[str]]:
    """One clean bin (``clutter/train``) by the wall the whole time; in :data:`BIN_BAD` garbage heaps on and
    beside it (bags of ``clutter/train`` before :data:`SPLIT`, of ``clutter/val`` after)."""
    bin_img = _objects("train", 2, 1)[0]
    bags = {s: [placed(o, (0, 0), 70)[0] for o in _objects(s, 0, 3)] for s in ("train", "val")}
    out, states = [], []
    for t, img in frames:
        img = paste(img, bin_img, (BIN_AT[0] - bin_img.shape[1] // 2, BIN_AT[1] - bin_img.shape[0]))
        bad = any(a <= t < b for a, b in BIN_BAD)
        if bad:
            pool = bags["train" if t < SPLIT else "val"]
            bag = pool[int(t // 10) % len(pool)]
            top = (BIN_AT[0] - bag.shape[1] // 2, BIN_AT[1] - BIN_HEIGHT - bag.shape[0] // 2)  # heaped on the lid
            img = paste(img, bag, top)
            img = paste(img, bag, (BIN_AT[0] - BIN_HEIGHT // 2 - bag.shape[1] // 2, BIN_AT[1] - bag.shape[0]))
        out.append((t, img))
        states.append("overflowing" if bad else "normal")
    return out, states


def dusk(img: np.ndarray) -> np.ndarray:
    return np.clip(((img / 255.0) ** 1.3) * 0.55 * 255.0 + 0.5, 0, 255).astype(np.uint8)


def evaluate(name: str, frames: list[tuple[float, np.ndarray]], states: list[str], box: list[float],
             labels: tuple[str, str], dwell: float) -> None:
    poly = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]]
    train = [Sample(cut_crop(img, poly), T0 + t, s) for (t, img), s in zip(frames, states, strict=True) if t < SPLIT]
    t0 = time.monotonic()
    model, card = train_scene(train, list(labels), BACKBONE, scene_id=name)
    seconds = time.monotonic() - t0
    path = Path(f"/tmp/gridwatch-eval-{name}.onnx")
    path.write_bytes(model)
    clf = StateClassifier(path)
    unseen = [(t, img, s) for (t, img), s in zip(frames, states, strict=True) if t >= SPLIT]
    truth = np.array([s for _, _, s in unseen])
    for light, f in (("as is", lambda x: x), ("dusk", dusk)):
        pred = np.array(clf.states)[clf.predict([cut_crop(f(img), poly) for _, img, _ in unseen]).argmax(1)]
        fp = int(np.sum((pred == labels[1]) & (truth == labels[0])))
        fn = int(np.sum((pred == labels[0]) & (truth == labels[1])))
        print(f"| {name} | {light} | {np.mean(pred == truth):.3f} | {fp} / {int(np.sum(truth == labels[0]))} | "
              f"{fn} / {int(np.sum(truth == labels[1]))} |")
    ev = card["evaluation"]
    assert isinstance(ev, dict)
    site = SiteConfig.model_validate({
        "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
            {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G"}],
        "scenes": [{"id": name, "camera": "cam1", "box": box, "states": list(labels), "bad_states": [labels[1]],
                    "model": str(path), "dwell_seconds": dwell, "clear_seconds": 10, "confirm_k": 3, "confirm_n": 5,
                    "interval_seconds": 1.0, "data_dir": f"/tmp/gridwatch-eval-{name}"}]})
    analyzer = CameraAnalyzer(site, site.cameras[0])
    opened = [e for t, img, _ in unseen for e in analyzer.analyze(Frame("cam1", img, T0 + t, t, int(t), True), {})
              if e.event.value == "opened"]
    print(f"  {name}: train {seconds:.1f} s on {len(train)} crops x {1 + int(card['augment_copies'])} "  # type: ignore[call-overload]
          f"(time-split hold-out accuracy {ev.get('accuracy')} on {ev.get('held_out')} crops); rule on the unseen "
          f"part: opened at clip s {[round(e.ts - T0, 1) for e in opened]}")


def main() -> int:
    clip = SHARED / "clips" / "one-by-one-person-detection.mp4"
    raw = floor_media.read_frames(clip)
    media = floor_media.build_scene_media(SHARED)
    print("| scene | lighting of the unseen part | frame accuracy | good called bad | bad missed |")
    print("|---|---|---|---|---|")
    evaluate("floor", media.frames, [media.state(t) for t, _ in media.frames], floor_media.SCENE_BOX,
             ("clear", "blocked"), 20.0)
    frames, states = same_bin_frames(raw)
    evaluate("same_bin", frames, states, BIN_BOX, ("normal", "overflowing"), 20.0)
    frames, states = bin_frames(raw)
    evaluate("bin", frames, states, BIN_BOX, ("normal", "overflowing"), 20.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
