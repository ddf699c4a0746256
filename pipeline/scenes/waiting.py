"""Scenes whose camera is not running on this worker (yet): they wait instead of failing the config.

A scene may name a camera the site YAML does not list: cameras also come at run time from the ticket
service's database (:mod:`pipeline.camera_runtime`). Such a scene, or one whose camera was removed or
disabled, is *waiting*: no rule runs for it, one log line says so, ``gridwatch_scene_waiting{scene=...}`` is 1
and :meth:`SceneWatch.state` lists it. When its camera starts, the camera's analyzer builds the scene's rule
(:func:`~pipeline.scenes.rule.scene_rules`), the gauge drops to 0 and one log line says the scene is active.
Scenes of cameras another worker's shard owns are not this worker's business and are left out.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> from pipeline.scenes.config import SceneConfig
    >>> s = SceneConfig(id="bin", camera="cam7", box=[0, 0, 1, 1], states=["ok", "full"], bad_states=["full"])
    >>> watch = SceneWatch([s], lambda camera_id: True, "w1", CollectorRegistry())
    >>> watch.update({"cam1"}), watch.update({"cam1", "cam7"})
    (['bin'], [])
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Gauge

from pipeline.scenes.config import SceneConfig

log = logging.getLogger(__name__)


class SceneWatch:
    """Tracks which of the site's scenes wait for their camera on one worker.

    Args:
        scenes: the site's ``scenes[]``.
        owns: whether this worker runs a camera id (its shard or ``--cameras`` list).
        worker_id: the ``worker`` label of the gauge.
        registry: the worker's metrics registry.
    """

    def __init__(self, scenes: list[SceneConfig], owns: Callable[[str], bool], worker_id: str,
                 registry: CollectorRegistry) -> None:
        self.scenes = list(scenes)
        self.owns = owns
        self.worker_id = worker_id
        self.waiting: set[str] = set()
        """Ids of the scenes waiting now."""
        self._lock = threading.Lock()
        self._gauge = Gauge("gridwatch_scene_waiting", "1 while a scene waits for its camera (not in the config "
                            "yet, removed or disabled), 0 while its camera runs on this worker",
                            ["worker", "scene", "camera"], registry=registry)

    def update(self, running: Collection[str]) -> list[str]:
        """Record the cameras running now; returns the ids of the scenes waiting (logs each change)."""
        with self._lock:
            for scene in self.scenes:
                if not self.owns(scene.camera):
                    continue
                wait = scene.camera not in running
                was = scene.id in self.waiting
                if wait and not was:
                    log.warning("scene %s: camera %r is not running on this worker (not in the config yet, removed "
                                "or disabled); the scene waits for it", scene.id, scene.camera)
                    self.waiting.add(scene.id)
                elif not wait and was:
                    log.info("scene %s: camera %r is running; the scene is active", scene.id, scene.camera)
                    self.waiting.discard(scene.id)
                self._gauge.labels(self.worker_id, scene.id, scene.camera).set(1.0 if wait else 0.0)
            return sorted(self.waiting)

    def state(self) -> dict[str, dict[str, object]]:
        """Scene id -> ``{camera, waiting}`` for every scene of this worker's cameras."""
        with self._lock:
            return {s.id: {"camera": s.camera, "waiting": s.id in self.waiting} for s in self.scenes
                    if self.owns(s.camera)}


__all__ = ["SceneWatch"]
