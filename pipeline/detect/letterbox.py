"""Ultralytics-compatible letterbox: resize keeping the aspect ratio, pad with grey, map boxes back.

The arithmetic copies ``ultralytics.data.augment.LetterBox`` (``center=True``, ``scaleup=True``) and
``ultralytics.utils.ops.scale_boxes`` so that an exported model sees exactly the pixels it would see under
Ultralytics' own ``predict`` and its boxes map back to the same source coordinates.

Example:
    >>> import numpy as np
    >>> img = np.zeros((720, 1280, 3), np.uint8)
    >>> padded, info = letterbox(img, 640)
    >>> padded.shape, info.pad_y
    ((640, 640, 3), 140)
    >>> unletterbox_boxes(letterbox_boxes(np.array([[100., 50., 300., 700.]]), info), info).round(1).tolist()
    [[100.0, 50.0, 300.0, 700.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxInfo:
    """How one source image was placed in the network input.

    Attributes:
        src_h: source image height in pixels.
        src_w: source image width in pixels.
        dst_h: network input height.
        dst_w: network input width.
        new_h: height of the resized image inside the input (before padding).
        new_w: width of the resized image inside the input.
        pad_y: grey rows above the image.
        pad_x: grey columns left of the image.
    """

    src_h: int
    src_w: int
    dst_h: int
    dst_w: int
    new_h: int
    new_w: int
    pad_y: int
    pad_x: int

    @property
    def gain_x(self) -> float:
        """Input pixels per source pixel along x."""
        return self.new_w / self.src_w

    @property
    def gain_y(self) -> float:
        """Input pixels per source pixel along y."""
        return self.new_h / self.src_h


def letterbox_params(
    src_hw: tuple[int, int], new_shape: int | tuple[int, int], auto: bool = False, stride: int = 32
) -> LetterboxInfo:
    """Compute where an image of ``src_hw`` lands in a ``new_shape`` input.

    Args:
        src_hw: (height, width) of the source image.
        new_shape: square side or (height, width) of the network input.
        auto: minimal rectangle: pad only up to a multiple of ``stride`` (Ultralytics ``rect``).
        stride: model stride used by ``auto``.

    Returns:
        The placement; with ``auto`` the input shape is smaller than ``new_shape``.
    """
    h, w = int(src_hw[0]), int(src_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image of shape {src_hw}")
    nh, nw = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    r = min(nh / h, nw / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw: float = nw - new_w
    dh: float = nh - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return LetterboxInfo(h, w, new_h + top + bottom, new_w + left + right, new_h, new_w, top, left)


def letterbox(
    image: np.ndarray, new_shape: int | tuple[int, int], auto: bool = False, stride: int = 32
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize ``image`` (H, W, 3 uint8) keeping its ratio and pad it with grey 114, centred.

    Returns:
        The padded image (same channel order as the input) and its :class:`LetterboxInfo`.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    info = letterbox_params((image.shape[0], image.shape[1]), new_shape, auto, stride)
    img = image
    if (info.new_h, info.new_w) != (info.src_h, info.src_w):
        img = cv2.resize(img, (info.new_w, info.new_h), interpolation=cv2.INTER_LINEAR)
    bottom = info.dst_h - info.new_h - info.pad_y
    right = info.dst_w - info.new_w - info.pad_x
    img = cv2.copyMakeBorder(img, info.pad_y, bottom, info.pad_x, right, cv2.BORDER_CONSTANT,
                             value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    return img, info


def to_input_tensor(images_bgr: list[np.ndarray]) -> np.ndarray:
    """Stack equally sized letterboxed BGR images into an NCHW float32 RGB 0..1 tensor."""
    batch = np.stack(images_bgr)[..., ::-1]  # BGR -> RGB
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def unletterbox_boxes(xyxy: np.ndarray, info: LetterboxInfo, clip: bool = True) -> np.ndarray:
    """Map (N, 4) xyxy boxes from network input pixels back to source pixels (clipped to the image)."""
    out = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - info.pad_x) / info.gain_x
    out[:, [1, 3]] = (out[:, [1, 3]] - info.pad_y) / info.gain_y
    if clip:
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, info.src_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, info.src_h)
    return out


def letterbox_boxes(xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map (N, 4) xyxy boxes from source pixels into network input pixels (inverse of the above)."""
    out = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]] * info.gain_x + info.pad_x
    out[:, [1, 3]] = out[:, [1, 3]] * info.gain_y + info.pad_y
    return out
