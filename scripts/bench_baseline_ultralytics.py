#!/usr/bin/env python3
"""Ultralytics baseline of the stream benchmark: multi-stream ``predict`` on a ``.streams`` file, measured.

Run it with the Ultralytics venv (see docs/detect.md); ``scripts/bench_streams.py`` does that for you::

    /tmp/ultra-venv/bin/python scripts/bench_baseline_ultralytics.py --streams cams.streams \\
        --model ../shared/models/yolo11n-coco.onnx --imgsz 320 --vid-stride 50 --duration 30 --out r.json

It runs ``YOLO(model).predict(source=<file>.streams, stream=True, vid_stride=..., imgsz=..., device="cpu")``
as documented, with three benchmark-only additions that do not change what Ultralytics computes:

* offline set-up (``offline_ultralytics_env`` + ``torchvision_stub`` from ``record_yolo_reference.py``);
* ``OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp`` so OpenCV pulls RTSP over TCP like gridwatch does
  (FFmpeg's default tries UDP first, which loses packets when the reader falls behind);
* ``cv2.VideoCapture`` is replaced by a subclass counting ``grab()`` calls, to measure how many frames per
  second each of Ultralytics' ``LoadStreams`` threads actually reads (it must read all 25 to keep up).

Prints ``WINDOW_START`` / ``WINDOW_END`` at the edges of the measured window (the parent samples the RTSP
server's CPU then) and writes one JSON object to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

CAPTURES: list[object] = []


def install_counting_capture() -> None:
    """Make ``cv2.VideoCapture`` count ``grab()`` calls per capture (Ultralytics looks it up at call time)."""
    import cv2

    class CountingCapture(cv2.VideoCapture):  # type: ignore[misc,name-defined]
        """``cv2.VideoCapture`` that counts the frames grabbed (each grab demuxes and decodes one frame)."""

        def __init__(self, *a: object) -> None:
            super().__init__(*a)
            self.grabs = 0
            CAPTURES.append(self)

        def grab(self) -> bool:
            self.grabs += 1
            return bool(super().grab())

        def read(self, *a: object) -> tuple[bool, object]:
            self.grabs += 1
            return super().read(*a)  # type: ignore[no-any-return]

    cv2.VideoCapture = CountingCapture


def snapshot(results: list[int]) -> dict[str, object]:
    """Time, process CPU seconds, grabs per capture and results so far."""
    return {"t": time.monotonic(), "cpu": sum(os.times()[:2]),
            "grabs": [getattr(c, "grabs", 0) for c in CAPTURES], "results": results[0]}


def main() -> int:
    """Run predict on the streams and measure a window after a warm-up."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=Path, required=True, help=".streams file, one RTSP URL a line")
    ap.add_argument("--model", type=Path, required=True, help="local .onnx or .pt file")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--vid-stride", type=int, default=50)
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds after the first result")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--start-timeout", type=float, default=180.0, help="give up if no result by then")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from record_yolo_reference import offline_ultralytics_env, torchvision_stub

    offline_ultralytics_env()
    torchvision_stub()
    install_counting_capture()
    from ultralytics import YOLO

    n = len(args.streams.read_text().split())
    results = [0]
    first = threading.Event()
    t_launch = time.monotonic()

    def watchdog() -> None:
        if not first.wait(args.start_timeout):
            args.out.write_text(json.dumps({"error": f"no result within {args.start_timeout}s"}))
            os._exit(3)
        time.sleep(args.warmup)
        s0 = snapshot(results)
        print("WINDOW_START", flush=True)
        time.sleep(args.duration)
        s1 = snapshot(results)
        print("WINDOW_END", flush=True)
        dt = float(s1["t"]) - float(s0["t"])  # type: ignore[arg-type]
        fps = [(b - a) / dt for a, b in zip(s0["grabs"], s1["grabs"], strict=False)]  # type: ignore[call-overload]
        per_stream = (int(s1["results"]) - int(s0["results"])) / n / dt  # type: ignore[call-overload]
        row = {"window_s": dt, "cores": (float(s1["cpu"]) - float(s0["cpu"])) / dt,  # type: ignore[arg-type]
               "grab_fps_mean": sum(fps) / max(1, len(fps)), "grab_fps_min": min(fps, default=0.0),
               "analysed_per_stream_s": per_stream, "batches_per_s": per_stream,
               "startup_s": t_first[0] - t_launch, "captures": len(CAPTURES), "streams": n,
               "imgsz": args.imgsz, "vid_stride": args.vid_stride, "model": str(args.model)}
        args.out.write_text(json.dumps(row))
        # LoadStreams.close() joins every reader thread with a 5 s timeout each; skip it.
        os._exit(0)

    t_first = [0.0]
    threading.Thread(target=watchdog, daemon=True).start()
    model = YOLO(str(args.model), task="detect")
    for _ in model.predict(source=str(args.streams), stream=True, vid_stride=args.vid_stride, imgsz=args.imgsz,
                           device="cpu", verbose=False):
        if not first.is_set():
            t_first[0] = time.monotonic()
            first.set()
        results[0] += 1
    time.sleep(args.warmup + args.duration + 5)  # streams ended early: let the watchdog report
    return 1


if __name__ == "__main__":
    sys.exit(main())
