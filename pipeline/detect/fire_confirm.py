"""Second stage of fire detection: a small CNN that confirms (or rejects) a fire/smoke candidate crop.

The fire detector (``models/fire.onnx``) proposes boxes; this classifier looks at each box's crop (padded
by ``pad`` of the box size on every side, resized to ``input_size`` squared) and returns
``p(fire), p(smoke), p(neither)``. It is trained by ``scripts/train_fire_confirm.py`` on labelled fire/smoke
boxes against random and hard-negative crops (what the detector fires on in images without fire) and
measured in docs/detectors.md ("Fire second stage").

Model contract (ONNX, opset 17): input ``crops [N, 3, S, S]`` float32 RGB in 0..1, output
``probs [N, 3]`` (softmax). Metadata: ``names`` (Python list literal, ``['fire', 'smoke', 'neither']``),
``input_size`` (S) and ``pad`` (the context padding the model was trained with).

Example:
    >>> import cv2
    >>> clf = FireConfirmClassifier("models/fire-confirm.onnx")
    >>> img = cv2.imread("../shared/datasets/fire/images/val/AdhyaksaWP__20-fire.jpg")
    >>> clf.score_boxes(img, np.zeros((0, 4))).shape
    (0, 3)
"""

from __future__ import annotations

import ast
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from pipeline.detect.registry import ModelHashMismatch, load_manifest, sha256_file

CLASS_NAMES = ("fire", "smoke", "neither")
"""Output columns of the classifier, in order."""
SMOKE = 1
"""Column of ``smoke``."""
NEITHER = 2
"""Column of ``neither``; ``1 - p[:, NEITHER]`` is p(fire) + p(smoke)."""


def crop_box(image_bgr: np.ndarray, box: np.ndarray | tuple[float, ...], pad: float) -> np.ndarray | None:
    """The box grown by ``pad`` x its width/height on each side, clipped to the image (None if empty).

    Example:
        >>> crop_box(np.zeros((100, 100, 3), np.uint8), (40, 40, 60, 50), 0.5).shape
        (20, 40, 3)
    """
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    xa, ya = int(max(0.0, np.floor(x1 - pad * bw))), int(max(0.0, np.floor(y1 - pad * bh)))
    xb, yb = int(min(float(w), np.ceil(x2 + pad * bw))), int(min(float(h), np.ceil(y2 + pad * bh)))
    if xb - xa < 2 or yb - ya < 2:
        return None
    return image_bgr[ya:yb, xa:xb]


def to_batch(crops: list[np.ndarray], size: int) -> np.ndarray:
    """BGR crops -> ``[N, 3, size, size]`` float32 RGB 0..1 (area resampling; aspect is not kept)."""
    out = np.zeros((len(crops), 3, size, size), np.float32)
    for i, c in enumerate(crops):
        r = cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = r[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return out


class FireConfirmClassifier:
    """onnxruntime runner of the fire/smoke/neither crop classifier; thread-safe.

    Args:
        model_path: the ``.onnx`` file (see the module docstring for its contract).
        threads: intra-op threads (1 by default: it runs beside the detectors).
        batch: at most this many crops per ``run`` call.

    Raises:
        FileNotFoundError: the model file does not exist.
        ValueError: the file is not a 3-class crop classifier.
    """

    def __init__(self, model_path: str | Path, *, threads: int = 1, batch: int = 32) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"fire confirmation model not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise ValueError(f"{path}: not a loadable ONNX model ({e})") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        names = tuple(str(n) for n in ast.literal_eval(meta.get("names", "[]")))
        if names != CLASS_NAMES:
            raise ValueError(f"{path}: expected classes {list(CLASS_NAMES)}, metadata says {list(names)}")
        self.path = path
        self.input_size = int(meta.get("input_size", "64"))
        self.pad = float(meta.get("pad", "0.15"))
        self.batch = max(1, int(batch))
        self._input = self.session.get_inputs()[0].name

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """``(N, 3)`` float32 probabilities (fire, smoke, neither) of BGR crops, any size each."""
        if not crops:
            return np.zeros((0, 3), np.float32)
        outs = []
        for i in range(0, len(crops), self.batch):
            x = to_batch(crops[i:i + self.batch], self.input_size)
            outs.append(np.asarray(self.session.run(None, {self._input: x})[0], np.float32))
        return np.concatenate(outs, axis=0)

    def score_boxes(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``(N, 3)`` probabilities of pixel boxes ``(N, 4)`` of a BGR image; an empty box gets
        ``(0, 0, 1)`` (neither)."""
        probs = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (len(boxes), 1))
        crops, rows = [], []
        for i, b in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
            c = crop_box(image_bgr, b, self.pad)
            if c is not None:
                crops.append(c)
                rows.append(i)
        if rows:
            probs[rows] = self.classify(crops)
        return probs


def resolve_model(name_or_path: str, manifest: Path | None = None, path: Path | None = None) -> Path:
    """Path of a confirmation model given as a manifest entry name or a file path.

    Args:
        name_or_path: an entry of ``manifest`` (its file must match its sha256, like a detector's) or a path.
        manifest: the model manifest; default ``models/manifest.yaml`` under the working directory.
        path: where ``name_or_path`` lies when it is a path (e.g. resolved against the config file);
            default ``name_or_path`` itself.

    Raises:
        FileNotFoundError: neither an entry nor an existing file.
        ModelHashMismatch: the entry's file differs from its recorded hash.
    """
    manifest = manifest if manifest is not None else Path.cwd() / "models" / "manifest.yaml"
    entries = load_manifest(manifest) if manifest.is_file() else {}
    entry = entries.get(name_or_path)
    if entry is None:
        p = path if path is not None else Path(name_or_path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"fire confirmation model {name_or_path!r}: not a manifest entry of "
                                    f"{manifest} nor a file ({p})")
        return p
    if entry.sha256 and entry.file.is_file():
        actual = sha256_file(entry.file)
        if actual != entry.sha256:
            raise ModelHashMismatch(f"model {entry.file} ({name_or_path!r}) has sha256 {actual}, but "
                                    f"{manifest} expects {entry.sha256}")
    return entry.file


__all__ = ["CLASS_NAMES", "NEITHER", "SMOKE", "FireConfirmClassifier", "crop_box", "resolve_model", "to_batch"]
