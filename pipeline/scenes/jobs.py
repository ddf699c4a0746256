"""The engineer's scene jobs behind the CLI: collect crops from a video, train from the labelled crops.

Example:
    >>> n = collect_video(site, scenes, Path("clip.mp4"), every=1.0, start=1_796_000_000.0)  # doctest: +SKIP
    >>> card = train_stored(site, scene)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import cv2

from pipeline.config import SiteConfig
from pipeline.scenes.config import SceneConfig
from pipeline.scenes.crop import cut_crop
from pipeline.scenes.store import SceneStore


def scene_store(site: SiteConfig, scene: SceneConfig) -> SceneStore:
    """The store of ``scene`` (its data dir resolved against the config file)."""
    return SceneStore(scene, site.resolve_path(scene.data_path()))


def find_scene(site: SiteConfig, scene_id: str) -> SceneConfig:
    """The scene ``scene_id``; KeyError naming the known ones."""
    for s in site.scenes:
        if s.id == scene_id:
            return s
    raise KeyError(f"no scene {scene_id!r} in the config (scenes: {', '.join(s.id for s in site.scenes) or 'none'})")


def collect_video(site: SiteConfig, scenes: Sequence[SceneConfig], video: Path, every: float, start: float,
                  limit: int | None = None) -> dict[str, int]:
    """Save each scene's crop of ``video`` every ``every`` seconds of video; returns crops saved per scene.

    A crop's time is ``start`` + its video second (name: Unix ms), so crops of one clip stay in time order and
    ``gridwatch scene train`` can hold out its latest stretch.

    Raises:
        ValueError: the file cannot be opened as a video, or has no frame.
    """
    if every <= 0:
        raise ValueError("--every must be > 0 seconds")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ValueError(f"{video}: not a video file OpenCV can open")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not 0 < fps < 1000:
        fps = 25.0  # the container does not say; a guess keeps the crops in order
    stores = {s.id: scene_store(site, s) for s in scenes}
    saved = dict.fromkeys(stores, 0)
    frames, index, next_t = 0, 0, 0.0
    try:
        while cap.grab():
            t = index / fps
            index += 1
            if t + 1e-6 < next_t:
                continue
            ok, img = cap.retrieve()
            if not ok or img is None:
                continue
            frames += 1
            while next_t <= t + 1e-6:
                next_t += every
            for s in scenes:
                stores[s.id].add_crop(cut_crop(img, s.crop_polygon()), start + t)
                saved[s.id] += 1
            if limit is not None and frames >= limit:
                break
    finally:
        cap.release()
    if frames == 0:
        raise ValueError(f"{video}: no frame could be decoded")
    return saved


def default_backbone(site: SiteConfig) -> Path:
    """The COCO YOLO11n detector's ONNX file (manifest entry ``coco``, hash-checked) whose first stages the
    scene model reuses."""
    from pipeline.detect.registry import DetectorRegistry

    return DetectorRegistry(site).resolve("coco")[0]


def train_stored(site: SiteConfig, scene: SceneConfig, backbone: Path | None = None, *, augment_copies: int = 6,
                 holdout: float = 0.25, size: int = 160, threads: int = 1) -> dict[str, object]:
    """Train ``scene`` on its labelled crops; writes ``model.onnx`` (atomically: a running worker picks the new
    file up between frames) and ``card.json``; returns the card.

    Raises:
        ValueError: too few labelled crops (every state needs 2), or a label that is not a state.
        ImportError: the ``onnx`` package is missing (``pip install -e '.[train]'``).
    """
    from pipeline.scenes.train import Sample, train_scene

    store = scene_store(site, scene)
    labelled = store.labelled()
    if not labelled:
        raise ValueError(f"scene {scene.id!r} has no labelled crops in {store.root} (collect, then label them at "
                         f"/scenes/{scene.id}/label)")
    samples = [Sample(img, c.ts, c.state) for c, img in labelled if c.state is not None]
    path = backbone if backbone is not None else default_backbone(site)
    model, card = train_scene(samples, scene.states, path, scene_id=scene.id, size=size,
                              augment_copies=augment_copies, holdout=holdout, threads=threads)
    out = site.resolve_path(scene.model_path())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".onnx.tmp")
    tmp.write_bytes(model)
    os.replace(tmp, out)
    card = {**card, "model": str(out), "bad_states": list(scene.bad_states), "name": scene.name}
    store.root.mkdir(parents=True, exist_ok=True)
    store.card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    return card


__all__ = ["collect_video", "default_backbone", "find_scene", "scene_store", "train_stored"]
