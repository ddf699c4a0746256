"""A scene's files: crops to label, their labels, the model and its card.

Layout of ``<data_dir>`` (:meth:`SceneConfig.data_path`, relative to the config file)::

    crops/<unix ms>.jpg     one crop of the scene, named by its capture time (milliseconds)
    labels.json             {"<crop file>": "<state>", ...}
    model.onnx, card.json   written by ``gridwatch scene train``

Labels are written atomically (temporary file + rename) under a lock, so a labelling page and a worker
saving crops never corrupt them.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.scenes.config import SceneConfig

CROP_NAME_RE = re.compile(r"^(\d{10,14})\.jpg$")
"""A crop file: Unix milliseconds + ``.jpg`` (never a path: the labelling page passes names through)."""

_LOCK = threading.Lock()


@dataclass(frozen=True)
class CropInfo:
    """One crop on disk: file name, capture time (Unix s) and its label (None = not labelled)."""

    name: str
    ts: float
    state: str | None


class SceneStore:
    """The files of one scene under ``root`` (its data dir).

    Example:
        >>> import tempfile
        >>> s = SceneConfig(id="bin1", camera="c", box=[0, 0, 1, 1], states=["normal", "overflowing"],
        ...                 bad_states=["overflowing"])
        >>> store = SceneStore(s, Path(tempfile.mkdtemp()))
        >>> name = store.add_crop(np.zeros((8, 8, 3), np.uint8), 1_796_000_000.25)
        >>> name, store.set_label(name, "overflowing"), [c.state for c in store.crops()]
        ('1796000000250.jpg', 'overflowing', ['overflowing'])
    """

    def __init__(self, scene: SceneConfig, root: Path) -> None:
        self.scene = scene
        self.root = Path(root)
        self.crops_dir = self.root / "crops"
        self.labels_path = self.root / "labels.json"
        self.card_path = self.root / "card.json"

    def add_crop(self, image: np.ndarray, ts: float) -> str:
        """Save a BGR crop taken at ``ts`` (Unix s); returns its file name (an existing one is kept)."""
        name = f"{round(ts * 1000):d}.jpg"
        path = self.crops_dir / name
        if not path.exists():
            self.crops_dir.mkdir(parents=True, exist_ok=True)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            if not ok:
                raise ValueError("could not encode the crop as JPEG")
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(buf.tobytes())
            os.replace(tmp, path)
        return name

    def count(self) -> int:
        """Crops on disk."""
        return sum(1 for _ in self.crops_dir.glob("*.jpg")) if self.crops_dir.is_dir() else 0

    def labels(self) -> dict[str, str]:
        """``{crop file: state}``; a missing file is no labels; a corrupt one raises ValueError naming it."""
        if not self.labels_path.is_file():
            return {}
        try:
            raw = json.loads(self.labels_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.labels_path}: not a labels file ({e})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{self.labels_path}: expected an object {{crop: state}}")
        return {str(k): str(v) for k, v in raw.items()}

    def crops(self) -> list[CropInfo]:
        """Every crop, oldest first, with its label."""
        labels = self.labels()
        out: list[CropInfo] = []
        if self.crops_dir.is_dir():
            for p in self.crops_dir.iterdir():
                m = CROP_NAME_RE.match(p.name)
                if m:
                    out.append(CropInfo(p.name, int(m.group(1)) / 1000.0, labels.get(p.name)))
        return sorted(out, key=lambda c: c.ts)

    def crop_path(self, name: str) -> Path:
        """Path of crop ``name``; KeyError unless it is a crop file name that exists."""
        if not CROP_NAME_RE.match(name) or not (self.crops_dir / name).is_file():
            raise KeyError(name)
        return self.crops_dir / name

    def set_label(self, name: str, state: str | None) -> str | None:
        """Label crop ``name`` with ``state`` (None removes its label); returns the state.

        Raises:
            KeyError: no such crop.
            ValueError: ``state`` is not a state of the scene.
        """
        self.crop_path(name)
        if state is not None and state not in self.scene.states:
            raise ValueError(f"{state!r} is not a state of scene {self.scene.id!r} ({', '.join(self.scene.states)})")
        with _LOCK:
            labels = self.labels()
            if state is None:
                labels.pop(name, None)
            else:
                labels[name] = state
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.labels_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(labels, indent=0, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.labels_path)
        return state

    def labelled(self) -> list[tuple[CropInfo, np.ndarray]]:
        """The labelled crops with their images (an unreadable image raises ValueError naming it)."""
        out: list[tuple[CropInfo, np.ndarray]] = []
        for c in self.crops():
            if c.state is None:
                continue
            img = cv2.imread(str(self.crops_dir / c.name))
            if img is None:
                raise ValueError(f"{self.crops_dir / c.name}: not a readable image")
            out.append((c, img))
        return out

    def card(self) -> dict[str, object] | None:
        """The model card written by the last training, or None."""
        if not self.card_path.is_file():
            return None
        data = json.loads(self.card_path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None


__all__ = ["CROP_NAME_RE", "CropInfo", "SceneStore"]
