#!/usr/bin/env python3
"""Make the demo's "car parks" clip from ../shared/clips/car-detection.mp4 (PyAV only, no ffmpeg needed).

No car stops in the shared clip (they drive through), so the demo holds the frame at 27.6 s, where a car
sits at the bottom-left, for 20 s with light sensor noise: a parked car, as a fixed camera would see it.
The result is H.264 without B-frames and with a key frame every second, like a typical CCTV stream.

    python scripts/make_demo_media.py                     # -> var/demo/car-parks.mp4
    python scripts/make_demo_media.py --src X.mp4 --out Y.mp4 --hold 27.6:20 --gop-seconds 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "clips" / "car-detection.mp4"
DEFAULT_OUT = REPO / "var" / "demo" / "car-parks.mp4"


def write_held_clip(src: Path, out: Path, hold_at: float = 27.6, hold_seconds: float = 20.0,
                    gop_seconds: float = 1.0, noise: float = 2.0, start: float = 0.0) -> Path:
    """Re-encode ``src`` from ``start`` s with the frame at ``hold_at`` repeated for ``hold_seconds`` (written
    atomically)."""
    rng = np.random.default_rng(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".part.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as dst:
        ins = inp.streams.video[0]
        rate = ins.average_rate or 25
        gop = max(1, round(float(rate) * gop_seconds))
        outs = dst.add_stream("libx264", rate=rate)
        outs.width, outs.height, outs.pix_fmt = ins.width, ins.height, "yuv420p"
        outs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "0",
                        "preset": "veryfast"}
        held = False
        for frame in inp.decode(ins):
            t = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else 0.0
            if t + 1e-6 < start:
                continue
            img = frame.to_ndarray(format="bgr24")
            copies = [img]
            if not held and t + 1e-6 >= hold_at:
                held = True
                copies += [np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
                           for _ in range(int(round(hold_seconds * float(rate))))]
            for im in copies:
                for pkt in outs.encode(av.VideoFrame.from_ndarray(im, format="bgr24")):
                    dst.mux(pkt)
        for pkt in outs.encode():
            dst.mux(pkt)
    tmp.replace(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--hold", default="27.6:20", metavar="T:SECONDS")
    ap.add_argument("--gop-seconds", type=float, default=1.0)
    args = ap.parse_args()
    if not args.src.is_file():
        print(f"source clip not found: {args.src} (pass --src with any video of a parking area)",
              file=sys.stderr)
        return 0  # the demo still runs; it reports the missing camera source
    if args.out.is_file() and args.out.stat().st_mtime >= args.src.stat().st_mtime:
        print(args.out)
        return 0
    at, seconds = (float(v) for v in args.hold.split(":"))
    print(write_held_clip(args.src, args.out, at, seconds, args.gop_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
