"""Deploy without a restart: a worker follows ``models/manifest.yaml`` and swaps models between frames.

Why an mtime poll of the manifest and not a retained MQTT message ``<prefix>/models/<name>``: the manifest
is already the one source of truth the worker loads models from (file path, sha256, input size), and
``gridwatch model promote|rollback`` write it atomically; a retained message would be a second copy that can
disagree with the file (and the file must reach the worker anyway), would need new broker ACL entries for
the engineer's tool, and would not work for workers started with the broker down. The cost is a
``stat()`` every ``worker.model_poll_seconds`` and a shared models folder (image layer, volume or config
management) for workers on several hosts.

What happens on a change (in this watcher's thread, never in an analysis thread):

1. the manifest is re-read; for every detector whose model is a bare manifest name (``model: fire``; a
   pinned ``fire@v3`` or a file path is left alone) the wanted version is ``deployments.<name>.deployed``
   and, for the cameras of ``deployments.<name>.canary``, the canary version;
2. a version that differs from the one served is loaded here: file hash checked against the manifest,
   onnxruntime session built. A missing, corrupt or hash-mismatched file is refused: logged, counted in
   ``gridwatch_model_load_failures`` and :attr:`ModelHotSwap.failures`, and the old model keeps running;
3. the new detector replaces the old one in the :class:`~pipeline.detect.registry.DetectorRegistry`; the
   analysis threads fetch their detector from it per batch, so the swap lands between two frames.

Canary cameras get their detector through :meth:`ModelHotSwap.route` (registry key ``<detector>#canary``);
:meth:`ModelHotSwap.versions` names the model version(s) behind a camera's hazard for the alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.detect.model_versions import ModelVersionError, deployment_of, label, read_doc
from pipeline.detect.registry import DetectorRegistry

log = logging.getLogger(__name__)

CANARY_SUFFIX = "#canary"


@dataclass(frozen=True)
class _Served:
    model: str      # manifest name
    version: str | None

    @property
    def label(self) -> str:
        return label(self.model, self.version)


class ModelHotSwap:
    """Watches the manifest and keeps the registry's detectors on the deployed (and canary) versions.

    Args:
        registry: the worker's detector registry (its manifest path is the one watched).
        poll_seconds: seconds between two ``stat()`` of the manifest; 0 = no watching.
        metrics: a prometheus ``CollectorRegistry`` for the swap/failure counters (None: no metrics).
        worker_id: the ``worker`` label of those metrics.
        on_recovered: called with a detector's name when a new version loads for a detector that
            :meth:`mark_broken` reported (its model had failed to load): the worker unblocks it.

    Example:
        >>> swap = ModelHotSwap(DetectorRegistry(site))  # doctest: +SKIP
        >>> swap.start(); swap.versions("cam-1", ["fire"])  # doctest: +SKIP
        ['fire@2']
    """

    def __init__(self, registry: DetectorRegistry, poll_seconds: float = 5.0, metrics: Any = None,
                 worker_id: str = "", on_recovered: Callable[[str], object] | None = None) -> None:
        self.registry = registry
        self._on_recovered = on_recovered
        self._broken: set[str] = set()
        self.poll_seconds = poll_seconds
        self.swaps = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mtime: float | None = self._stat()
        self._served: dict[str, _Served] = {}
        self._canary: dict[str, tuple[_Served, frozenset[str]]] = {}
        for det, model in self.tracked().items():
            entry = registry.manifest.get(model)
            self._served[det] = _Served(model, entry.version if entry else None)
        self._gauges: dict[str, Any] = {}
        if metrics is not None:
            from prometheus_client import Counter, Gauge

            self._gauges = {
                "swaps": Counter("gridwatch_model_swaps", "Models swapped in without a restart (deployed, canary "
                                 "or rollback)", ["worker", "model"], registry=metrics),
                "failures": Counter("gridwatch_model_load_failures", "Model versions refused at load (missing, "
                                    "corrupt or hash mismatch; the old model kept running)", ["worker", "model"],
                                    registry=metrics),
                "serving": Gauge("gridwatch_model_serving", "1 for the model version each detector serves",
                                 ["worker", "detector", "version", "role"], registry=metrics)}
            for det, s in self._served.items():
                self._gauges["serving"].labels(worker_id, det, s.label, "deployed").set(1)
        self._worker_id = worker_id

    # -- what is served ----------------------------------------------------------------------------
    def tracked(self) -> dict[str, str]:
        """Detector name -> manifest model name, for the detectors that follow deployments."""
        out = {}
        names = {n.partition("@")[0] for n in self.registry.manifest}
        for det, cfg in self.registry.site.detectors.items():
            if cfg.model in names:
                out[det] = cfg.model
        for name in names:  # manifest names served by name with default settings
            if name not in self.registry.site.detectors:
                out[name] = name
        return out

    def route(self, detector: str, camera_id: str) -> str:
        """The registry key camera ``camera_id`` gets ``detector`` from (its canary while one runs there)."""
        canary = self._canary.get(detector)
        return detector + CANARY_SUFFIX if canary is not None and camera_id in canary[1] else detector

    def versions(self, camera_id: str, detectors: Iterable[str]) -> list[str]:
        """``name@version`` of the model behind each of ``detectors`` on camera ``camera_id``."""
        out = []
        for det in dict.fromkeys(detectors):
            canary = self._canary.get(det)
            if canary is not None and camera_id in canary[1]:
                out.append(canary[0].label)
            elif det in self._served:
                out.append(self._served[det].label)
            else:
                cfg = self.registry.site.detectors.get(det)
                model = cfg.model if cfg is not None else det
                entry = self.registry.manifest.get(model)
                out.append(entry.label if entry is not None else Path(model).name)
        return out

    def stats(self) -> dict[str, Any]:
        """Swaps, refusals, the last refusal and what each detector serves (for health and tests)."""
        return {"swaps": self.swaps, "failures": self.failures, "last_error": self.last_error,
                "serving": {d: s.label for d, s in self._served.items()},
                "canary": {d: {"version": s.label, "cameras": sorted(c)} for d, (s, c) in self._canary.items()}}

    def mark_broken(self, detector: str) -> None:
        """``detector``'s model failed to load: load the next version deployed for it (a rollback, say)."""
        self._broken.add(detector)

    # -- watching ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Apply the manifest once (a canary already running), then poll it in a daemon thread."""
        self.check(force=True)
        if self.poll_seconds > 0 and self.registry.manifest_path is not None:
            self._thread = threading.Thread(target=self._loop, name="gridwatch-model-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop polling (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad manifest
                log.exception("model manifest check failed")

    def _stat(self) -> float | None:
        path = self.registry.manifest_path
        try:
            return path.stat().st_mtime_ns / 1e9 if path is not None else None
        except OSError:
            return None

    def check(self, force: bool = False) -> bool:
        """Re-read the manifest if it changed (or ``force``) and swap what changed; True if anything did."""
        with self._lock:
            mtime = self._stat()
            if not force and mtime == self._mtime:
                return False
            self._mtime = mtime
            path = self.registry.manifest_path
            if path is None:
                return False
            try:
                self.registry.reload_manifest()
                doc = read_doc(path)
            except (OSError, ValueError) as exc:
                self._refused("manifest", f"cannot read {path}: {exc}")
                return False
            changed = False
            loaded = set(self.registry.loaded()) | self._broken
            for det, model in self.tracked().items():
                dep = deployment_of(doc, model)
                entry = self.registry.manifest.get(model)
                want = _Served(model, entry.version if entry else None)
                old = self._served.get(det)
                if det not in loaded:
                    self._served[det] = want  # no camera runs it yet: the registry loads `want` on first use
                    continue
                if old is not None and want != old and self._load(det, want, det):
                    self._served[det] = want
                    if self._gauges:
                        self._gauges["serving"].labels(self._worker_id, det, old.label, "deployed").set(0)
                    changed = True
                    if det in self._broken:
                        self._broken.discard(det)
                        log.info("detector %s: recovered with %s", det, want.label)
                        if self._on_recovered is not None:
                            self._on_recovered(det)
                changed |= self._apply_canary(det, model, dep.canary_version, dep.canary_cameras)
            return changed

    def _apply_canary(self, det: str, model: str, version: str | None, cameras: list[str]) -> bool:
        old = self._canary.get(det)
        if version is None or not cameras:
            if old is not None:
                del self._canary[det]
                if self._gauges:
                    self._gauges["serving"].labels(self._worker_id, det, old[0].label, "canary").set(0)
                log.info("detector %s: canary %s ended; every camera runs %s", det, old[0].label,
                         self._served[det].label)
                return True
            return False
        want = _Served(model, version)
        if old is not None and old[0] == want:
            if old[1] != frozenset(cameras):
                self._canary[det] = (want, frozenset(cameras))
                return True
            return False
        if self._load(det, want, det + CANARY_SUFFIX):
            self._canary[det] = (want, frozenset(cameras))
            log.info("detector %s: canary %s on cameras %s", det, want.label, ", ".join(sorted(cameras)))
            return True
        return False

    def _load(self, det: str, want: _Served, key: str) -> bool:
        """Build ``want`` for detector ``det`` and serve it under registry ``key``; False if refused.

        A canary promoted to every camera is not loaded twice: its running session is served as ``det``.
        """
        ref = want.label
        canary = self._canary.get(det)
        try:
            if canary is not None and canary[0] == want and key == det:
                detector = self.registry.get(det + CANARY_SUFFIX)
            else:
                detector = self.registry.create(det, ref)
        except (KeyError, FileNotFoundError, ModelVersionError, ValueError, RuntimeError, OSError) as exc:
            self._refused(ref, f"{type(exc).__name__}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a corrupt graph
            self._refused(ref, f"{type(exc).__name__}: {exc}")
            return False
        self.registry.replace(key, detector)
        self.swaps += 1
        if self._gauges:
            self._gauges["swaps"].labels(self._worker_id, ref).inc()
            self._gauges["serving"].labels(self._worker_id, det, ref,
                                           "canary" if key.endswith(CANARY_SUFFIX) else "deployed").set(1)
        log.info("detector %s: now serving %s%s (no restart)", det, ref,
                 " on canary cameras" if key.endswith(CANARY_SUFFIX) else "")
        return True

    def _refused(self, what: str, why: str) -> None:
        self.failures += 1
        self.last_error = f"{what}: {why}"
        if self._gauges:
            self._gauges["failures"].labels(self._worker_id, what).inc()
        log.error("model %s refused, the running model keeps serving: %s", what, why)


def detector_of(key: str) -> str:
    """The detector name of a registry key from :meth:`ModelHotSwap.route`."""
    return key.removesuffix(CANARY_SUFFIX)


def incident_models(swap: ModelHotSwap, analyzer: Any, incident: Any) -> list[str] | None:
    """``name@version`` of the models the rules behind ``incident`` read on its camera (None: no model).

    ``analyzer`` is the camera's :class:`~pipeline.analyze.analyzer.CameraAnalyzer`; the poster rule's OCR is
    not a manifest model and is left out.
    """
    site = swap.registry.site
    # The detectors the analyzer ran for these rules (CameraAnalyzer._needs): the rule's own detector, plus
    # helpers (person boxes) only where the site defines them.
    rules = [r for r in analyzer.rules if r.hazard == incident.hazard and r.zone_id == incident.zone_id]
    names = [d for r in rules for d in r.detectors if d != "ocr" and (d == r.rule.detector or d in site.detectors)]
    out = swap.versions(incident.camera_id, names)
    for r in rules:  # the fire rule's second-stage classifier also decides (not hot-swapped: a file per site)
        confirm = getattr(r.rule, "confirm_model", None)
        if isinstance(confirm, str) and confirm:
            entry = swap.registry.manifest.get(confirm)
            name = entry.label if entry is not None else Path(confirm).name
            if name not in out:
                out.append(name)
    return out or None
