"""Fixtures of the detect tests: the shared COCO model, one session-wide detector, real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.detect.yolo import YoloDetector

VAL_IMAGE = "datasets/vehicles/images/val/0verwritten__image-031.jpg"


@pytest.fixture(scope="session")
def coco_model(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "yolo11n-coco.onnx"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path


@pytest.fixture(scope="session")
def detector(coco_model: Path) -> YoloDetector:
    """One CPU session (1 thread) shared by the tests; detectors are thread-safe and stateless."""
    return YoloDetector(coco_model, input_size=640, threads=1)


@pytest.fixture(scope="session")
def cars_image(shared_dir: Path) -> np.ndarray:
    """A 640x640 real photo with four cars (one large, three small)."""
    img = cv2.imread(str(shared_dir / VAL_IMAGE))
    assert img is not None
    return img
