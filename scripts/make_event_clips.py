#!/usr/bin/env python3
"""Make labelled event clips for scripts/evaluate_events.py from the shared corridor clip (PyAV + OpenCV).

Every clip is the first ``--seconds`` of ``shared/clips/one-by-one-person-detection.mp4`` (768x432, people
walk through) re-encoded at ``--fps`` (H.264, no B-frames, a key frame every second), with one thing changed:

* ``corridor-left-bag.mp4``: a white sack (cut out of ``datasets/leftobj``, a real CCTV frame) stands on
  the floor from ``EVENT_FROM`` s on: a left object (expected: one clutter event from then on).
* ``corridor-bag-removed.mp4``: the same sack stands there from the start and is gone from
  ``EVENT_FROM`` s on: a removal, which must never alert (a "ghost").
* ``corridor-fire.mp4``: flames (the largest ``fire`` box of ``datasets/fire2`` val, zoomed, shifted and
  brightened a little at random every frame, as real flames flicker) at the far end of the corridor from
  ``EVENT_FROM`` s on (expected: one fire event from then on).

Clips go to ``var/events/`` (gitignored), never into shared/; an existing clip is kept unless ``--force``.
configs/events.yaml lists them with their event windows.

    python scripts/make_event_clips.py                 # -> var/events/*.mp4
    python scripts/make_event_clips.py --seconds 20 --fps 2 --out /tmp/ev
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import av
import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SOURCE = SHARED / "clips" / "one-by-one-person-detection.mp4"
SACK = SHARED / "datasets" / "leftobj" / "images" / "train" / "krcctv__C004200_001_6120.jpg"
"""A white sack on a corridor floor (its label is the only box in the image)."""
EVENT_FROM = 20.0
"""Clip second from which the sack stands there (left-bag), is gone (bag-removed), or flames show (fire)."""
SACK_AT = (560, 400)
"""Bottom centre (pixels on the 768x432 frame) of the sack: on the floor, right of the walking line."""
SACK_HEIGHT = 110
FIRE_AT = (250, 330)
"""Bottom centre of the flames: on the floor at the far end of the corridor."""
FIRE_HEIGHT = 140
CLIPS = ("corridor-left-bag", "corridor-bag-removed", "corridor-fire")


def _read(image: Path) -> np.ndarray:
    img = cv2.imread(str(image))
    if img is None:
        raise FileNotFoundError(f"cannot read image {image}")
    return np.asarray(img)


def label_box(image: Path, cls: int | None = None) -> tuple[int, int, int, int]:
    """Pixel box (x1, y1, x2, y2) of the largest YOLO label (of class ``cls``) of ``image``."""
    lab = image.parent.parent.parent / "labels" / image.parent.name / f"{image.stem}.txt"
    rows = [list(map(float, line.split()[:5])) for line in lab.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if cls is None or int(r[0]) == cls]
    _, cx, cy, bw, bh = max(rows, key=lambda r: r[3] * r[4])
    h, w = _read(image).shape[:2]
    return (max(0, int((cx - bw / 2) * w)), max(0, int((cy - bh / 2) * h)), int((cx + bw / 2) * w),
            int((cy + bh / 2) * h))


def cutout(image: Path, box: tuple[int, int, int, int], height: int) -> np.ndarray:
    """BGRA crop of ``box`` scaled to ``height`` px, with a feathered elliptical alpha (no hard edge)."""
    x1, y1, x2, y2 = box
    crop = _read(image)[y1:y2, x1:x2]
    s = height / crop.shape[0]
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), height), interpolation=cv2.INTER_CUBIC)
    ch, cw = crop.shape[:2]
    ellipse = np.zeros((ch, cw), np.uint8)
    cv2.ellipse(ellipse, (cw // 2, ch // 2), (int(cw * 0.47), int(ch * 0.47)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(ellipse, (0, 0), max(2.0, 0.05 * min(cw, ch)))
    return np.dstack([crop, alpha])


def paste(frame: np.ndarray, obj: np.ndarray, bottom_centre: tuple[int, int]) -> np.ndarray:
    """Alpha-composite BGRA ``obj`` onto a copy of ``frame`` with its bottom centre at the point."""
    oh, ow = obj.shape[:2]
    x1, y1 = bottom_centre[0] - ow // 2, bottom_centre[1] - oh
    out = frame.copy()
    region = out[y1:y1 + oh, x1:x1 + ow].astype(np.float32)
    a = obj[:, :, 3:4].astype(np.float32) / 255.0
    out[y1:y1 + oh, x1:x1 + ow] = np.clip(region * (1 - a) + obj[:, :, :3] * a + 0.5, 0, 255).astype(np.uint8)
    return out


def flicker(obj: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One frame of flames: ``obj`` (BGRA) zoomed +-8 %, shifted +-3 % and brightened +-15 % at random."""
    h, w = obj.shape[:2]
    s = float(rng.uniform(0.92, 1.08))
    dx, dy = rng.uniform(-0.03, 0.03, 2) * (w, h)
    m = np.array([[s, 0, (1 - s) * w / 2 + dx], [0, s, (1 - s) * h + dy]], np.float32)  # grows from the base
    out = cv2.warpAffine(obj, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    gain = float(rng.uniform(0.85, 1.15))
    out[:, :, :3] = np.clip(out[:, :, :3].astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return out


def largest_fire(shared: Path = SHARED) -> Path:
    """The ``datasets/fire2`` val image with the largest ``fire`` box that is not the whole image."""
    root = shared / "datasets" / "fire2"
    best: tuple[float, Path] | None = None
    for lab in sorted((root / "labels" / "val").glob("*.txt")):
        for line in lab.read_text().splitlines():
            p = line.split()
            if len(p) >= 5 and p[0] == "0":
                area = float(p[3]) * float(p[4])
                img = root / "images" / "val" / f"{lab.stem}.jpg"
                if area < 0.5 and img.is_file() and (best is None or area > best[0]):
                    best = (area, img)
    if best is None:
        raise FileNotFoundError(f"no fire label in {root}/labels/val")
    return best[1]


class _Encoder:
    """H.264 MP4 (no B-frames, a key frame every second), written atomically."""

    def __init__(self, path: Path, width: int, height: int, fps: int) -> None:
        self.path = path
        self.tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.mp4")
        self.container = av.open(str(self.tmp), "w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"g": str(fps), "keyint_min": str(fps), "bf": "0", "sc_threshold": "0",
                               "crf": "20", "preset": "veryfast"}

    def write(self, bgr: np.ndarray) -> None:
        for pkt in self.stream.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")):
            self.container.mux(pkt)

    def close(self) -> None:
        for pkt in self.stream.encode():
            self.container.mux(pkt)
        self.container.close()
        self.tmp.replace(self.path)


def make_clips(out: Path, seconds: float = 100.0, fps: int = 5, event_from: float = EVENT_FROM,
               names: tuple[str, ...] = CLIPS) -> dict[str, Path]:
    """Write the clips ``names`` (of :data:`CLIPS`) into ``out`` in one pass over the source."""
    sack = cutout(SACK, label_box(SACK), SACK_HEIGHT)
    fire_img = largest_fire()
    fire = cutout(fire_img, label_box(fire_img, 0), FIRE_HEIGHT)
    rng = np.random.default_rng(3)
    out.mkdir(parents=True, exist_ok=True)
    paths = {n: out / f"{n}.mp4" for n in names}
    encoders: dict[str, _Encoder] = {}
    n = 0
    with av.open(str(SOURCE)) as c:
        stream = c.streams.video[0]
        step = max(1, round(float(stream.average_rate or 10) / fps))
        for i, fr in enumerate(c.decode(stream)):
            if i % step:
                continue
            t = n / fps
            if t >= seconds:
                break
            img = fr.to_ndarray(format="bgr24")
            if not encoders:
                encoders = {k: _Encoder(p, img.shape[1], img.shape[0], fps) for k, p in paths.items()}
            after = t >= event_from
            variants = {"corridor-left-bag": paste(img, sack, SACK_AT) if after else img,
                        "corridor-bag-removed": img if after else paste(img, sack, SACK_AT),
                        "corridor-fire": paste(img, flicker(fire, rng), FIRE_AT) if after else img}
            for k, enc in encoders.items():
                enc.write(variants[k])
            n += 1
    for enc in encoders.values():
        enc.close()
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "var" / "events")
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--force", action="store_true", help="Rewrite clips that exist.")
    args = ap.parse_args()
    for p in (SOURCE, SACK):
        if not p.is_file():
            print(f"missing {p}", file=sys.stderr)
            return 1
    todo = tuple(n for n in CLIPS if args.force or not (args.out / f"{n}.mp4").is_file())
    if todo:
        make_clips(args.out, args.seconds, args.fps, names=todo)
    for n in CLIPS:
        print(args.out / f"{n}.mp4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
