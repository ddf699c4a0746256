"""``StateRule``: a state-classification scene as a hazard rule (the one :class:`~pipeline.analyze.rules.Rule`).

Per judged frame (at most one per ``interval_seconds``): cut the scene's crop, classify it with the scene model
(onnxruntime), count the frame as bad when the bad states' probability reaches ``min_score``, smooth with
``confirm_k`` of ``confirm_n``, and once that has held for ``dwell_seconds`` hand an observation to the shared
:class:`~pipeline.analyze.rules.IncidentLifecycle` (opened -> updated -> cleared after ``clear_seconds``).

The model is (re)loaded when its file appears or changes, so a scene can be configured before it is trained
(it then only collects crops, every ``collect_every_seconds``) and retrained without restarting the worker.
Incidents: hazard ``scene``, zone id = scene id, details ``scene``, ``scene_name``, ``state``, ``bad_score``,
``probs``, ``dwell_seconds``, ``model``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.analyze.rules import (
    TIME_EPS,
    FrameView,
    IncidentLifecycle,
    KofN,
    Observation,
    PresenceTimer,
    normalised_box,
)
from pipeline.config import CameraConfig, HazardRule, SiteConfig
from pipeline.scenes.classifier import SceneModelError, StateClassifier
from pipeline.scenes.config import SceneConfig
from pipeline.scenes.crop import crop_box_px, cut_crop
from pipeline.scenes.store import SceneStore

log = logging.getLogger(__name__)


def scene_hazard_rule(scene: SceneConfig) -> HazardRule:
    """The shared rule fields of a scene (the lifecycle confirms 1 of 1: the rule smooths before it)."""
    return HazardRule(detector="scene", classes=list(scene.bad_states), min_confidence=scene.min_score,
                      dwell_seconds=scene.dwell_seconds, confirm_k=1, confirm_n=1,
                      cooldown_seconds=scene.cooldown_seconds, clear_seconds=scene.clear_seconds,
                      update_interval_seconds=scene.update_interval_seconds, severity=scene.severity,
                      analysis_interval_seconds=scene.interval_seconds)


class StateRule:
    """One scene on one camera.

    Args:
        scene: the scene config.
        model_path: its ONNX model (may not exist yet).
        data_dir: its data folder (crops are collected under it).
    """

    hazard = Hazard.SCENE
    detectors: tuple[str, ...] = ()

    def __init__(self, scene: SceneConfig, model_path: Path, data_dir: Path) -> None:
        self.scene = scene
        self.camera_id = scene.camera
        self.zone_id: str | None = scene.id
        self.rule = scene_hazard_rule(scene)
        self.interval_seconds = scene.interval_seconds
        self.lifecycle = IncidentLifecycle(scene.camera, scene.id, Hazard.SCENE, self.rule)
        self.confirm = KofN(scene.confirm_k, scene.confirm_n)
        self.presence = PresenceTimer(grace_seconds=0.0)
        self.model_path = Path(model_path)
        self.store = SceneStore(scene, Path(data_dir))
        self.polygon = scene.crop_polygon()
        self.classifier: StateClassifier | None = None
        self.model_error: str | None = None
        self._model_stamp: tuple[float, int] | None = None
        self.last: dict[str, object] = {}
        self.last_collected: float | None = None
        self.collected = 0
        self.collect_failed = 0
        """Crops that could not be saved (disk full, permissions): shown in ``state()``, logged."""

    def _load_model(self) -> StateClassifier | None:
        """The classifier, (re)loaded when the file appeared or changed; None while there is none (or it is bad)."""
        try:
            st = self.model_path.stat()
        except OSError:
            if self.classifier is not None:
                log.warning("scene %s: model %s is gone; judging stopped", self.scene.id, self.model_path)
            self.classifier, self._model_stamp, self.model_error = None, None, "no model (train it: gridwatch " \
                f"scene train {self.scene.id})"
            return None
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._model_stamp:
            self._model_stamp = stamp
            try:
                clf = StateClassifier(self.model_path)
                clf.check_states(self.scene.states)
            except (SceneModelError, OSError, RuntimeError) as e:  # onnxruntime raises RuntimeError subclasses
                self.classifier, self.model_error = None, str(e)
                log.error("scene %s: cannot use model %s: %s", self.scene.id, self.model_path, e)
                return None
            self.classifier, self.model_error = clf, None
            log.info("scene %s: model %s loaded (states %s)", self.scene.id, self.model_path, clf.states)
        return self.classifier

    def _collect(self, ts: float, crop: np.ndarray) -> None:
        every = self.scene.collect_every_seconds
        if every <= 0 or (self.last_collected is not None and ts - self.last_collected + TIME_EPS < every):
            return
        self.last_collected = ts
        if self.store.count() >= self.scene.collect_max:
            return
        try:
            self.store.add_crop(crop, ts)
            self.collected += 1
        except (OSError, ValueError) as e:
            self.collect_failed += 1
            if self.collect_failed == 1 or self.collect_failed % 100 == 0:
                log.warning("scene %s: crop not saved (%d so far): %s", self.scene.id, self.collect_failed, e)

    def judge(self, view: FrameView) -> list[Incident]:
        """Classify the scene's crop of ``view`` and advance the incident (no image: judged as not bad)."""
        ts = view.ts
        observation: Observation | None = None
        if view.image is not None:
            crop = cut_crop(view.image, self.polygon)
            self._collect(ts, crop)
            clf = self._load_model()
            if clf is not None:
                observation = self._classify(ts, clf, crop, view.width, view.height)
            else:
                self.confirm.push(False)
                self.presence.update(ts, False)
        event = self.lifecycle.step(ts, observation)
        return [event] if event is not None else []

    def _classify(self, ts: float, clf: StateClassifier, crop: np.ndarray, width: int, height: int
                  ) -> Observation | None:
        probs = clf.predict([crop])[0]
        by_state = {s: round(float(p), 4) for s, p in zip(clf.states, probs, strict=True)}
        bad_score = float(sum(by_state[s] for s in self.scene.bad_states))
        best = max(by_state, key=lambda s: by_state[s])
        bad = bad_score >= self.scene.min_score
        confirmed = self.confirm.push(bad)
        since = self.presence.update(ts, confirmed)
        dwell = self.presence.seconds(ts)
        self.last = {"ts": ts, "state": best, "probs": by_state, "bad_score": round(bad_score, 4), "bad": bad,
                     "confirmed": confirmed, "dwell_seconds": round(dwell, 3)}
        if since is None or dwell + TIME_EPS < self.scene.dwell_seconds:
            return None
        bad_state = max(self.scene.bad_states, key=lambda s: by_state[s])
        x1, y1, x2, y2 = crop_box_px(self.polygon, width, height)
        box = normalised_box([x1, y1, x2, y2], width, height, bad_state, bad_score)
        return Observation(started_at=since, confidence=bad_score, boxes=(box,), details={
            "scene": self.scene.id, "scene_name": self.scene.name or self.scene.id, "state": bad_state,
            "bad_score": round(bad_score, 4), "probs": by_state, "dwell_seconds": round(dwell, 3),
            "model": self.model_path.name})

    def state(self) -> dict[str, object]:
        """Model (path, loaded, error), the last classification, k-of-n, dwell timer, crops collected (and failed),
        lifecycle."""
        return {"scene": self.scene.id, "model": {"path": str(self.model_path), "loaded": self.classifier is not None,
                                                  "error": self.model_error},
                "last": dict(self.last), "confirm": self.confirm.state(), "presence": self.presence.state(),
                "dwell_seconds": self.scene.dwell_seconds, "collected": self.collected,
                "collect_failed": self.collect_failed,
                "lifecycle": self.lifecycle.state()}


def scene_rules(site: SiteConfig, camera: CameraConfig) -> list[StateRule]:
    """A :class:`StateRule` for every scene of ``camera`` (paths resolved against the config file)."""
    return [StateRule(s, site.resolve_path(s.model_path()), site.resolve_path(s.data_path()))
            for s in site.scenes if s.camera == camera.id]


def scene_polygons_px(site: SiteConfig, camera: CameraConfig, width: int, height: int) -> dict[str, np.ndarray]:
    """Scene id -> int32 (N, 1, 2) pixel crop polygon of ``camera``'s scenes (evidence snapshots draw it)."""
    size = np.array([width, height], np.float64)
    return {s.id: np.round(np.asarray(s.crop_polygon(), np.float64) * size).astype(np.int32).reshape(-1, 1, 2)
            for s in site.scenes if s.camera == camera.id}


__all__ = ["StateRule", "scene_hazard_rule", "scene_polygons_px", "scene_rules"]
