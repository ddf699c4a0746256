"""Write the scripted detection sequences in ``tests/analyze/data/`` (deterministic; rerun to refresh).

Frames are 1280x720, one analysed frame per second; the no-parking zone of these scenarios is
:data:`ZONE` (normalised), i.e. x 384..896, y 396..684 px. Each file has the same format as a real
recording (see ``record_sequence.py``).

Usage::

    python tests/analyze/make_sequences.py
"""

from __future__ import annotations

import json
import random
from collections.abc import Container
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
W, H = 1280, 720
ZONE = [[0.3, 0.55], [0.7, 0.55], [0.7, 0.95], [0.3, 0.95]]
NAMES = {"0": "person", "2": "car", "7": "truck"}
CAR = (160.0, 110.0)  # w, h of a car box in px

Box = tuple[float, float, float, float]


class Seq:
    def __init__(self, seed: int, end: int) -> None:
        self.rng = random.Random(seed)
        self.frames: list[dict[str, Any]] = [
            {"ts": float(t), "xyxy": [], "confidence": [], "class_id": []} for t in range(end + 1)]

    def add(self, t: int, box: Box, conf: float | None = None, cls: int = 2, jitter: float = 2.0) -> None:
        j = [self.rng.uniform(-jitter, jitter) for _ in range(4)]
        f = self.frames[t]
        f["xyxy"].append([round(v + d, 1) for v, d in zip(box, j, strict=True)])
        f["confidence"].append(round(conf if conf is not None else self.rng.uniform(0.6, 0.9), 3))
        f["class_id"].append(cls)

    def dump(self, name: str, description: str) -> None:
        out = {"source": "scripted", "description": description, "width": W, "height": H,
               "zone": ZONE, "class_names": NAMES, "frames": self.frames}
        (DATA / name).write_text(json.dumps(out, separators=(",", ":")) + "\n", encoding="utf-8")


def car_at(cx: float, bottom: float) -> Box:
    """Car box with bottom-centre (anchor) at (cx, bottom)."""
    return (cx - CAR[0] / 2, bottom - CAR[1], cx + CAR[0] / 2, bottom)


def drive(s: Seq, t0: int, t1: int, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Car moving linearly from ``start`` to ``end`` anchor positions over frames t0..t1."""
    for t in range(t0, t1 + 1):
        a = (t - t0) / max(1, t1 - t0)
        s.add(t, car_at(start[0] + a * (end[0] - start[0]), start[1] + a * (end[1] - start[1])))


def park(s: Seq, t0: int, t1: int, at: tuple[float, float], skip: Container[int] = ()) -> None:
    for t in range(t0, t1 + 1):
        if t not in skip:
            s.add(t, car_at(*at))


def main() -> None:
    DATA.mkdir(exist_ok=True)

    s = Seq(1, 300)
    drive(s, 0, 9, (0, 560), (600, 560))
    park(s, 10, 210, (640, 560), skip={100, 101, 102, 103, 150})  # 4 missed frames (occlusion) at 100..103
    s.add(150, car_at(640, 560), conf=0.2)  # a weak detection: below min_confidence, so also a miss
    drive(s, 211, 220, (700, 560), (1280, 560))
    for t in range(120, 135):  # a person walking through the zone: not a vehicle
        s.add(t, (300 + 20 * t - 2400, 450, 340 + 20 * t - 2400, 560), cls=0)
    s.dump("park_occlusion.json", "car drives in, rests at t=10 for 200 s (frames 10..210) with a "
           "4-frame gap 100..103, leaves 211..220")

    s = Seq(2, 120)
    drive(s, 0, 30, (0, 560), (1280, 560))  # steady drive-through (~41 px/s)
    drive(s, 40, 60, (0, 500), (600, 500))  # a second car crawls in,
    park(s, 61, 66, (620, 500))  # stops 6 s (shorter than dwell), then drives on
    drive(s, 67, 80, (640, 500), (1280, 500))
    s.dump("drive_through.json", "cars crossing the zone; one stops for 6 s only")

    s = Seq(3, 260)
    park(s, 0, 250, (640, 712))  # anchor y=712 below the zone (684): roof overlaps the zone, wheels do not
    s.dump("parked_outside.json", "car parked 250 s just in front of the zone: box overlaps, anchor outside")

    s = Seq(4, 320)
    park(s, 5, 150, (500, 600))
    park(s, 40, 250, (780, 480))
    s.dump("two_cars.json", "car A parked 5..150, car B parked 40..250, both in the zone")

    s = Seq(5, 400)
    park(s, 0, 100, (640, 560))
    park(s, 140, 400, (560, 620))
    s.dump("repark.json", "car parked 0..100, leaves; another parks 140..400 in the zone")


if __name__ == "__main__":
    main()
