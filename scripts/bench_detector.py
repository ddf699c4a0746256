#!/usr/bin/env python
"""Micro benchmark of YoloDetector: ms per frame at several input sizes and batch sizes.

Runs the full path (letterbox, onnxruntime, decode + NMS, box mapping) on a real 768x432 CCTV frame.
Keep it short on shared machines; the defaults take about half a minute on one core.

    python scripts/bench_detector.py [--model ../shared/models/yolo11n-coco.onnx] [--threads 1]
        [--sizes 320 480 640] [--batches 1 8] [--repeats 5] [--rect]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.detect.yolo import YoloDetector  # noqa: E402
from tests.detect.frames import read_frame_at  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description="YoloDetector ms per frame")
    ap.add_argument("--model", type=Path, default=REPO.parent / "shared/models/yolo11n-coco.onnx")
    ap.add_argument("--clip", type=Path, default=REPO.parent / "shared/clips/car-detection.mp4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 480, 640])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per setting (after one warm-up)")
    ap.add_argument("--rect", action="store_true", help="minimal-rectangle letterbox (Ultralytics rect)")
    args = ap.parse_args()

    frame = read_frame_at(args.clip, 18.0)
    print(f"model {args.model.name}, frame {frame.shape[1]}x{frame.shape[0]}, threads {args.threads}, "
          f"rect {args.rect}")
    print(f"{'size':>5} {'batch':>5} {'ms/frame (median)':>18} {'min':>7} {'boxes':>5}")
    for size in args.sizes:
        det = YoloDetector(args.model, input_size=size, threads=args.threads, rect=args.rect)
        for batch in args.batches:
            frames = [frame] * batch
            n = len(det.detect_batch(frames)[0])  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                det.detect_batch(frames)
                times.append((time.perf_counter() - t) * 1000 / batch)
            print(f"{size:>5} {batch:>5} {statistics.median(times):>18.1f} {min(times):>7.1f} {n:>5}")


if __name__ == "__main__":
    main()
