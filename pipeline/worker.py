"""The detection worker: cameras -> detectors -> rules -> evidence + MQTT alerts.

One :class:`CameraReader` thread per camera fills a latest-frame mailbox and a packet ring; a few analysis
threads take whichever cameras have a fresh frame, batch them per detector, run the rules and hand every
incident to the evidence writer and the durable MQTT publisher. A slow detector therefore never makes a
camera fall behind: its stale frames are replaced in the mailbox and counted as dropped.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.alerts.evidence import EvidenceWriter
from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.resend import ResendResponder
from pipeline.alerts.schema import build_alert
from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.analyze.journal import IncidentJournal, orphan_cleared
from pipeline.camera_check import CheckResponder
from pipeline.camera_runtime import CameraRuntime, camera_owner, swap_slot
from pipeline.config import CameraConfig, SiteConfig
from pipeline.contract.topics import occupancy_topic
from pipeline.debug_view import DebugFrames, DebugResponder
from pipeline.detect.detections import Detections
from pipeline.detect.hot_swap import ModelHotSwap, detector_of, incident_models
from pipeline.detect.registry import DetectorRegistry
from pipeline.detect_requests import split_requests
from pipeline.ingest.decode_plan import hazard_rates, rule_rate_warnings
from pipeline.ingest.frame import Frame
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.reader import CameraReader
from pipeline.ingest.ring import PacketRing
from pipeline.redact import install_log_redaction, redact_text, redact_url, register_url_secrets
from pipeline.sharding import ShardSpec
from pipeline.sources import resolve_source
from pipeline.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)


class _SignallingMailbox(LatestFrameMailbox):
    """A mailbox that also tells the worker which camera has a fresh frame."""

    def __init__(self, camera_id: str, ready: queue.SimpleQueue[str]) -> None:
        super().__init__()
        self._camera_id = camera_id
        self._ready = ready

    def put(self, frame: Frame) -> None:
        super().put(frame)
        self._ready.put(self._camera_id)


@dataclass
class _CameraSlot:
    camera: CameraConfig
    url: str
    grid_path: list[str]
    mailbox: _SignallingMailbox
    ring: PacketRing
    reader: CameraReader
    analyzer: CameraAnalyzer
    lock: threading.Lock = field(default_factory=threading.Lock)
    frames_analysed: int = 0
    frames_skipped: int = 0
    last_analysed_ts: float = 0.0
    analysis_error: str | None = None


def evidence_url(site: SiteConfig, incident_id: str, name: str) -> str:
    """The URL under which the API serves the evidence file ``name`` of an incident."""
    base = (site.api.public_url or f"http://{site.api.host}:{site.api.port}").rstrip("/")
    return f"{base}/evidence/{incident_id}/{name}"


def evidence_urls(site: SiteConfig, incident_id: str) -> dict[str, str]:
    """The URLs under which the API serves an incident's evidence."""
    return {"snapshot_url": evidence_url(site, incident_id, "snapshot.jpg"),
            "clip_url": evidence_url(site, incident_id, "clip.mp4")}


class Worker:
    """Runs every enabled camera of a site (or a subset) through detection and rules.

    Args:
        site: the validated site config.
        worker_id: id used in MQTT client ids and the retained status topic.
        camera_ids: only run these cameras (for sharding a site over several workers); None = all.
        shard: this worker's shard: cameras added at run time are run when the shard owns them.

    Example:
        >>> from pipeline.config import load_config
        >>> w = Worker(load_config("configs/demo.yaml"))  # doctest: +SKIP
        >>> w.start(); ...; w.stop()  # doctest: +SKIP
    """

    def __init__(self, site: SiteConfig, worker_id: str | None = None,
                 camera_ids: list[str] | None = None, shard: ShardSpec | None = None) -> None:
        # Camera and broker passwords never reach a log line, traceback or health message.
        install_log_redaction()
        register_url_secrets([*(c.url for c in site.cameras), site.mqtt.url])
        self.site = site
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self._ready: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self.registry = DetectorRegistry(site)
        self.evidence = EvidenceWriter(site.resolve_path(site.api.evidence_dir))
        outbox = site.resolve_path(site.worker.outbox_path)
        outbox.parent.mkdir(parents=True, exist_ok=True)
        self.publisher = MqttPublisher(site.mqtt, str(outbox), self.worker_id,
                                       archive_max=site.worker.alert_archive_max,
                                       archive_seconds=site.worker.alert_archive_hours * 3600)
        # Re-queues archived alerts the ticket service asks for by seq (pipeline/alerts/resend.py).
        self.resend = ResendResponder(self.publisher, f"{self.publisher.client_id}-resend",
                                      persistent=worker_id is not None)
        self.slots: dict[str, _CameraSlot] = {}
        self.incidents_emitted = 0
        self.broken_detectors: dict[str, str] = {}
        self.metrics = WorkerMetrics(self.worker_id)
        # Follows models/manifest.yaml: promoted/canary/rolled-back versions swap in between frames.
        self.models = ModelHotSwap(self.registry, site.worker.model_poll_seconds, self.metrics.registry,
                                   self.worker_id, on_recovered=lambda name: self.broken_detectors.pop(name, None))
        self.debug_frames = DebugFrames()
        self._max_batch = max((d.batch_size for d in site.detectors.values()), default=8)
        for cam in site.cameras:
            if not cam.enabled or (camera_ids is not None and cam.id not in camera_ids):
                continue
            self.slots[cam.id] = self.new_slot(cam)
        # Incidents the previous run left open go back to their rules: a restart must not open a second case.
        journal = site.worker.incident_journal_path
        self.journal = IncidentJournal(site.resolve_path(journal) if journal else outbox.with_name(
            outbox.name + ".incidents"))
        self._started_at = now = time.time()
        self._orphans = [orphan_cleared(e, now, "rule_removed") for slot in self.slots.values()
                         for e in slot.analyzer.restore_incidents(self.journal.open_incidents(slot.camera.id), now)]
        # A resize gave these cameras to another shard: no worker would ever clear their journalled incidents
        # (the new owner has no journal of them), so their tickets would stay open and swallow later incidents.
        owns = camera_owner(camera_ids, shard)
        self._moved = [orphan_cleared(e, now, "camera_moved") for e in self.journal.open_incidents()
                       if not owns(e.camera_id)]
        # Answers /cameras/{id}/debug.jpg requests for these cameras (pipeline/debug_view.py).
        self.debug = DebugResponder(site.mqtt, f"{self.publisher.client_id}-debug", self.debug_frames,
                                    self.slots)
        # Re-judges a resolved ticket's zone on request (pipeline/camera_check.py); fed from _analyse. Its MQTT
        # session outlives a restart only under a given worker id (the default one changes with the pid).
        self.checks = CheckResponder(site, f"{self.publisher.client_id}-check",
                                     {cid: s.analyzer for cid, s in self.slots.items()}, self.publisher,
                                     self.evidence, lambda iid, name: evidence_url(site, iid, name), self.worker_id,
                                     persistent=worker_id is not None)
        # Cameras changed at run time by retained config messages of the ticket service (pipeline/camera_runtime.py).
        self.runtime = CameraRuntime(self, owns, f"{self.publisher.client_id}-config")

    def new_slot(self, cam: CameraConfig) -> _CameraSlot:
        """A camera's reader (not started), mailbox, packet ring and analyzer."""
        url = resolve_source(self.site, cam.url)
        mailbox = _SignallingMailbox(cam.id, self._ready)
        ring = PacketRing(self.site.worker.buffer_seconds)
        # decode: auto follows the hazards' min_analysis_fps; the reader probes GOP and fps and logs the plan.
        reader = CameraReader(cam, url, mailbox, ring, self.site.worker, hazard_rates(self.site.hazards, cam))
        return _CameraSlot(cam, url, self.site.grid_path(cam.grid), mailbox, ring, reader,
                           CameraAnalyzer(self.site, cam))

    def put_camera(self, cam: CameraConfig) -> None:
        """Run ``cam`` (new, or replacing the running camera of its id) without touching the other cameras."""
        swap_slot(self, cam.id, self.new_slot(cam))

    def remove_camera(self, camera_id: str) -> None:
        """Stop and drop one camera (its open incidents are cleared)."""
        swap_slot(self, camera_id, None)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the publisher, load detectors, then start readers and analysis threads."""
        self.publisher.start()
        self.resend.start()
        self.debug.start()
        self.checks.start()
        for incident in self._orphans:
            self._emit(self.slots[incident.camera_id], None, incident)
        self._orphans = []
        for incident in self._moved:
            self._emit_moved(incident)
        self._moved = []
        if self.site.worker.metrics_port is not None:
            self.metrics.serve(self.site.worker.metrics_port)
        for name in sorted({r.detector for s in self.slots.values() for r in s.analyzer.requests(640, 360)}):
            try:
                self.registry.get(name)  # load models before cameras start, not on the first frame
            except Exception as exc:  # noqa: BLE001 - a broken model must not stop the other detectors
                self.broken_detectors[name] = (f"detector {name!r} unavailable: {exc}. Set detectors.{name}.model "
                                               "to an ONNX file (see models/manifest.yaml)")
                log.error("%s", self.broken_detectors[name])
                self.models.mark_broken(name)  # a later promote/rollback may bring it back
        self.models.start()
        for warning in rule_rate_warnings(self.site.hazards):
            log.warning("%s", warning)
        for i in range(self.site.worker.analysis_threads):
            self._spawn(self._analysis_loop, f"analysis-{i}")
        self._spawn(self._health_loop, "health")
        self._spawn(self._start_readers, "starter")
        self.runtime.start()

    def _start_readers(self) -> None:
        # Spread connections over start_spread_seconds: a thousand cameras connecting in the same instant
        # hammer the NVR and the network, and cameras opened together deliver key frames in bursts.
        spread = self.site.worker.start_spread_seconds
        slots = list(self.slots.values())
        for i, slot in enumerate(slots):
            if i and spread and self._stop.wait(spread / len(slots)):
                return
            slot.reader.start()

    def stop(self) -> None:
        """Stop readers and threads; flush pending clips; the outbox keeps undelivered alerts."""
        self._stop.set()
        self.runtime.stop()  # no camera is swapped in after this
        for t in self._threads:  # the starter first, so no reader starts after this
            t.join(timeout=5)
        self.models.stop()
        for slot in self.slots.values():
            slot.reader.stop()
        for timer in self._timers:
            if timer.is_alive():
                timer.cancel()
                # Write the clip now with what is buffered rather than losing it.
                timer.function(*timer.args)
        self.checks.stop()  # before the publisher: results decided by now still reach the outbox
        self.resend.stop()
        self.publisher.stop()
        self.debug.stop()
        self.journal.close()

    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=f"gridwatch-{name}", daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    # -- analysis --------------------------------------------------------------------------------
    def _take_batch(self) -> list[_CameraSlot]:
        try:
            first = self._ready.get(timeout=0.5)
        except queue.Empty:
            return []
        ids = [first]
        deadline = time.monotonic() + self.site.worker.batch_wait_ms / 1000
        # One detector batch per take: a larger take would be worked off by one thread while the others idle.
        while len(ids) < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                ids.append(self._ready.get(timeout=remaining) if remaining > 0 else self._ready.get_nowait())
            except queue.Empty:
                break
        return [self.slots[c] for c in dict.fromkeys(ids) if c in self.slots]

    def _analysis_loop(self) -> None:
        while not self._stop.is_set():
            work: list[tuple[_CameraSlot, Frame]] = []
            for slot in self._take_batch():
                # A slot is analysed by one thread at a time, so its rules see frames in order.
                if not slot.lock.acquire(blocking=False):
                    self._ready.put(slot.camera.id)
                    continue
                frame = slot.mailbox.get(timeout=0)
                if frame is None:
                    slot.lock.release()
                    continue
                if frame.ts - slot.last_analysed_ts < slot.camera.analysis_interval:
                    slot.frames_skipped += 1
                    slot.lock.release()
                    continue
                work.append((slot, frame))
            if not work:
                continue
            try:
                self._analyse(work)
            finally:
                for slot, _ in work:
                    slot.lock.release()

    def _analyse(self, work: list[tuple[_CameraSlot, Frame]]) -> None:
        results: list[dict[str, Detections]] = [{} for _ in work]
        full: dict[str, list[int]] = {}
        for i, (slot, frame) in enumerate(work):
            plan = split_requests(slot.analyzer.frame_requests(frame), self.broken_detectors)  # motion-gated
            for name in plan.blocked:
                slot.analysis_error = self.broken_detectors.get(name, slot.analysis_error)  # may recover meanwhile
            for name in plan.whole:
                full.setdefault(self.models.route(name, slot.camera.id), []).append(i)
            for name, regs in plan.regions.items():
                try:
                    detector = self.registry.get(self.models.route(name, slot.camera.id))
                    results[i][name] = detector.detect_regions(frame.image, regs)
                except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the others
                    self._fail(slot, exc)
        for key, idx in full.items():  # key: the detector, or its canary (ModelHotSwap.route)
            name = detector_of(key)
            batch = self.site.detectors[name].batch_size if name in self.site.detectors else 8
            for start in range(0, len(idx), batch):
                chunk = idx[start:start + batch]
                try:
                    dets = self.registry.get(key).detect_batch([work[i][1].image for i in chunk])
                except Exception as exc:  # noqa: BLE001
                    for i in chunk:
                        self._fail(work[i][0], exc)
                    continue
                for i, d in zip(chunk, dets, strict=True):
                    results[i][name] = d
        for (slot, frame), found in zip(work, results, strict=True):
            try:
                incidents = slot.analyzer.analyze(frame, found)
                slot.frames_analysed += 1
                slot.last_analysed_ts = frame.ts
                if self.debug_frames.wants(slot.camera.id):  # keeps a frame only while someone watches
                    self.debug_frames.offer(frame, found, slot.analyzer)
                self.checks.observe(slot.camera.id, frame, slot.analyzer)  # under the slot lock, like analyze
                if not any(r.detector in self.broken_detectors
                           for r in slot.analyzer.requests(frame.width, frame.height)):
                    slot.analysis_error = None
                for incident in incidents:
                    self._emit(slot, frame, incident)
            except Exception as exc:  # noqa: BLE001
                self._fail(slot, exc)

    def _fail(self, slot: _CameraSlot, exc: Exception) -> None:
        slot.analysis_error = f"{type(exc).__name__}: {exc}"
        log.exception("camera %s: analysis failed", slot.camera.id)

    # -- incidents -> evidence + alerts ----------------------------------------------------------
    def emit(self, slot: _CameraSlot, frame: Frame | None, incident: Incident) -> None:
        """Hand an incident to the evidence writer and the durable publisher."""
        self._emit(slot, frame, incident)

    def _emit(self, slot: _CameraSlot, frame: Frame | None, incident: Incident) -> None:
        urls = evidence_urls(self.site, incident.id)
        if incident.event is IncidentEvent.OPENED and frame is not None:
            try:
                self.evidence.snapshot(frame, incident, slot.analyzer.zone_polygons_px(frame.width,
                                                                                        frame.height))
            except Exception:  # noqa: BLE001 - the alert matters more than its picture
                log.exception("camera %s: snapshot failed for %s", slot.camera.id, incident.id)
            self._schedule_clip(slot, incident)
        # Stamped with this worker's id and next sequence number: the ticket service counts any gap as lost.
        alert = build_alert(incident, self.site, urls, slot.camera)  # the running entry: run-time cameras too
        alert.models = incident_models(self.models, slot.analyzer, incident)  # which version(s) raised it
        self.publisher.publish_alert(alert)
        self.journal.record(incident)  # after the outbox has it: a crash in between re-sends, never loses
        self.incidents_emitted += 1
        log.info("%s %s %s on %s", incident.event.value, incident.hazard.value, incident.id, slot.camera.id)

    def _emit_moved(self, incident: Incident) -> None:
        """Publish the ``cleared`` of an incident of a camera this worker no longer runs (no slot, no evidence)."""
        try:
            alert = build_alert(incident, self.site, evidence_urls(self.site, incident.id))
        except KeyError:  # the camera is gone from the config too: nothing to name it by; it stays journalled
            log.warning("incident %s of camera %s left open: camera not in the config", incident.id,
                        incident.camera_id)
            return
        self.publisher.publish_alert(alert)
        self.journal.record(incident)
        log.info("cleared %s on %s (camera_moved: another shard runs it now)", incident.id, incident.camera_id)

    def _schedule_clip(self, slot: _CameraSlot, incident: Incident) -> None:
        cfg = self.site.worker

        def write() -> None:
            try:
                self.evidence.clip(slot.ring, incident, cfg.clip_pre_seconds, cfg.clip_post_seconds)
            except Exception:  # noqa: BLE001
                log.exception("camera %s: clip failed for %s", slot.camera.id, incident.id)

        timer = threading.Timer(cfg.clip_post_seconds + 0.5, write)
        timer.daemon = True
        timer.start()
        self._timers = [t for t in self._timers if t.is_alive()] + [timer]

    # -- health ----------------------------------------------------------------------------------
    def camera_health(self) -> list[dict[str, object]]:
        """Reader health plus analysis counters, one dict per camera."""
        out = []
        for slot in self.slots.values():
            h = slot.reader.health().to_dict()
            h.update(frames_analysed=slot.frames_analysed, frames_skipped=slot.frames_skipped,
                     analysis_error=slot.analysis_error, worker_id=self.worker_id, url=redact_url(slot.url))
            if slot.analyzer.motion_gate is not None:
                h.update(slot.analyzer.motion_gate.counts())  # frames_gated, frames_detected
            # Errors quote URLs (PyAV's do): mask credentials in every text field that is published.
            out.append({k: redact_text(v) if isinstance(v, str) else v for k, v in h.items()})
        return out

    def _health_loop(self) -> None:
        # First report soon after start, so the command centre shows cameras without waiting.
        interval = self.site.worker.health_interval_seconds
        wait = min(2.0, interval)
        while not self._stop.wait(wait):
            self.publish_health()
            self.clear_down_cameras(time.time())
            wait = interval

    def clear_down_cameras(self, now: float) -> None:
        """Clear the open incidents of every camera that has delivered no frame for
        ``worker.camera_down_clear_seconds`` (``clear_reason: camera_down``)."""
        limit = self.site.worker.camera_down_clear_seconds
        for slot in self.slots.values():
            last = slot.reader.health().last_frame_ts or self._started_at
            if now - last < limit or not slot.lock.acquire(timeout=1.0):
                continue
            try:
                for incident in slot.analyzer.clear_open(now, "camera_down"):
                    self._emit(slot, None, incident)
            finally:
                slot.lock.release()

    def publish_health(self) -> None:
        """Publish each camera's health, and parking occupancy per zone, as retained JSON gauges."""
        now = time.time()
        health = self.camera_health()
        self.metrics.update(health, self.publisher.stats(), self.checks.stats(), self.resend.stats())
        for h in health:
            self.publisher.publish_health(str(h["camera_id"]), {**h, "ts": now})
        prefix = self.site.mqtt.topic_prefix
        for slot in self.slots.values():
            for zone_id, state in slot.analyzer.occupancy().items():
                self.publisher.publish_gauge(occupancy_topic(prefix, slot.camera.id, zone_id),
                                             {**state, "camera_id": slot.camera.id, "zone_id": zone_id,
                                              "grid_path": slot.grid_path})


def outbox_dir(site: SiteConfig) -> Path:
    return site.resolve_path(site.worker.outbox_path).parent
