"""Chinese/English scene-text OCR (PP-OCRv4 ONNX models shipped in ``rapidocr-onnxruntime``).

:class:`TextDetector` wraps :class:`rapidocr_onnxruntime.RapidOCR`:

* :meth:`TextDetector.detect_boxes_only` - DB text detection only (one ONNX pass), the cheap first pass
  that says *where* text is, with the DB box score;
* :meth:`TextDetector.detect_text` - detection + angle classification + CRNN recognition.

Both take an optional ``region`` (x1, y1, x2, y2 pixels) - typically a wall zone's bounding box - and
return boxes in the coordinates of the whole image. The engine (three onnxruntime sessions, ~16 MB of
models) loads lazily on first use. Calls are serialised by a lock because RapidOCR keeps per-call state
on the engine; run several instances for parallel OCR.

DB detection upscales the image so that its *shorter* side is at least ``det_limit_side_len`` pixels
(``det_limit_type="min"``, RapidOCR's default) which is what makes small text on a zone crop readable;
set ``det_limit_type="max"`` to cap the longer side instead (faster on big frames, misses small text).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BoxPx = tuple[int, int, int, int]


@dataclass(frozen=True)
class TextBox:
    """One line of text found in an image.

    Attributes:
        polygon: four (x, y) corners in pixels of the full image (clockwise from top-left).
        text: recognised text ("" from :meth:`TextDetector.detect_boxes_only`).
        score: recognition confidence, or the DB box score for detection-only boxes (0..1).
    """

    polygon: tuple[tuple[float, float], ...]
    text: str
    score: float

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box (x1, y1, x2, y2) in pixels."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.xyxy
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def shifted(self, dx: float, dy: float) -> TextBox:
        """Translate, e.g. from a crop back to the full image."""
        return TextBox(tuple((x + dx, y + dy) for x, y in self.polygon), self.text, self.score)

    @classmethod
    def from_points(cls, points: Any, text: str, score: float) -> TextBox:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return cls(tuple((float(x), float(y)) for x, y in pts), str(text), float(score))


def clip_region(region: Sequence[float] | None, width: int, height: int) -> BoxPx:
    """A region clipped to the image, as ints; the whole image when ``region`` is None.

    Example:
        >>> clip_region((-5, 10, 900, 50.6), 640, 480)
        (0, 10, 640, 51)
    """
    if region is None:
        return 0, 0, width, height
    x1, y1, x2, y2 = (float(v) for v in region)
    c = (max(0, min(width, int(np.floor(x1)))), max(0, min(height, int(np.floor(y1)))),
         max(0, min(width, int(np.ceil(x2)))), max(0, min(height, int(np.ceil(y2)))))
    return c


class TextDetector:
    """PP-OCR text detection and recognition through RapidOCR, lazily loaded and thread-safe.

    Args:
        threads: onnxruntime intra-op threads per session (0 = onnxruntime's default, all cores).
        det_limit_side_len: DB input size limit (see ``det_limit_type``).
        det_limit_type: ``min``: upscale so the shorter side is >= the limit; ``max``: downscale so the
            longer side is <= the limit.
        det_box_thresh: DB box score threshold.
        det_unclip_ratio: DB box dilation.
        min_score: recognised lines below this confidence are dropped.
        use_cls: run the 0/180 degree angle classifier before recognition.

    Example:
        >>> det = TextDetector(threads=1)       # nothing loaded yet
        >>> det.loaded
        False
    """

    def __init__(self, threads: int = 0, det_limit_side_len: int = 736, det_limit_type: str = "min",
                 det_box_thresh: float = 0.5, det_unclip_ratio: float = 1.6, min_score: float = 0.5,
                 use_cls: bool = False) -> None:
        if det_limit_type not in ("min", "max"):
            raise ValueError(f"det_limit_type must be 'min' or 'max', got {det_limit_type!r}")
        self.threads = int(threads)
        self.det_limit_side_len = int(det_limit_side_len)
        self.det_limit_type = det_limit_type
        self.det_box_thresh = float(det_box_thresh)
        self.det_unclip_ratio = float(det_unclip_ratio)
        self.min_score = float(min_score)
        self.use_cls = bool(use_cls)
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def _get_engine(self) -> Any:
        # Called with self._lock held.
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            threads = self.threads if self.threads > 0 else -1
            self._engine = RapidOCR(
                intra_op_num_threads=threads, inter_op_num_threads=1 if self.threads > 0 else -1,
                det_limit_side_len=self.det_limit_side_len, det_limit_type=self.det_limit_type,
                det_box_thresh=self.det_box_thresh, det_unclip_ratio=self.det_unclip_ratio,
                text_score=self.min_score,
            )
        return self._engine

    def load(self) -> TextDetector:
        """Load the models now (instead of on first use)."""
        with self._lock:
            self._get_engine()
        return self

    @staticmethod
    def _crop(image_bgr: np.ndarray, region: Sequence[float] | None) -> tuple[np.ndarray, BoxPx]:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image (H, W, 3), got shape {image_bgr.shape}")
        h, w = image_bgr.shape[:2]
        box = clip_region(region, w, h)
        x1, y1, x2, y2 = box
        return np.ascontiguousarray(image_bgr[y1:y2, x1:x2]), box

    def detect_text(self, image_bgr: np.ndarray, region: Sequence[float] | None = None) -> list[TextBox]:
        """Detect and recognise text lines.

        Args:
            image_bgr: BGR uint8 image (H, W, 3).
            region: optional (x1, y1, x2, y2) pixel crop to read; boxes come back in full-image pixels.

        Returns:
            Text lines top-to-bottom, left-to-right, with recognition score >= ``min_score``.
        """
        crop, (x1, y1, _, _) = self._crop(image_bgr, region)
        if crop.shape[0] < 4 or crop.shape[1] < 4:
            return []
        with self._lock:
            engine = self._get_engine()
            result, _ = engine(crop, use_det=True, use_cls=self.use_cls, use_rec=True,
                               box_thresh=self.det_box_thresh, unclip_ratio=self.det_unclip_ratio,
                               text_score=self.min_score)
        if not result:
            return []
        return [TextBox.from_points(pts, text, score).shifted(x1, y1) for pts, text, score in result]

    def detect_boxes_only(self, image_bgr: np.ndarray,
                          region: Sequence[float] | None = None) -> list[TextBox]:
        """DB text detection without recognition (``text`` is "", ``score`` the DB box score).

        Args:
            image_bgr: BGR uint8 image (H, W, 3).
            region: optional (x1, y1, x2, y2) pixel crop; boxes come back in full-image pixels.
        """
        crop, (x1, y1, _, _) = self._crop(image_bgr, region)
        if crop.shape[0] < 4 or crop.shape[1] < 4:
            return []
        with self._lock:
            det = self._get_engine().text_det
            det.postprocess_op.box_thresh = self.det_box_thresh
            det.postprocess_op.unclip_ratio = self.det_unclip_ratio
            pre = det.get_preprocess(max(crop.shape[0], crop.shape[1]))
            tensor = pre(crop)
            if tensor is None:
                return []
            preds = det.infer(tensor)[0]
            boxes, scores = det.postprocess_op(preds, crop.shape[:2])
            out: list[TextBox] = []
            for pts, score in zip(boxes, scores, strict=True):
                box = det.clip_det_res(det.order_points_clockwise(np.asarray(pts, np.float32)), *crop.shape[:2])
                if np.linalg.norm(box[0] - box[1]) <= 3 or np.linalg.norm(box[0] - box[3]) <= 3:
                    continue
                out.append(TextBox.from_points(box, "", float(score)).shifted(x1, y1))
        out.sort(key=lambda b: (b.xyxy[1], b.xyxy[0]))
        return out
