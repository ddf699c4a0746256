"""Running a trained scene model (one ONNX file from ``gridwatch scene train``) with onnxruntime only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pipeline.scenes.crop import to_input

MODEL_KIND = "gridwatch-scene-v1"
"""``metadata_props['kind']`` every scene model carries (:mod:`pipeline.scenes.onnx_graph`)."""


class SceneModelError(ValueError):
    """The file is not a scene model, or not one for the scene's states."""


class StateClassifier:
    """A scene model: BGR crops in, one probability per state out.

    Args:
        path: the ONNX file.
        threads: onnxruntime intra-op threads.

    Raises:
        SceneModelError: not a scene model (metadata ``kind``, ``states``, ``input_size`` missing).
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("kind") != MODEL_KIND:
            raise SceneModelError(f"{path} is not a gridwatch scene model (metadata kind {meta.get('kind')!r})")
        try:
            self.states: list[str] = list(json.loads(meta["states"]))
            self.input_size = int(json.loads(meta["input_size"]))
        except (KeyError, ValueError, TypeError) as e:
            raise SceneModelError(f"{path}: bad scene model metadata ({e})") from None
        self.scene = meta.get("scene")

    def check_states(self, states: Sequence[str]) -> None:
        """Raise :class:`SceneModelError` unless the model's states are ``states`` (same order)."""
        if list(states) != self.states:
            raise SceneModelError(f"{self.path} was trained for states {self.states}, the scene has {list(states)}; "
                                  "retrain it (gridwatch scene train)")

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, states) float64 probabilities of BGR crops."""
        if not crops:
            return np.zeros((0, len(self.states)))
        probs = self.session.run(["probs"], {"crop": to_input(crops, self.input_size)})[0]
        return np.asarray(probs, np.float64)


__all__ = ["MODEL_KIND", "SceneModelError", "StateClassifier"]
