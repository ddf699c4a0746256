"""Training a scene classifier on CPU without torch: frozen YOLO11n features + a numpy softmax head.

1. Every labelled crop and ``augment`` jittered copies of it (brightness, contrast, gamma, colour cast,
   small shifts and zoom, sensor noise: the camera at another hour) go through the frozen feature graph
   (:func:`pipeline.scenes.onnx_graph.feature_model`, onnxruntime).
2. A multinomial logistic regression (L2, class-balanced, full-batch gradient descent with Adam) is fitted
   on the standardised features in numpy.
3. **Held-out accuracy by time**: each state's crops, in time order, are cut into a leading part (train) and
   the last ``holdout`` share (test), so test crops come from a later stretch of the video than their
   state's training crops (neighbouring frames of one stretch never straddle the split). The head is fitted
   on the leading parts only and scored on the un-augmented held-out crops.
4. The head is refitted on all crops and joined to the feature graph: one ONNX file
   (:func:`pipeline.scenes.onnx_graph.with_head`) plus a card (dict) with counts, accuracy and settings.

Needs the ``onnx`` package (``pip install -e '.[train]'`` or ``.[dev]``); the worker only needs onnxruntime.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from pipeline.scenes.crop import to_input

DEFAULT_SIZE = 160
"""Side (px) crops are resized to: 5x5 cells at the deepest tap; about 5 ms a crop on one core."""


@dataclass(frozen=True)
class Sample:
    """One labelled crop: BGR image, capture time (Unix s) and state."""

    image: np.ndarray
    ts: float
    state: str


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A jittered copy of a BGR crop: lighting (gain 0.55-1.45, contrast, gamma, colour cast), +-6 % shift,
    0.92-1.08 zoom, a left-right mirror half the time, and noise, so the model holds at another time of day.

    Example:
        >>> out = augment(np.full((40, 60, 3), 128, np.uint8), np.random.default_rng(0))
        >>> out.shape, out.dtype.name
        ((40, 60, 3), 'uint8')
    """
    h, w = crop.shape[:2]
    s = rng.uniform(0.92, 1.08)
    dx, dy = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h
    m = np.array([[s, 0, (1 - s) * w / 2 + dx], [0, s, (1 - s) * h / 2 + dy]], np.float32)
    img = cv2.warpAffine(crop, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:  # a mirrored scene: the object elsewhere in the crop, same state
        img = img[:, ::-1]
    img = img.astype(np.float32) / 255.0
    img = img ** rng.uniform(0.7, 1.4)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.7, 1.3) + mean
    img = img * rng.uniform(0.55, 1.45) * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    img = img + rng.normal(0, rng.uniform(0, 0.03), img.shape).astype(np.float32)
    out: np.ndarray = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


class FeatureExtractor:
    """Runs the frozen feature graph on crops (onnxruntime, CPU)."""

    def __init__(self, model_bytes: bytes, size: int = DEFAULT_SIZE, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        self.size = size

    def __call__(self, crops: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        out = [self.session.run(["features"], {"crop": to_input(crops[i:i + batch], self.size)})[0]
               for i in range(0, len(crops), batch)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-2, iters: int = 400,
                lr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial logistic regression on standardised features (Adam, full batch).

    Returns:
        (weight (D, K), bias (K,)).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.vstack([rng.normal(-1, 1, (50, 3)), rng.normal(1, 1, (50, 3))])
        >>> y = np.array([0] * 50 + [1] * 50)
        >>> w, b = fit_softmax(x, y, 2)
        >>> float(((x @ w + b).argmax(1) == y).mean()) > 0.85
        True
    """
    n, d = x.shape
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sample_w = (n / (k * np.maximum(counts, 1)))[y] / n
    onehot = np.eye(k)[y]
    w, b = np.zeros((d, k)), np.zeros(k)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    for t in range(1, iters + 1):
        z = x @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) * sample_w[:, None]
        gw, gb = x.T @ g + l2 * w, g.sum(axis=0)
        mw, vw = 0.9 * mw + 0.1 * gw, 0.999 * vw + 0.001 * gw ** 2
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb ** 2
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        w -= lr * (mw / c1) / (np.sqrt(vw / c2) + 1e-8)
        b -= lr * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
    return w, b


def time_split(samples: Sequence[Sample], holdout: float) -> tuple[list[int], list[int]]:
    """(train, test) indices: per state, the crops in time order, the last ``holdout`` share is test.

    Example:
        >>> s = [Sample(np.zeros((1, 1, 3), np.uint8), float(t), "a" if t < 8 else "b") for t in range(12)]
        >>> time_split(s, 0.25)
        ([0, 1, 2, 3, 4, 5, 8, 9, 10], [6, 7, 11])
    """
    train: list[int] = []
    test: list[int] = []
    for state in dict.fromkeys(s.state for s in samples):
        idx = sorted((i for i, s in enumerate(samples) if s.state == state), key=lambda i: samples[i].ts)
        n_test = int(round(len(idx) * holdout)) if len(idx) >= 4 else 0
        train += idx[:len(idx) - n_test]
        test += idx[len(idx) - n_test:]
    return sorted(train), sorted(test)


def _features(extract: FeatureExtractor, samples: Sequence[Sample], idx: Sequence[int], n_aug: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    crops: list[np.ndarray] = []
    owner: list[int] = []
    for i in idx:
        crops.append(samples[i].image)
        owner.append(i)
        for _ in range(n_aug):
            crops.append(augment(samples[i].image, rng))
            owner.append(i)
    return extract(crops), np.asarray(owner)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.maximum(x.std(axis=0), 1e-3)


def train_scene(samples: Sequence[Sample], states: Sequence[str], backbone: Path, *, scene_id: str,
                size: int = DEFAULT_SIZE, augment_copies: int = 6, holdout: float = 0.25, seed: int = 0,
                threads: int = 1, taps: Sequence[str] | None = None) -> tuple[bytes, dict[str, object]]:
    """Train a scene model; returns (ONNX bytes, card).

    Args:
        samples: labelled crops (every state needs at least 2).
        states: the scene's states, in model output order.
        backbone: YOLO11 detection ONNX whose first stages are the frozen features.
        scene_id: written into the model's metadata.
        size: crop side fed to the backbone.
        augment_copies: jittered copies per crop.
        holdout: share of each state's latest crops kept out of training to measure accuracy (0 = none).
        seed: augmentation seed.
        threads: onnxruntime threads.
        taps: backbone tensors to pool (default :data:`~pipeline.scenes.onnx_graph.FEATURE_TAPS`).

    Raises:
        ValueError: a state has fewer than 2 crops, or a crop has an unknown state.
    """
    from pipeline.scenes.onnx_graph import FEATURE_TAPS, feature_model, with_head

    t0 = time.monotonic()
    unknown = sorted({s.state for s in samples} - set(states))
    if unknown:
        raise ValueError(f"crops labelled {unknown}, which are not states of the scene ({list(states)})")
    counts = {st: sum(1 for s in samples if s.state == st) for st in states}
    few = [st for st, c in counts.items() if c < 2]
    if few:
        raise ValueError(f"every state needs at least 2 labelled crops; too few for {few} (counts {counts})")
    feat_model = feature_model(backbone, tuple(taps) if taps else FEATURE_TAPS)
    extract = FeatureExtractor(feat_model.SerializeToString(), size, threads)
    rng = np.random.default_rng(seed)
    label = {st: i for i, st in enumerate(states)}
    y_all = np.array([label[s.state] for s in samples])
    train_idx, test_idx = time_split(samples, holdout) if holdout > 0 else (list(range(len(samples))), [])
    x_all_aug, owner = _features(extract, samples, range(len(samples)), augment_copies, rng)
    plain = np.array([np.flatnonzero(owner == i)[0] for i in range(len(samples))])
    evaluation: dict[str, object] = {"held_out": 0}
    if test_idx:
        rows = np.isin(owner, train_idx)
        mean, std = _standardise(x_all_aug[rows])
        w, b = fit_softmax((x_all_aug[rows] - mean) / std, y_all[owner[rows]], len(states))
        xt = (x_all_aug[plain[test_idx]] - mean) / std
        pred = (xt @ w + b).argmax(axis=1)
        truth = y_all[test_idx]
        confusion = {st: {p: int(np.sum((truth == i) & (pred == j))) for j, p in enumerate(states)}
                     for i, st in enumerate(states)}
        per_state = {st: round(float(np.mean(pred[truth == i] == i)), 4) if np.any(truth == i) else None
                     for i, st in enumerate(states)}
        evaluation = {"held_out": len(test_idx), "accuracy": round(float(np.mean(pred == truth)), 4),
                      "per_state_accuracy": per_state, "confusion": confusion,
                      "split": f"per state, the latest {holdout:.0%} of its crops by time"}
    mean, std = _standardise(x_all_aug)
    w, b = fit_softmax((x_all_aug - mean) / std, y_all[owner], len(states))
    train_acc = float(np.mean(((x_all_aug[plain] - mean) / std @ w + b).argmax(axis=1) == y_all))
    meta = {"states": list(states), "input_size": size, "scene": scene_id}
    model = with_head(feat_model, mean, std, w, b, meta)
    card: dict[str, object] = {
        "scene": scene_id, "states": list(states), "crops": counts, "augment_copies": augment_copies,
        "input_size": size, "features": list(taps) if taps else list(FEATURE_TAPS),
        "backbone": str(backbone), "backbone_sha256": _sha256(backbone),
        "train_accuracy": round(train_acc, 4), "evaluation": evaluation,
        "first_crop_ts": min(s.ts for s in samples), "last_crop_ts": max(s.ts for s in samples),
        "trained_at": time.time(), "train_seconds": round(time.monotonic() - t0, 2),
    }
    return model.SerializeToString(), card


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["DEFAULT_SIZE", "FeatureExtractor", "Sample", "augment", "fit_softmax", "time_split", "train_scene"]
