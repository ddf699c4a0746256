"""Camera checks (issue 9): after a ticket is resolved, the worker running its camera re-judges the zone.

The ticket service publishes a :class:`~pipeline.contract.casework.CameraCheckRequestV1` on
``<prefix>/check/request/<camera>`` (QoS 1). The worker that runs the camera (:class:`CheckResponder`)
watches that camera's next analysed frames for ``window_seconds`` through the zone's own rule - the rule
for (zone, hazard), the same one that opened the incident - and publishes a
:class:`~pipeline.contract.casework.CameraCheckResultV1` on ``<prefix>/check/result/<camera>`` (QoS 1,
through the worker's durable outbox) with a fresh annotated snapshot
``<evidence_dir>/<incident_id>/check-<check_id>.jpg``:

* ``failed`` as soon as the hazard is confirmed in the window: per judged frame the check reads what the
  rule hands its :class:`~pipeline.analyze.rules.IncidentLifecycle` (``lifecycle.last_step_observation``)
  and confirms it the way that lifecycle does (its ``confirm_k`` of ``confirm_n``, counted afresh). Every
  rule is read the same way: a parked car still needs its dwell, and rules that confirm on their own
  (fire, poster: the lifecycle then confirms 1 of 1) are not confirmed twice;
* ``passed`` when a judged frame at or past the window's end arrives and the hazard was never confirmed;
* the contract's third outcome (``unavailable``) with a ``detail``: unknown or disabled camera, unknown
  zone, no rule for the hazard there, a check of the same (camera, zone, hazard) already running, or no
  judged frames by ``window_seconds + grace_seconds`` (``no frames``).

Only frames captured after the request arrived count. At most one check runs per (camera, zone,
hazard) and at most ``max_pending`` in all; a redelivered request (same ``check_id``) is ignored. A camera
this worker does not run but the site knows belongs to another worker, which answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pipeline.alerts.evidence import EvidenceWriter
from pipeline.alerts.publisher import MqttPublisher
from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.analyze.rules import KofN, Observation, Rule
from pipeline.config import SiteConfig
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1
from pipeline.contract.topics import check_request_filter, check_result_topic, parse_check_request_topic
from pipeline.ingest.frame import Frame
from pipeline.mqtt_url import broker_address, configure_client

log = logging.getLogger(__name__)

PASSED, FAILED, UNAVAILABLE = "passed", "failed", "unavailable"
"""The outcomes of :class:`CameraCheckResultV1`."""
GRACE_SECONDS = 15.0
"""Wall time past the window a check waits for frames (connect, decode and analysis lag) before giving up."""
MAX_PENDING = 256
"""Checks running at once per worker; more are answered ``unavailable`` at once."""
REMEMBERED_CHECKS = 4096
"""Finished check ids kept, so a redelivered request (QoS 1) does not run twice."""

EvidenceUrl = Callable[[str, str], str]
"""(incident id, file name) -> the URL the API serves that evidence file under."""


@dataclass
class PendingCheck:
    """One running check: its request, the rule it reads and what it has seen so far.

    Attributes:
        request: the request.
        rule: the zone's rule for the hazard.
        start_ts: wall time the request arrived; earlier frames do not count.
        deadline: monotonic time after which the check gives up (``unavailable``).
        confirm: fresh k-of-n over the judged frames of the window (the lifecycle's ``confirm_k``/``confirm_n``).
        frames: analysed frames of the camera since the start; judged: those the rule judged.
        best_confidence: best confidence of the hazard seen in the window.
        last_frame: the latest analysed frame (the snapshot) and its zone polygons.
        seen: the latest observation of the hazard in the window (boxes for a ``failed`` snapshot).
    """

    request: CameraCheckRequestV1
    rule: Rule
    start_ts: float
    deadline: float
    confirm: KofN
    frames: int = 0
    judged: int = 0
    best_confidence: float | None = None
    last_frame: Frame | None = None
    zones_px: dict[str, Any] = field(default_factory=dict)
    seen: Observation | None = None

    @property
    def key(self) -> tuple[str, str | None, str]:
        return self.request.camera_id, self.request.zone_id, self.request.hazard.value

    @property
    def end_ts(self) -> float:
        return self.start_ts + self.request.window_seconds


class CheckResponder:
    """The worker's side of camera checks: answers requests for its cameras from their analysed frames.

    The analysis threads call :meth:`observe` right after ``analyzer.analyze(frame)`` (under the camera's
    slot lock); it is a dictionary lookup while no check of the camera runs.

    Args:
        site: the site config (all cameras: an unknown one is answered, another worker's is not).
        client_id: MQTT client id (stable per worker: the broker keeps requests while it is away).
        analyzers: camera id -> analyzer, for the cameras this worker runs.
        publisher: the worker's durable publisher (results go out QoS 1 through its outbox).
        evidence: where check snapshots are written.
        evidence_url: (incident id, file name) -> URL of that evidence file.
        worker_id: put into every result.
        grace_seconds: see :data:`GRACE_SECONDS`.
        max_pending: see :data:`MAX_PENDING`.
        persistent: keep the MQTT session at the broker (``clean_session`` false), so requests sent while
            the worker reconnects or restarts wait there; only with a ``client_id`` that stays the same across
            restarts, else every run would leave a session collecting requests nobody reads.
    """

    def __init__(self, site: SiteConfig, client_id: str, analyzers: Mapping[str, CameraAnalyzer],
                 publisher: MqttPublisher, evidence: EvidenceWriter, evidence_url: EvidenceUrl,
                 worker_id: str, grace_seconds: float = GRACE_SECONDS, max_pending: int = MAX_PENDING,
                 persistent: bool = True) -> None:
        self.site = site
        self.prefix = site.mqtt.topic_prefix
        self.analyzers = analyzers
        self.publisher = publisher
        self.evidence = evidence
        self.evidence_url = evidence_url
        self.worker_id = worker_id
        self.grace_seconds = grace_seconds
        self.max_pending = max_pending
        self.owns: Callable[[str], bool] | None = None
        """Whether this worker runs a camera id (set by :class:`~pipeline.camera_runtime.CameraRuntime`): a
        request for a camera it neither runs nor owns is another worker's, also for a camera added at run time.
        None: the site YAML decides (an enabled camera without analyzer is another worker's)."""
        self.outcomes: dict[str, int] = {PASSED: 0, FAILED: 0, UNAVAILABLE: 0}
        """Results published so far, by outcome."""
        self.rejected = 0
        """Requests that could not be read (no check id to answer to): logged and counted only."""
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str | None, str], PendingCheck] = {}
        self._cameras_checked: set[str] = set()  # read without the lock by observe(): a cheap early exit
        self._done: OrderedDict[str, None] = OrderedDict()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridwatch-check")
        self._address = broker_address(site.mqtt, "worker")
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id[:128],
                                   clean_session=not persistent,
                                   protocol=MQTTProtocolVersion.MQTTv311, transport=self._address.transport)
        configure_client(self._client, self._address, site.mqtt)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="gridwatch-check-sweep", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        """Stop listening; checks still running end unanswered (their requests were acknowledged already)."""
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._sweeper is not None:
            self._sweeper.join(timeout=2)
        self._pool.shutdown(wait=True, cancel_futures=False)  # results already decided still reach the outbox

    def stats(self) -> dict[str, Any]:
        """``{outcomes: {outcome: results published}, refused: requests not read or not published, running}``
        (the worker's Prometheus gauges)."""
        with self._lock:
            return {"outcomes": dict(self.outcomes), "refused": self.rejected, "running": len(self._pending)}

    def pending(self) -> list[str]:
        """Check ids running now."""
        with self._lock:
            return [c.request.check_id for c in self._pending.values()]

    # -- requests --------------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if not reason_code.is_failure:
            client.subscribe(check_request_filter(self.prefix), qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        camera_id = parse_check_request_topic(msg.topic, self.prefix)
        if camera_id is None:
            return
        if camera_id not in self.analyzers and self._others(camera_id):
            return  # another worker runs it
        try:
            request = CameraCheckRequestV1.model_validate_json(msg.payload)
        except ValueError as e:  # pydantic's ValidationError: nothing to answer to without a check id
            with self._lock:
                self.rejected += 1
            log.warning("camera check request for %s refused: %s", camera_id, str(e).replace("\n", "; ")[:500])
            return
        self.submit(request, camera_id)

    def _others(self, camera_id: str) -> bool:
        """Whether a camera this worker does not run belongs to another worker (else: answered unavailable)."""
        if self.owns is not None:
            return not self.owns(camera_id)
        known = {c.id: c for c in self.site.cameras}
        return camera_id in known and known[camera_id].enabled

    def submit(self, request: CameraCheckRequestV1, topic_camera: str | None = None,
               now: float | None = None) -> PendingCheck | None:
        """Start a check (what an MQTT request does); answers at once when it cannot run.

        Args:
            request: the request.
            topic_camera: the camera of the request's topic (None: the request's ``camera_id``).
            now: wall time it arrived (None: now).

        Returns:
            The running check, or None when it was answered at once or is a redelivery.
        """
        cam = topic_camera or request.camera_id
        now = time.time() if now is None else now
        with self._lock:
            if request.check_id in self._done or any(c.request.check_id == request.check_id
                                                     for c in self._pending.values()):
                log.info("camera check %s: already seen, ignored", request.check_id)
                return None
            problem, rule = self._problem(request, cam)
            if rule is not None and problem is None:
                confirm = rule.lifecycle.rule  # what the lifecycle counts as present (fire: 1 of 1 after its own)
                check = PendingCheck(request, rule, now, time.monotonic() + request.window_seconds
                                     + self.grace_seconds, KofN(confirm.confirm_k, confirm.confirm_n))
                self._pending[check.key] = check
                self._cameras_checked.add(cam)
                log.info("camera check %s: %s %s/%s for %.0f s", request.check_id, request.hazard.value, cam,
                         request.zone_id or "frame", request.window_seconds)
                return check
        self._answer(request, cam, UNAVAILABLE, problem or "no rule", None, None)
        return None

    def _problem(self, request: CameraCheckRequestV1, cam: str) -> tuple[str | None, Rule | None]:
        """Why ``request`` cannot run (None when it can) and the rule it reads. Call under the lock."""
        if request.camera_id != cam:
            return f"camera_id {request.camera_id!r} differs from the topic's camera {cam!r}", None
        analyzer = self.analyzers.get(cam)
        if analyzer is None:
            known = any(c.id == cam for c in self.site.cameras)
            return (f"camera {cam!r} is disabled" if known else f"unknown camera {cam!r}"), None
        if request.zone_id is not None and all(z.id != request.zone_id for z in analyzer.camera.zones):
            return f"unknown zone {request.zone_id!r} on camera {cam!r}", None
        # The rules are built once with the analyzer; the list is only read here.
        rule = next((r for r in analyzer.rules if r.hazard is request.hazard and r.zone_id == request.zone_id),
                    None)
        if rule is None:
            where = f"zone {request.zone_id!r}" if request.zone_id is not None else "the whole frame"
            return f"no {request.hazard.value} rule runs on {where} of camera {cam!r}", None
        if len(self._pending) >= self.max_pending:
            return f"too many checks running ({self.max_pending})", None
        running = self._pending.get((cam, request.zone_id, request.hazard.value))
        if running is not None:
            return f"check {running.request.check_id} of this zone and hazard is still running", None
        return None, rule

    # -- frames ----------------------------------------------------------------------------------
    def observe(self, camera_id: str, frame: Frame, analyzer: CameraAnalyzer) -> None:
        """Read the rules' verdicts on ``frame`` for the checks of ``camera_id`` (call right after
        ``analyzer.analyze(frame)``, holding the camera's slot lock)."""
        if camera_id not in self._cameras_checked or self._stop.is_set():
            return
        finished: list[tuple[PendingCheck, str, str]] = []
        with self._lock:
            for check in [c for c in self._pending.values() if c.request.camera_id == camera_id]:
                if frame.ts < check.start_ts:
                    continue  # captured before the request: not evidence of the fix
                check.frames += 1
                check.last_frame = frame
                check.zones_px = analyzer.zone_polygons_px(frame.width, frame.height)
                lifecycle = check.rule.lifecycle
                if lifecycle.last_step_ts != frame.ts:
                    continue  # the rule skipped this frame (its interval, or still learning)
                check.judged += 1
                seen = lifecycle.last_step_observation
                if seen is not None:
                    check.seen = seen
                    check.best_confidence = max(check.best_confidence or 0.0, seen.confidence)
                if check.confirm.push(seen is not None):
                    finished.append((check, FAILED, f"{check.request.hazard.value} still there after "
                                     f"{frame.ts - check.start_ts:.1f} s ({check.judged} judged frames)"))
                elif frame.ts >= check.end_ts:
                    finished.append((check, PASSED, f"{check.request.hazard.value} not seen for "
                                     f"{frame.ts - check.start_ts:.1f} s ({check.judged} judged frames)"))
            for check, _, _ in finished:
                self._forget(check)
        for check, outcome, detail in finished:
            self._pool.submit(self._finish, check, outcome, detail)  # JPEG + outbox off the analysis thread

    def _forget(self, check: PendingCheck) -> None:
        """Drop a decided check (call under the lock)."""
        self._pending.pop(check.key, None)
        self._cameras_checked = {c.request.camera_id for c in self._pending.values()}
        self._done[check.request.check_id] = None
        while len(self._done) > REMEMBERED_CHECKS:
            self._done.popitem(last=False)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.sweep(time.monotonic())

    def sweep(self, now_monotonic: float) -> None:
        """Answer every check past its deadline ``unavailable`` (no frames, or too few to cover the window)."""
        with self._lock:
            late = [c for c in self._pending.values() if now_monotonic >= c.deadline]
            for check in late:
                self._forget(check)
        for check in late:
            if check.frames == 0:
                detail = "no frames"
            elif check.judged == 0:
                detail = f"no frames judged by the rule ({check.frames} analysed)"
            else:
                detail = f"no frames for the whole window ({check.judged} judged)"
            self._pool.submit(self._finish, check, UNAVAILABLE, f"{detail} within {check.request.window_seconds:g} s"
                              f" + {self.grace_seconds:g} s")

    # -- results ---------------------------------------------------------------------------------
    def _finish(self, check: PendingCheck, outcome: str, detail: str) -> None:
        req, frame, url = check.request, check.last_frame, None
        if frame is not None:
            seen = check.seen if outcome == FAILED else None
            drawn = Incident(id=req.incident_id, event=IncidentEvent.UPDATED, hazard=req.hazard,
                             camera_id=req.camera_id, zone_id=req.zone_id, started_at=check.start_ts, ts=frame.ts,
                             confidence=seen.confidence if seen else 0.0, boxes=seen.boxes if seen else (),
                             frame_ts=frame.ts)
            try:
                path = self.evidence.check_snapshot(frame, drawn, req.check_id, f"CHECK {outcome.upper()}",
                                                    check.zones_px)
                url = self.evidence_url(req.incident_id, path.name)
            except Exception:  # noqa: BLE001 - the verdict matters more than its picture
                log.exception("camera check %s: snapshot failed", req.check_id)
        ended = frame.ts if frame is not None else time.time()
        self._answer(req, req.camera_id, outcome, detail, url,
                     check.best_confidence if outcome == FAILED else None, ended)

    def _answer(self, req: CameraCheckRequestV1, camera_id: str, outcome: str, detail: str,
                snapshot_url: str | None, confidence: float | None, checked_at: float | None = None) -> None:
        result = CameraCheckResultV1(
            schema_version=1, check_id=req.check_id, ticket_id=req.ticket_id, camera_id=camera_id,
            outcome=outcome,  # one of the Literal's values (the constants above)
            checked_at=datetime.fromtimestamp(checked_at if checked_at is not None else time.time(), tz=UTC),
            confidence=None if confidence is None else round(min(1.0, max(0.0, confidence)), 4),
            snapshot_url=snapshot_url, detail=detail[:2000], worker_id=self.worker_id[:200])
        try:
            self.publisher.publish(check_result_topic(self.prefix, camera_id), result.to_bytes(), qos=1)
        except Exception:  # noqa: BLE001 - e.g. a camera id that is no topic level: log it, count it
            with self._lock:
                self.rejected += 1
            log.exception("camera check %s: result not published", req.check_id)
            return
        with self._lock:
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        log.info("camera check %s: %s (%s)", req.check_id, outcome, detail)
