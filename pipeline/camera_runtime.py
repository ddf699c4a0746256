"""The worker's side of run-time cameras: retained config messages change cameras without a restart.

A :class:`CameraRuntime` subscribes to ``<prefix>/config/cameras/+`` and ``<prefix>/config/index``
(:mod:`pipeline.contract.camera_config`, published by the ticket service) and keeps the worker's cameras in
line with them, for the cameras its shard owns (rendezvous hashing is no topic filter, so every worker reads
every camera's message and keeps its own; the payloads are small):

* a newer ``CameraConfigV1`` (higher ``revision``) that differs from what runs restarts only that camera: its
  reader stops, a new reader and analyzer start with the new entry. Open incidents go back to the new
  analyzer where its zone and hazard still exist (same incident ids), the others are cleared
  (``rule_removed``). An equal entry (the seeded copy of the site YAML at start) only records the revision.
* a new camera id starts a reader and analyzer; ``enabled: false``, an empty message (deleted) or an index
  that no longer lists the camera stops and drops it, clearing its open incidents (``camera_removed``).
* a scene (``scenes[]``) whose camera is not running here waits for it (log line, ``gridwatch_scene_waiting``,
  ``stats()["scenes_waiting"]``) and starts with the camera's analyzer once the camera comes
  (:mod:`pipeline.scenes.waiting`); a removed camera's metric label sets are taken out.
* a message that cannot be used (not JSON, wrong schema, an entry ``CameraConfig`` refuses, an unknown grid
  cell, a hazard without detector) is refused with one error line and
  ``gridwatch_camera_config_messages{outcome="refused"}``; the camera keeps running its last good config.

The worker starts from the site YAML (revision 0) and never needs the API: the broker keeps the retained
messages, so a worker (re)started while the API is down still gets the latest config.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import Counter
from pydantic import ValidationError

from pipeline.analyze.incident import Incident
from pipeline.analyze.journal import orphan_cleared
from pipeline.camera_spec import error_text, site_errors
from pipeline.config import CameraConfig
from pipeline.contract.camera_config import CameraConfigV1, CameraIndexV1
from pipeline.contract.topics import camera_config_filter, camera_index_topic, parse_camera_config_topic
from pipeline.mqtt_url import broker_address, configure_client
from pipeline.redact import redact_url, register_url_secrets
from pipeline.scenes.waiting import SceneWatch
from pipeline.sharding import ShardSpec, shard_of

if TYPE_CHECKING:
    from pipeline.worker import Worker, _CameraSlot

log = logging.getLogger(__name__)

OUTCOMES = ("applied", "unchanged", "removed", "refused", "other_shard")


class CameraRuntime:
    """Applies run-time camera config to a running :class:`~pipeline.worker.Worker`.

    Args:
        worker: the worker whose cameras change (it provides ``add_camera``/``remove_camera`` hooks).
        owns: whether this worker runs a camera id (its shard, or its ``--cameras`` list).
        client_id: MQTT client id.
    """

    def __init__(self, worker: Worker, owns: Callable[[str], bool], client_id: str) -> None:
        self.worker = worker
        self.owns = owns
        self.prefix = worker.site.mqtt.topic_prefix
        self.revisions: dict[str, int] = dict.fromkeys(worker.slots, 0)
        """Revision of the config each owned camera runs (0: the site YAML's; -1: deleted)."""
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.last_error: str | None = None
        self._counter = Counter("gridwatch_camera_config_messages", "Run-time camera config messages by outcome "
                                "(applied, unchanged, removed, refused, other_shard)", ["worker", "outcome"],
                                registry=worker.metrics.registry)
        # Check requests for a camera another worker owns are its business, also for run-time cameras.
        worker.checks.owns = owns
        # Scenes of cameras not running here wait for them (pipeline/scenes/waiting.py).
        self.scenes = SceneWatch(worker.site.scenes, owns, worker.worker_id, worker.metrics.registry)
        self.scenes.update(worker.slots)
        self._inbox: queue.SimpleQueue[tuple[str, bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._address = broker_address(worker.site.mqtt, "worker")
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id[:128],
                                   transport=self._address.transport)
        configure_client(self._client, self._address, worker.site.mqtt)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect and start applying messages (in a thread of its own: a restart waits for a reader)."""
        self._thread = threading.Thread(target=self._apply_loop, name="gridwatch-camera-config", daemon=True)
        self._thread.start()
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; messages not applied yet are dropped (the broker keeps them retained)."""
        self._client.disconnect()
        self._client.loop_stop()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def stats(self) -> dict[str, Any]:
        """Messages by outcome, the last refusal and the scenes waiting for their camera."""
        return {"outcomes": dict(self.outcomes), "last_error": self.last_error,
                "scenes_waiting": sorted(self.scenes.waiting)}

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if reason_code.is_failure:
            log.warning("camera config: broker refused the connection: %s", reason_code)
            return
        client.subscribe([(camera_config_filter(self.prefix), 1), (camera_index_topic(self.prefix), 1)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.put((msg.topic, bytes(msg.payload)))

    def _apply_loop(self) -> None:
        while (item := self._inbox.get()) is not None:
            try:
                self.handle(*item)
            except Exception:  # noqa: BLE001 - one bad change must not end the config thread
                log.exception("camera config: applying %s failed", item[0])
                self._count("refused")

    def _count(self, outcome: str) -> str:
        self.outcomes[outcome] += 1
        self._counter.labels(self.worker.worker_id, outcome).inc()
        return outcome

    def _refuse(self, what: str, why: str) -> str:
        self.last_error = f"{what}: {why}"
        log.error("camera config refused (%s keeps its last good config): %s", what, why)
        return self._count("refused")

    # -- messages --------------------------------------------------------------------------------
    def handle(self, topic: str, payload: bytes) -> str:
        """Apply one message; returns its outcome (one of :data:`OUTCOMES`, or ``ignored``)."""
        with self._lock:
            if topic == camera_index_topic(self.prefix):
                return self._index(payload)
            camera_id = parse_camera_config_topic(topic, self.prefix)
            if camera_id is None:
                return "ignored"
            if not self.owns(camera_id):
                return self._count("other_shard")
            if not payload:
                return self._remove(camera_id, -1, "deleted")
            return self._camera(camera_id, payload)

    def _camera(self, camera_id: str, payload: bytes) -> str:
        try:
            msg = CameraConfigV1.model_validate_json(payload)
            camera = CameraConfig.model_validate(msg.camera)
        except ValidationError as exc:
            return self._refuse(f"camera {camera_id}", f"not a valid CameraConfigV1: {_first(exc)}")
        if msg.camera_id != camera_id:
            return self._refuse(f"camera {camera_id}", f"the message is for camera {msg.camera_id!r}")
        if errors := site_errors(self.worker.site, camera):
            return self._refuse(f"camera {camera_id}", error_text(errors))
        if msg.revision <= self.revisions.get(camera_id, -1):
            return self._count("unchanged")
        self.revisions[camera_id] = msg.revision
        slot = self.worker.slots.get(camera_id)
        if not camera.enabled:
            return self._remove(camera_id, msg.revision, "disabled") if slot is not None else self._count("unchanged")
        if slot is not None and slot.camera == camera:
            return self._count("unchanged")
        register_url_secrets([camera.url])
        started = time.monotonic()
        self.worker.put_camera(camera)
        log.info("camera %s: config revision %d applied (%s) in %.2f s", camera_id, msg.revision,
                 "restarted" if slot is not None else "started", time.monotonic() - started)
        return self._count("applied")

    def _remove(self, camera_id: str, revision: int, why: str) -> str:
        self.revisions[camera_id] = revision
        if camera_id not in self.worker.slots:
            return self._count("unchanged")
        self.worker.remove_camera(camera_id)
        log.info("camera %s: stopped (%s)", camera_id, why)
        return self._count("removed")

    def _index(self, payload: bytes) -> str:
        try:
            index = CameraIndexV1.model_validate_json(payload)
        except ValidationError as exc:
            return self._refuse("camera index", f"not a valid CameraIndexV1: {_first(exc)}")
        listed = set(index.camera_ids)
        gone = [cid for cid in list(self.worker.slots) if cid not in listed
                and self.revisions.get(cid, 0) <= index.revision]
        for cid in gone:
            self._remove(cid, index.revision, "not in the camera index")
        return "removed" if gone else "unchanged"


def _first(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}"


def camera_owner(camera_ids: list[str] | None, shard: ShardSpec | None) -> Callable[[str], bool]:
    """Whether a worker runs a camera id: its shard's (rendezvous hashing), its ``--cameras`` list, or all."""
    if shard is not None:
        return lambda camera_id: shard_of(camera_id, shard.count) == shard.index
    if camera_ids is not None:
        return set(camera_ids).__contains__
    return lambda camera_id: True


def swap_slot(worker: Worker, camera_id: str, new: _CameraSlot | None) -> None:
    """Replace (``new``) or drop (None) one camera's reader and analyzer; every other camera is left alone.

    The old slot's lock is held while its reader stops, so no analysis thread is inside its rules. Open
    incidents go to the new analyzer where its zone and hazard still exist; the rest are cleared.
    """
    old = worker.slots.get(camera_id)
    now = time.time()
    cleared: list[Incident] = []
    locked = old.lock.acquire(timeout=5.0) if old is not None else False
    try:
        if old is not None:
            old.reader.stop()
            old.mailbox.get(timeout=0)  # a thread that took the old slot before the swap finds no frame
            if new is None:
                cleared = old.analyzer.clear_open(now, "camera_removed")
            else:
                left = new.analyzer.restore_incidents(worker.journal.open_incidents(camera_id), now)
                cleared = [orphan_cleared(e, now, "rule_removed") for e in left]
        slots = dict(worker.slots)  # copy on write: other threads iterate the old dict undisturbed
        if new is None:
            slots.pop(camera_id, None)
        else:
            slots[camera_id] = new
        worker.slots = slots
        worker.debug.cameras = set(slots)
        worker.checks.analyzers = {cid: s.analyzer for cid, s in slots.items()}
        worker.runtime.scenes.update(slots)  # a scene of a camera that came (or went) starts (or waits)
    finally:
        if locked and old is not None:
            old.lock.release()
    for incident in cleared:
        worker.emit(old or new, None, incident)  # type: ignore[arg-type]
    if old is not None and new is None:
        worker.metrics.forget_camera(camera_id)
        # One last retained health report, so the service shows the camera stopped rather than its last state.
        health = {**old.reader.health().to_dict(), "frames_analysed": old.frames_analysed,
                  "frames_skipped": old.frames_skipped, "analysis_error": None, "worker_id": worker.worker_id,
                  "url": redact_url(old.url), "ts": now}
        worker.publisher.publish_health(camera_id, health)
    if new is not None and not worker.stopping:
        new.reader.start()
