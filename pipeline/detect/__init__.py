"""Detection: ONNX YOLO inference (:class:`YoloDetector`), named detectors (:class:`DetectorRegistry`).

``YoloDetector`` and ``DetectorRegistry`` are imported lazily so that ``pipeline.detect.detections``
stays cheap to import (no onnxruntime) for modules that only pass ``Detections`` around.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.detect.detections import Detections

if TYPE_CHECKING:
    from pipeline.detect.registry import DetectorRegistry, ModelHashMismatch
    from pipeline.detect.yolo import YoloDetector

__all__ = ["Detections", "DetectorRegistry", "ModelHashMismatch", "YoloDetector"]


def __getattr__(name: str) -> Any:
    if name == "YoloDetector":
        from pipeline.detect.yolo import YoloDetector

        return YoloDetector
    if name in ("DetectorRegistry", "ModelHashMismatch"):
        from pipeline.detect import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'pipeline.detect' has no attribute {name!r}")
