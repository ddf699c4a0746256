"""YoloDetector on the real COCO model: single, batch, regions, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.detect.detections import Detections
from pipeline.detect.nms import box_iou
from pipeline.detect.yolo import YoloDetector


def _assert_same(a: Detections, b: Detections, atol: float = 0.05) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=atol)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)


def test_class_names_from_metadata(detector: YoloDetector) -> None:
    names = detector.class_names
    assert len(names) == 80 and names[0] == "person" and names[2] == "car"


def test_detect_finds_cars_in_image_coordinates(detector: YoloDetector, cars_image: np.ndarray) -> None:
    dets = detector.detect(cars_image)
    assert dets.labels.count("car") >= 3
    assert dets.xyxy.dtype == np.float32 and dets.class_id.dtype == np.int64
    h, w = cars_image.shape[:2]
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert (dets.confidence > detector.min_confidence).all()
    assert dets.class_names[2] == "car"


@pytest.mark.parametrize("scale", [(1.0, 1.0), (1.5, 0.75), (0.5, 0.5)])
def test_batch_equals_single(
    detector: YoloDetector, cars_image: np.ndarray, scale: tuple[float, float]
) -> None:
    other = cv2.resize(cars_image, None, fx=scale[0], fy=scale[1])
    flipped = np.ascontiguousarray(cars_image[:, ::-1])
    images = [cars_image, other, flipped]
    batch = detector.detect_batch(images)
    assert len(batch) == 3
    for img, got in zip(images, batch, strict=True):
        _assert_same(got, detector.detect(img))
    assert detector.detect_batch([]) == []


def test_empty_frame_gives_empty_detections(detector: YoloDetector) -> None:
    dets = detector.detect(np.full((360, 640, 3), 114, np.uint8))
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4)


def test_detect_regions_maps_crops_back(detector: YoloDetector, cars_image: np.ndarray) -> None:
    """Identical pixels pasted into a big frame: region results equal plain results shifted."""
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    x, y = 1100, 300
    canvas[y : y + 640, x : x + 640] = cars_image
    got = detector.detect_regions(canvas, [(x, y, x + 640, y + 640)])
    _assert_same(got, detector.detect(cars_image).shifted(x, y))


def test_detect_regions_finds_small_distant_cars(detector: YoloDetector, cars_image: np.ndarray) -> None:
    small = cv2.resize(cars_image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    x, y = 1300, 600
    sh, sw = small.shape[:2]
    canvas[y : y + sh, x : x + sw] = small
    zone = (x - 20, y - 20, x + sw + 20, y + sh + 20)
    whole = detector.detect(canvas).with_classes({"car"})
    cropped = detector.detect_regions(canvas, [zone, (0, 0, 1, 1)]).with_classes({"car"})  # 2nd: degenerate
    assert len(cropped) > len(whole)
    assert len(cropped) >= 3
    # every box lies inside the zone, and the largest car is where the scaled-down original puts it
    assert (cropped.xyxy[:, 0] >= zone[0]).all() and (cropped.xyxy[:, 2] <= zone[2]).all()
    assert (cropped.xyxy[:, 1] >= zone[1]).all() and (cropped.xyxy[:, 3] <= zone[3]).all()
    ref = detector.detect(cars_image).with_classes({"car"})
    big = ref.xyxy[np.argmax(ref.confidence)] * 0.3 + np.array([x, y, x, y], np.float32)
    assert box_iou(big.astype(np.float64), cropped.xyxy.astype(np.float64)).max() > 0.9


def test_detect_regions_merges_overlapping_regions(detector: YoloDetector, cars_image: np.ndarray) -> None:
    one = detector.detect_regions(cars_image, [(0, 0, 640, 640)])
    two = detector.detect_regions(cars_image, [(0, 0, 640, 640), (0, 0, 640, 640)])
    _assert_same(two, one)
    assert len(detector.detect_regions(cars_image, [])) == 0


def test_rect_mode_close_to_square(coco_model: Path, cars_image: np.ndarray) -> None:
    wide = cv2.copyMakeBorder(cars_image, 0, 0, 300, 300, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    rect = YoloDetector(coco_model, threads=1, rect=True)
    square = YoloDetector(coco_model, threads=1)
    a, b = rect.detect(wide), square.detect(wide)
    assert abs(len(a) - len(b)) <= 1
    for box in b.xyxy[b.confidence > 0.5]:
        assert box_iou(box.astype(np.float64), a.xyxy.astype(np.float64)).max() > 0.8


def test_missing_model_raises_with_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        YoloDetector(missing)


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all" * 10, b"\x08\x07\x12\x04junk"])
def test_corrupt_model_raises_value_error_with_path(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=r"corrupt\.onnx"):
        YoloDetector(bad)


def test_truncated_model_raises(tmp_path: Path, coco_model: Path) -> None:
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(coco_model.read_bytes()[:200_000])
    with pytest.raises(ValueError, match=r"truncated\.onnx"):
        YoloDetector(bad)


def test_bad_input_size(coco_model: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        YoloDetector(coco_model, input_size=500)


def test_unavailable_provider_is_skipped(coco_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        det = YoloDetector(coco_model, threads=1,
                           providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])
    assert det.providers == ["CPUExecutionProvider"]
    assert "NoSuchExecutionProvider" in caplog.text
