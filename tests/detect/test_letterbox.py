"""Letterbox geometry matches Ultralytics and maps boxes back to source pixels."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.letterbox import (
    PAD_VALUE,
    letterbox,
    letterbox_boxes,
    letterbox_params,
    to_input_tensor,
    unletterbox_boxes,
)

SHAPES = [(720, 1280), (1280, 720), (432, 768), (640, 640), (100, 1000), (1000, 37), (7, 3000), (480, 640)]


@pytest.mark.parametrize("hw", SHAPES)
@pytest.mark.parametrize("size", [320, 640])
def test_square_geometry(hw: tuple[int, int], size: int) -> None:
    info = letterbox_params(hw, size)
    assert (info.dst_h, info.dst_w) == (size, size)
    # the long side fills the input; padding is centred (differs by at most one pixel side to side)
    assert max(info.new_h, info.new_w) == size
    assert abs((size - info.new_w - info.pad_x) - info.pad_x) <= 1
    assert abs((size - info.new_h - info.pad_y) - info.pad_y) <= 1
    assert info.new_h >= 1 and info.new_w >= 1


@pytest.mark.parametrize("hw", SHAPES)
def test_rect_mode_pads_to_stride(hw: tuple[int, int]) -> None:
    info = letterbox_params(hw, 640, auto=True, stride=32)
    assert info.dst_h % 32 == 0 and info.dst_w % 32 == 0
    assert max(info.dst_h, info.dst_w) == 640
    assert info.dst_h - info.new_h < 32 and info.dst_w - info.new_w < 32


@pytest.mark.parametrize("hw", SHAPES)
def test_box_round_trip(hw: tuple[int, int]) -> None:
    h, w = hw
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (50, 2)) * [w, h]
    b = rng.uniform(0, 1, (50, 2)) * [w, h]
    boxes = np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=1).astype(np.float32)
    info = letterbox_params(hw, 640)
    back = unletterbox_boxes(letterbox_boxes(boxes, info), info)
    np.testing.assert_allclose(back, boxes, atol=1e-2 * max(1.0, max(h, w) / 640))


@pytest.mark.parametrize("hw", [(720, 1280), (1280, 720), (432, 768), (300, 200)])
def test_drawn_rectangle_lands_where_predicted(hw: tuple[int, int]) -> None:
    """A white rectangle drawn on the source shows up in the padded input where the mapping says."""
    h, w = hw
    img = np.zeros((h, w, 3), np.uint8)
    box = np.array([[w * 0.2, h * 0.3, w * 0.6, h * 0.9]], np.float32)
    x1, y1, x2, y2 = box[0].astype(int)
    img[y1:y2, x1:x2] = 255
    padded, info = letterbox(img, 640)
    assert padded.shape == (640, 640, 3)
    ys, xs = np.nonzero(padded[..., 0] > 128)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    np.testing.assert_allclose(found, letterbox_boxes(box, info)[0], atol=1.5)
    # mapping the found box back recovers the drawn one to within a source pixel or two
    np.testing.assert_allclose(unletterbox_boxes(found[None], info)[0], box[0], atol=2.5 / info.gain_x)
    # the border is Ultralytics grey, the image area is not
    if info.pad_y:
        assert (padded[: info.pad_y] == PAD_VALUE).all()
    if info.pad_x:
        assert (padded[:, : info.pad_x] == PAD_VALUE).all()


def test_unletterbox_clips_to_source() -> None:
    info = letterbox_params((360, 640), 640)
    out = unletterbox_boxes(np.array([[-50, 0, 700, 640]], np.float32), info)
    assert out.tolist() == [[0.0, 0.0, 640.0, 360.0]]


def test_tensor_is_rgb_nchw_unit_range() -> None:
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_input_tensor([img, img])
    assert t.shape == (2, 3, 4, 6) and t.dtype == np.float32
    assert t[:, 2].min() == 1.0 and t[:, 0].max() == 0.0  # blue ends up in the last (B of RGB) plane


def test_rejects_bad_images() -> None:
    with pytest.raises(ValueError):
        letterbox(np.zeros((10, 10), np.uint8), 640)
    with pytest.raises(ValueError):
        letterbox_params((0, 10), 640)
