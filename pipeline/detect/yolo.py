"""ONNX Runtime inference for Ultralytics-exported YOLO detection models (YOLOv8 / YOLO11 style heads).

The model takes ``images [batch, 3, H, W]`` (RGB, 0..1, letterboxed with grey 114) and returns
``output0 [batch, 4 + nc, anchors]`` (cx, cy, w, h in input pixels, then nc class scores, no NMS in the
graph). Class names come from the ONNX metadata key ``names`` (a Python dict literal). Pre- and
post-processing reproduce Ultralytics' ``predict`` so that results match it (see ``docs/detect.md``).
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.detect.detections import Detections
from pipeline.detect.letterbox import LetterboxInfo, letterbox, to_input_tensor, unletterbox_boxes
from pipeline.detect.nms import batched_nms, decode_yolo

log = logging.getLogger(__name__)

Region = tuple[int, int, int, int]


def _parse_names(meta: dict[str, str], nc: int | None) -> dict[int, str]:
    raw = meta.get("names")
    if raw:
        try:
            parsed = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"ONNX metadata 'names' is not a Python literal: {raw[:80]!r}") from e
        if isinstance(parsed, dict):
            return {int(k): str(v) for k, v in parsed.items()}
        if isinstance(parsed, list | tuple):
            return {i: str(v) for i, v in enumerate(parsed)}
    return {i: str(i) for i in range(nc or 0)}


def _choose_providers(requested: Sequence[str] | None) -> list[str]:
    available = ort.get_available_providers()
    wanted = list(requested) if requested else ["CPUExecutionProvider"]
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if missing:
        log.warning("onnxruntime providers not available here, skipped: %s (available: %s)",
                    ", ".join(missing), ", ".join(available))
    return chosen or ["CPUExecutionProvider"]


class YoloDetector:
    """A YOLO detector on onnxruntime; thread-safe (one session, ``run`` may be called concurrently).

    Args:
        model_path: the ``.onnx`` file exported by Ultralytics (``format="onnx"``, dynamic or fixed shape).
        input_size: square letterbox side in pixels (multiple of 32); ignored in favour of the model's
            own size when the graph has a fixed spatial shape that differs (an error is raised).
        providers: onnxruntime execution providers in order of preference; unavailable ones are
            skipped with a warning. ``None`` = CPU.
        threads: intra-op threads (0 = onnxruntime's default, all cores).
        nms_iou: IoU threshold of the class-aware NMS.
        min_confidence: score floor; boxes scoring at or below it are dropped.
        rect: letterbox to the smallest stride-multiple rectangle instead of a square (Ultralytics
            ``rect``; faster on wide frames, used only when every image in a batch has the same shape).

    Raises:
        FileNotFoundError: the model file does not exist.
        ValueError: the file is not a loadable ONNX model, or not a YOLO detect head.

    Example:
        >>> import cv2
        >>> det = YoloDetector("../shared/models/yolo11n-coco.onnx", input_size=640, threads=1)
        >>> det.class_names[2]
        'car'
        >>> frame = cv2.imread("../shared/datasets/vehicles/images/val/yuskun__102557.jpg")
        >>> dets = det.detect(frame)
        >>> bool((dets.xyxy[:, 2] <= frame.shape[1]).all()) and "car" in dets.labels
        True
        >>> zone = det.detect_regions(frame, [(0, 0, frame.shape[1] // 2, frame.shape[0])])
        >>> bool((zone.xyxy[:, 0] < frame.shape[1] // 2).all())
        True
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        input_size: int = 640,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        nms_iou: float = 0.45,
        min_confidence: float = 0.25,
        *,
        rect: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"detector model file not found: {self.model_path}")
        if input_size <= 0 or input_size % 32:
            raise ValueError(f"input_size must be a positive multiple of 32, got {input_size}")
        self.nms_iou = float(nms_iou)
        self.min_confidence = float(min_confidence)
        self.rect = rect
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads)
        opts.log_severity_level = 3
        self.providers = _choose_providers(providers)
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                                providers=self.providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise ValueError(f"cannot load ONNX model {self.model_path}: {e}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not outputs or len(outputs[0].shape) != 3:
            raise ValueError(f"{self.model_path} is not a YOLO detect model: inputs "
                             f"{[i.shape for i in inputs]}, outputs {[o.shape for o in outputs]}")
        self._input_name = inputs[0].name
        self._output_name = outputs[0].name
        b, _, h, w = inputs[0].shape
        self._static_batch = b if isinstance(b, int) else None
        self.rect = rect and not isinstance(h, int)
        if isinstance(h, int) and isinstance(w, int) and (h, w) != (input_size, input_size):
            raise ValueError(f"{self.model_path} has a fixed input of {h}x{w}; set input_size={h}")
        self.input_size = int(input_size)
        meta = self.session.get_modelmeta().custom_metadata_map
        # NMS-free exports (end2end=True, e.g. YOLO26) give [batch, max_det, 6] = xyxy, score, class.
        self._end2end = meta.get("end2end", "False") == "True"
        nc_dim = outputs[0].shape[1]
        nc = nc_dim - 4 if isinstance(nc_dim, int) and not self._end2end else None
        self._names = _parse_names(dict(meta), nc)
        self.stride = int(ast.literal_eval(meta["stride"])) if meta.get("stride", "").isdigit() else 32

    @property
    def class_names(self) -> dict[int, str]:
        """Class id -> name, from the model's metadata."""
        return dict(self._names)

    def __repr__(self) -> str:
        return (f"YoloDetector({str(self.model_path)!r}, input_size={self.input_size}, "
                f"providers={self.providers}, classes={len(self._names)})")

    # -- inference -------------------------------------------------------------------------------

    def detect(self, image_bgr: np.ndarray) -> Detections:
        """Detect objects in one BGR image; boxes are in that image's pixels, clipped to it."""
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect in several BGR images (sizes may differ) with one ``session.run`` per batch.

        A model exported with a fixed batch size is run image by image instead.
        """
        if not images:
            return []
        same = len({im.shape for im in images}) == 1
        auto = self.rect and same
        placed = [letterbox(im, self.input_size, auto=auto, stride=self.stride) for im in images]
        tensor = to_input_tensor([p[0] for p in placed])
        infos = [p[1] for p in placed]
        if self._static_batch is None or self._static_batch == len(images):
            raw = self._run(tensor)
        else:
            raw = np.concatenate([self._run(tensor[i: i + 1]) for i in range(len(images))])
        return [self._postprocess(raw[i], info) for i, info in enumerate(infos)]

    def detect_regions(self, image_bgr: np.ndarray, regions: Sequence[Sequence[float]]) -> Detections:
        """Detect inside crops of one frame and return boxes in the full frame's pixels.

        Each region ``(x1, y1, x2, y2)`` (pixels; clipped to the frame) is cut out at full resolution and
        letterboxed on its own, so small distant objects get many more input pixels than in a whole-frame
        pass. All crops go through one batch; boxes are shifted back and duplicates from overlapping
        regions are merged with class-aware NMS.

        Args:
            image_bgr: the full frame (H, W, 3).
            regions: crop rectangles in frame pixels; degenerate ones (< 2 px wide/high) are skipped.
        """
        h, w = image_bgr.shape[:2]
        crops: list[np.ndarray] = []
        offsets: list[tuple[int, int]] = []
        for r in regions:
            x1, y1 = max(int(np.floor(r[0])), 0), max(int(np.floor(r[1])), 0)
            x2, y2 = min(int(np.ceil(r[2])), w), min(int(np.ceil(r[3])), h)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            crops.append(image_bgr[y1:y2, x1:x2])
            offsets.append((x1, y1))
        if not crops:
            return Detections.empty(self._names)
        parts = [d.shifted(dx, dy) for d, (dx, dy) in zip(self.detect_batch(crops), offsets, strict=True)]
        merged = Detections.merge(parts)
        if len(parts) == 1 or len(merged) == 0:
            return Detections(merged.xyxy, merged.confidence, merged.class_id, dict(self._names))
        keep = batched_nms(merged.xyxy, merged.confidence, merged.class_id, self.nms_iou)
        out = merged[keep]
        return Detections(out.xyxy, out.confidence, out.class_id, dict(self._names))

    # -- internals ---------------------------------------------------------------------------------

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        out = self.session.run([self._output_name], {self._input_name: tensor})[0]
        return np.asarray(out, np.float32)

    def _postprocess(self, pred: np.ndarray, info: LetterboxInfo) -> Detections:
        if self._end2end:
            rows = pred[pred[:, 4] > self.min_confidence]
            xyxy, scores, class_ids = rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)
        else:
            if not self._names and pred.shape[0] > 4:
                self._names = {i: str(i) for i in range(pred.shape[0] - 4)}
            xyxy, scores, class_ids = decode_yolo(pred, self.min_confidence, self.nms_iou)
        return Detections(unletterbox_boxes(xyxy, info), scores, class_ids, dict(self._names))
