"""TextDetector (RapidOCR PP-OCRv4) on synthetic flyers composited onto real and generated walls."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from pipeline.analyze.text_extract import find_phone_numbers
from pipeline.detect.ocr import TextBox, TextDetector, clip_region
from tests.scripts_loader import load_script

pytest.importorskip("rapidocr_onnxruntime")

REPO = Path(__file__).resolve().parents[2]
WALLS = REPO / "tests" / "data" / "walls"


def load_make_flyers() -> ModuleType:
    """scripts/make_flyers.py as a module."""
    return load_script("make_flyers")


@pytest.fixture(scope="module")
def ocr() -> TextDetector:
    return TextDetector(threads=1)


@pytest.fixture(scope="module")
def mf() -> ModuleType:
    mod = load_make_flyers()
    if mod.find_cjk_font() is None:
        pytest.skip("no CJK font (apt-get install fonts-droid-fallback or fonts-noto-cjk)")
    return mod


@pytest.fixture(scope="module")
def corridor_wall(shared_dir: Path, mf: ModuleType) -> np.ndarray:
    clip = shared_dir / "clips" / "one-by-one-person-detection.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} missing")
    frame: np.ndarray = mf.read_frame(clip, 0.0)
    return frame


def test_textbox_geometry() -> None:
    b = TextBox(((10.0, 20.0), (50.0, 22.0), (49.0, 40.0), (9.0, 38.0)), "x", 0.9)
    assert b.xyxy == (9.0, 20.0, 50.0, 40.0)
    assert b.area == 41.0 * 20.0
    assert b.shifted(5, 1).xyxy == (14.0, 21.0, 55.0, 41.0)
    assert clip_region(None, 64, 48) == (0, 0, 64, 48)


def test_lazy_and_validation() -> None:
    det = TextDetector()
    assert not det.loaded
    with pytest.raises(ValueError):
        TextDetector(det_limit_type="mid")
    with pytest.raises(ValueError):
        det.detect_boxes_only(np.zeros((10, 10), np.uint8))
    assert not det.loaded


def test_blank_wall_has_no_text(ocr: TextDetector) -> None:
    wall = np.full((200, 300, 3), 215, np.uint8)
    assert ocr.detect_text(wall) == []
    assert ocr.detect_boxes_only(wall) == []
    assert ocr.detect_text(wall, (0, 0, 2, 2)) == []  # tiny region


def test_committed_sample(ocr: TextDetector) -> None:
    """A flyer on a generated wall, stored in the repo: runs without fonts or shared data."""
    img = cv2.imread(str(WALLS / "flyer_on_plaster.jpg"))
    truth = json.loads((WALLS / "flyer_on_plaster.json").read_text(encoding="utf-8"))
    assert img is not None
    lines = ocr.detect_text(img)
    assert truth["phone"] in find_phone_numbers("\n".join(t.text for t in lines))
    x1, y1, x2, y2 = truth["box"]
    assert all(x1 - 5 <= (t.xyxy[0] + t.xyxy[2]) / 2 <= x2 + 5 for t in lines)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phone_on_real_wall(ocr: TextDetector, mf: ModuleType, corridor_wall: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    flyer, truth = mf.make_flyer(rng, width=300, qr=False)
    quad = mf.random_quad(rng, mf.CORRIDOR_WALL, flyer.shape[1] / flyer.shape[0], 130)
    image = mf.composite(corridor_wall, flyer, quad, seed=seed)
    lines = ocr.detect_text(image, mf.CORRIDOR_WALL)
    text = "\n".join(t.text for t in lines)
    assert truth["phone"] in find_phone_numbers(text), text
    qx1, qy1 = quad.min(0)
    qx2, qy2 = quad.max(0)
    for t in lines:  # boxes are in full-frame pixels, on the flyer
        cx, cy = (t.xyxy[0] + t.xyxy[2]) / 2, (t.xyxy[1] + t.xyxy[3]) / 2
        assert qx1 - 4 <= cx <= qx2 + 4 and qy1 - 4 <= cy <= qy2 + 4
    boxes = ocr.detect_boxes_only(image, mf.CORRIDOR_WALL)
    assert boxes and all(b.text == "" and 0 < b.score <= 1 for b in boxes)
    assert len(boxes) >= len(lines) - 1


def test_clean_real_wall(ocr: TextDetector, mf: ModuleType, corridor_wall: np.ndarray) -> None:
    assert ocr.detect_text(corridor_wall, mf.CORRIDOR_WALL) == []


def test_thread_safe(ocr: TextDetector) -> None:
    img = cv2.imread(str(WALLS / "flyer_on_plaster.jpg"))
    assert img is not None
    expected = [t.text for t in ocr.detect_text(img)]
    results: list[list[str]] = []

    def work() -> None:
        results.append([t.text for t in ocr.detect_text(img)])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3
