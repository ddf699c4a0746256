"""Record per-frame detections of a real clip as JSON, for replay tests of the analyze rules.

Uses :class:`pipeline.detect.yolo.YoloDetector` when it exists; otherwise a tiny local letterbox +
decode of the Ultralytics ONNX export (input ``images`` [b,3,h,w] RGB 0..1, output ``[b,84,anchors]``).

Usage::

    python tests/analyze/record_sequence.py /work/shared/clips/car-detection.mp4 \\
        tests/analyze/data/car_detection_real.json --every 1.0
    # no car parks in that clip; to get one, hold the frame at 27.6 s (a car at rest) for 60 s:
    python tests/analyze/record_sequence.py /work/shared/clips/car-detection.mp4 \\
        tests/analyze/data/car_detection_hold.json --every 1.0 --offset 0.6 --hold 27.6:60
    # an MP4 with that car at rest for 20 s (key frame every 12 frames), e.g. for end-to-end tests:
    python tests/analyze/record_sequence.py /work/shared/clips/car-detection.mp4 - \\
        --hold 27.6:20 --write-held-clip /tmp/held.mp4

Output format (also read by the tests)::

    {"source": "...", "width": 768, "height": 432, "class_names": {"2": "car", ...},
     "frames": [{"ts": 0.0, "xyxy": [[x1, y1, x2, y2], ...], "confidence": [...], "class_id": [...]}, ...]}
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from pipeline.detect.detections import Detections

# "cell phone": what yolo11n-coco mostly calls the top-down cars of car-detection.mp4 (kept to document it).
KEEP = {"car", "truck", "bus", "motorcycle", "bicycle", "person", "cell phone"}


class _TinyYolo:
    """Minimal ONNX YOLO11 runner: letterbox, infer, class-aware NMS, map back."""

    def __init__(self, model: str, input_size: int = 640, min_confidence: float = 0.25,
                 nms_iou: float = 0.45) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        names = self.session.get_modelmeta().custom_metadata_map.get("names", "{}")
        self.class_names: dict[int, str] = {int(k): str(v) for k, v in ast.literal_eval(names).items()}
        self.size = input_size
        self.min_confidence = min_confidence
        self.nms_iou = nms_iou

    def detect(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        r = min(self.size / h, self.size / w)
        nw, nh = round(w * r), round(h * r)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = self.session.run(None, {"images": blob})[0][0].T  # (anchors, 84)
        scores = out[:, 4:]
        cls = scores.argmax(1)
        conf = scores[np.arange(len(cls)), cls]
        keep = conf >= self.min_confidence
        out, cls, conf = out[keep], cls[keep], conf[keep]
        cx, cy, bw, bh = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
        xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        xyxy = (xyxy - np.array([px, py, px, py])) / r
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        if len(conf):
            offset = cls[:, None] * 4096.0  # class-aware NMS via offset trick
            boxes = xyxy + offset
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
            idx = cv2.dnn.NMSBoxes(xywh.tolist(), conf.tolist(), self.min_confidence, self.nms_iou)
            idx = np.asarray(idx, int).reshape(-1)
            xyxy, conf, cls = xyxy[idx], conf[idx], cls[idx]
        return Detections.from_arrays(xyxy, conf, cls, self.class_names)


def _detector(model: str) -> Any:
    try:
        from pipeline.detect.yolo import YoloDetector  # type: ignore[import-not-found,unused-ignore]

        return YoloDetector(model, threads=2)
    except ImportError:
        return _TinyYolo(model)


def _entry(det: Any, img: np.ndarray, ts: float, clip_ts: float, names: dict[str, str]) -> dict[str, Any]:
    d = det.detect(img)
    keep = [i for i, lbl in enumerate(d.labels) if lbl in KEEP]
    d = d[np.asarray(keep, dtype=np.int64)]
    for cid, lbl in zip(d.class_id.tolist(), d.labels, strict=True):
        names[str(cid)] = lbl
    return {
        "ts": round(ts, 3),
        "clip_ts": round(clip_ts, 3),
        "xyxy": [[round(float(v), 1) for v in box] for box in d.xyxy],
        "confidence": [round(float(c), 3) for c in d.confidence],
        "class_id": [int(c) for c in d.class_id],
    }


def record(clip: Path, model: str, every: float, hold_at: float | None = None,
           hold_seconds: float = 0.0, noise: float = 4.0, offset: float = 0.0) -> dict[str, Any]:
    """Detections every ``every`` clip seconds, starting at clip time ``offset``.

    With ``hold_at``, the first recorded frame at or after that clip time is held (repeated) for
    ``hold_seconds`` with per-frame Gaussian sensor noise (sigma ``noise`` grey levels, seeded), as if
    the scene froze there - e.g. a vehicle stopping; later frames get ``ts`` shifted by ``hold_seconds``
    (``clip_ts`` keeps the clip time).
    """
    det = _detector(model)
    rng = np.random.default_rng(0)
    frames: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    width = height = 0
    next_t = offset
    shift = 0.0
    held = hold_at is None
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t + 1e-6 < next_t:
                continue
            next_t += every
            img = frame.to_ndarray(format="bgr24")
            height, width = img.shape[:2]
            frames.append(_entry(det, img, t + shift, t, names))
            if not held and hold_at is not None and t + 1e-6 >= hold_at:
                held = True
                k = 1
                while k * every <= hold_seconds + 1e-6:
                    noisy = np.clip(img.astype(np.float32) + rng.normal(0.0, noise, img.shape), 0, 255)
                    frames.append(_entry(det, noisy.astype(np.uint8), t + k * every, t, names))
                    k += 1
                shift = (k - 1) * every
    return {"source": clip.name, "model": Path(model).name, "every_seconds": every, "offset": offset,
            "hold": None if hold_at is None else {"at": hold_at, "seconds": hold_seconds, "noise": noise},
            "width": width, "height": height, "class_names": names, "frames": frames}


def write_held_clip(clip: Path, out: Path, hold_at: float, hold_seconds: float, gop: int = 12) -> Path:
    """Re-encode ``clip`` with the frame at ``hold_at`` held for ``hold_seconds`` (a car at rest).

    Delegates to ``scripts/make_demo_media.py``, which makes the demo's clip the same way.
    """
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "make_demo_media.py"
    spec = importlib.util.spec_from_file_location("make_demo_media", script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with av.open(str(clip)) as src:
        fps = float(src.streams.video[0].average_rate or 25)
    return Path(mod.write_held_clip(clip, out, hold_at, hold_seconds, gop_seconds=gop / fps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("clip", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="/work/shared/models/yolo11n-coco.onnx")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between recorded frames")
    ap.add_argument("--hold", default=None, metavar="T:SECONDS",
                    help="hold the frame at clip time T for SECONDS (noisy repeats), e.g. 27.6:60")
    ap.add_argument("--offset", type=float, default=0.0, help="clip time of the first recorded frame")
    ap.add_argument("--write-held-clip", type=Path, default=None, metavar="MP4",
                    help="with --hold: only write the clip with the held frame to MP4 and exit")
    args = ap.parse_args()
    hold_at, hold_s = (float(v) for v in args.hold.split(":")) if args.hold else (None, 0.0)
    if args.write_held_clip is not None and hold_at is not None:
        print(write_held_clip(args.clip, args.write_held_clip, hold_at, hold_s))
        return
    data = record(args.clip, args.model, args.every, hold_at, hold_s, offset=args.offset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(data['frames'])} frames -> {args.out}")


if __name__ == "__main__":
    main()
