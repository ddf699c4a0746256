"""Checking a resident's photo by its content and re-encoding it, so what is stored is a plain JPEG.

:func:`clean_photo` accepts JPEG and PNG only, judged by the bytes (never by the file name or the declared
type). Before decoding it reads the width and height from the image header and refuses a picture larger
than the pixel cap (a small file that decodes huge). It refuses a *polyglot*: an image that also carries
markup or script (``<script``, ``<html``, ``<svg``, ``<?php``, ...) anywhere, or an archive or PDF
appended after the image's end marker. Data appended after the end that is none of those (phones put a
motion-photo video there) is allowed and dropped. The picture is then decoded with OpenCV (EXIF rotation
applied), shrunk to ``max_side`` and written as a new JPEG: EXIF, GPS and anything else in the upload are gone.

Example:
    >>> import numpy as np, cv2
    >>> ok, png = cv2.imencode(".png", np.zeros((40, 60, 3), np.uint8))
    >>> photo = clean_photo(png.tobytes(), max_pixels=10_000, max_side=30)
    >>> photo.width, photo.height, photo.jpeg[:3] == b"\\xff\\xd8\\xff"
    (30, 20, True)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MARKUP = (b"<script", b"<html", b"<!doctype", b"<?php", b"<svg", b"<iframe", b"<body", b"<object",
          b"<embed", b"javascript:")
"""Markup that makes a file a browser-readable polyglot (looked for case-insensitively in the whole file)."""
APPENDED_FORMATS = (b"PK\x03\x04", b"%PDF", b"Rar!", b"7z\xbc\xaf\x27\x1c")
"""Archives and documents refused when appended after the image's end marker."""
JPEG_QUALITY = 85
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}

PhotoRefusal = Literal["photo_type", "photo_pixels", "photo_polyglot"]


class PhotoError(ValueError):
    """The upload is not a photo this service stores.

    Attributes:
        reason: ``photo_type`` (not a readable JPEG/PNG), ``photo_pixels`` (too many pixels) or
            ``photo_polyglot`` (carries markup, script or an appended archive).
    """

    def __init__(self, reason: PhotoRefusal, message: str) -> None:
        super().__init__(message)
        self.reason: PhotoRefusal = reason


@dataclass(frozen=True)
class CleanPhoto:
    """A re-encoded photo."""

    jpeg: bytes
    width: int
    height: int
    source_type: str
    """``image/jpeg`` or ``image/png``: what was uploaded."""


def _jpeg_layout(data: bytes) -> tuple[int, int, int]:
    """``(width, height, end)`` of a baseline or progressive JPEG; ``end`` is just after its EOI marker."""
    pos, size = 2, None
    n = len(data)
    while pos < n:
        if data[pos] != 0xFF:
            raise PhotoError("photo_type", "broken JPEG: no marker where one must be")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            if size is None:
                break
            return size[0], size[1], pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if pos + 2 > n:
            break
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2:
            break
        if marker in _SOF and pos + 7 <= n:
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
            size = (width, height)
        pos += length
        if marker == 0xDA:  # entropy-coded data up to the next marker (0xFF00 is a stuffed 0xFF; RSTn skip)
            while True:
                pos = data.find(b"\xff", pos)
                if pos < 0 or pos + 1 >= n:
                    pos = n
                    break
                nxt = data[pos + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                    pos += 1 if nxt == 0xFF else 2
                    continue
                break
    raise PhotoError("photo_type", "broken JPEG: no image size or no end marker")


def _png_layout(data: bytes) -> tuple[int, int, int]:
    """``(width, height, end)`` of a PNG; ``end`` is just after its IEND chunk."""
    pos, size = 8, None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR" and length >= 8 and pos + 16 <= len(data):
            size = struct.unpack(">II", data[pos + 8:pos + 16])
        pos += 12 + length
        if kind == b"IEND" and size is not None and pos <= len(data):
            return size[0], size[1], pos
    raise PhotoError("photo_type", "broken PNG: no IHDR or no IEND chunk")


def _check_polyglot(data: bytes, end: int) -> None:
    lowered = data.lower()
    for token in MARKUP:
        if token in lowered:
            raise PhotoError("photo_polyglot", f"the file carries markup ({token.decode()!r}): not a plain photo")
    trailer = data[end:]
    for magic in APPENDED_FORMATS:
        if magic in trailer:
            raise PhotoError("photo_polyglot", "the file has an archive or document appended after the image")


def clean_photo(data: bytes, max_pixels: int, max_side: int) -> CleanPhoto:
    """Check ``data`` (see the module docstring) and return it re-encoded as a JPEG.

    Args:
        data: the uploaded bytes.
        max_pixels: largest width x height accepted (read from the header, before decoding).
        max_side: the long side of the stored JPEG at most.

    Raises:
        PhotoError: with the reason the photo is refused.
    """
    if data.startswith(JPEG_MAGIC):
        source_type = "image/jpeg"
        width, height, end = _jpeg_layout(data)
    elif data.startswith(PNG_MAGIC):
        source_type = "image/png"
        width, height, end = _png_layout(data)
    else:
        raise PhotoError("photo_type", "not a JPEG or PNG photo (judged by its content)")
    if width < 1 or height < 1:
        raise PhotoError("photo_type", "the image header gives no size")
    if width * height > max_pixels:
        raise PhotoError("photo_pixels", f"{width}x{height} is more than {max_pixels} pixels")
    _check_polyglot(data, end)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise PhotoError("photo_type", "the photo cannot be decoded")
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise PhotoError("photo_type", "the photo cannot be re-encoded")
    h, w = image.shape[:2]
    return CleanPhoto(jpeg=buf.tobytes(), width=w, height=h, source_type=source_type)
