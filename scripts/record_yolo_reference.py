#!/usr/bin/env python
"""Record Ultralytics' own YOLO predictions as the reference for tests/detect/test_reference.py.

Runs ``YOLO(<local file>).predict`` with the same settings as ``YoloDetector`` (conf 0.25, iou 0.45,
imgsz 640, square letterbox ``rect=False``, CPU) on a few real images and writes boxes, scores and
classes to ``tests/detect/data/yolo11n_reference.json``, once for the PyTorch checkpoint (``.pt``, the
independent reference) and once for the ONNX export run by Ultralytics (``.onnx``, same weights as ours).

Needs torch + ultralytics, which the project itself does not: see docs/detect.md for the install recipe
(CPU torch wheel, ``ultralytics --no-deps``, no torchvision). Run from the repository root:

    YOLO_OFFLINE=1 /tmp/ultra-venv/bin/python scripts/record_yolo_reference.py [--shared ../shared]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.detect.frames import load_image, pixel_hash  # noqa: E402

CONF, IOU, IMGSZ = 0.25, 0.45, 640
SOURCES: list[dict[str, object]] = [
    {"name": "car-detection@18s", "path": "clips/car-detection.mp4", "t": 18.0},
    {"name": "person-detection@30s", "path": "clips/one-by-one-person-detection.mp4", "t": 30.0},
    {"name": "val-yuskun-102557", "path": "datasets/vehicles/images/val/yuskun__102557.jpg"},
    {"name": "val-0verwritten-031", "path": "datasets/vehicles/images/val/0verwritten__image-031.jpg"},
]


def offline_ultralytics_env() -> None:
    """Point Ultralytics at a private settings dir holding a font, so it never downloads one."""
    if "YOLO_CONFIG_DIR" not in os.environ:
        cfg = Path(tempfile.mkdtemp(prefix="yolo-cfg-"))
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    if not (font_dir / "Arial.ttf").exists():
        import matplotlib

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copy(src, font_dir / "Arial.ttf")
    os.environ.setdefault("YOLO_OFFLINE", "1")


def torchvision_stub() -> None:
    """Stand in for torchvision, which has no CPU wheel here (PyPI's is built against CUDA torch).

    Ultralytics reads torchvision's version at import and imports it before a ``.pt`` warm-up to use its
    NMS; detection predict/val/train need nothing else from it. The stub's ``ops.nms`` is Ultralytics' own
    pure-torch greedy NMS. A working real torchvision is used when present.
    """
    try:
        import torchvision  # noqa: F401

        return
    except Exception:
        for k in [k for k in sys.modules if k.startswith("torchvision")]:
            del sys.modules[k]
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "torchvision":
            return "0.28.0"  # the release paired with torch 2.13
        return real_version(name)

    importlib.metadata.version = version  # type: ignore[assignment]
    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.28.0"  # type: ignore[attr-defined]
    ops = types.ModuleType("torchvision.ops")

    def nms(boxes, scores, iou_threshold):  # type: ignore[no-untyped-def]
        from ultralytics.utils.nms import TorchNMS

        return TorchNMS.nms(boxes, scores, iou_threshold)

    ops.nms = nms  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops


def predict(model_path: Path, images: list) -> list[dict[str, list]]:  # type: ignore[type-arg]
    from ultralytics import YOLO

    model = YOLO(str(model_path), task="detect")
    out = []
    for img in images:
        r = model.predict(img, conf=CONF, iou=IOU, imgsz=IMGSZ, rect=False, device="cpu", verbose=False)[0]
        data = r.boxes.data.cpu().numpy()
        out.append({
            "xyxy": [[round(float(v), 3) for v in row[:4]] for row in data],
            "score": [round(float(v), 5) for v in data[:, 4]],
            "class_id": [int(v) for v in data[:, 5]],
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=REPO / "tests/detect/data/yolo11n_reference.json")
    args = ap.parse_args()
    offline_ultralytics_env()
    torchvision_stub()
    import torch
    import ultralytics

    torch.set_num_threads(1)
    images = [load_image(args.shared, s) for s in SOURCES]
    results = {fmt: predict(args.shared / f"models/yolo11n-coco.{fmt}", images) for fmt in ("pt", "onnx")}
    doc = {
        "generator": "scripts/record_yolo_reference.py",
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "model": "models/yolo11n-coco.{pt,onnx}",
        "settings": {"conf": CONF, "iou": IOU, "imgsz": IMGSZ, "rect": False},
        "images": [
            {**s, "shape": list(img.shape), "pixels_sha256_16": pixel_hash(img),
             "pt": results["pt"][i], "onnx": results["onnx"][i]}
            for i, (s, img) in enumerate(zip(SOURCES, images, strict=True))
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for e in doc["images"]:
        print(f"{e['name']}: pt {len(e['pt']['score'])} boxes, onnx {len(e['onnx']['score'])} boxes")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
