"""The worker's side of alert recovery: answers resend requests from its archive of published alerts.

The ticket service sends a :class:`~pipeline.contract.resend.ResendRequestV1` on
``<prefix>/resend/request/<worker_id>`` when numbers of this worker's alert sequence never arrived (a broker
that dropped them: Mosquitto 2.0.11 loses what is queued for an offline shared subscription across a
restart, docs/reliability.md). :class:`ResendResponder` looks the numbers up in the outbox's archive and
queues every one it still has again through the durable outbox, byte for byte as first sent; the service
applies alerts idempotently, so a copy that had arrived changes nothing.

Whatever arrives, nothing here raises into paho's thread: a payload over
:data:`~pipeline.contract.resend.MAX_RESEND_REQUEST_BYTES`, one that is not a valid request (bad JSON,
reversed or oversized ranges, unknown fields), a request for another worker, or a redelivered one (same
``request_id``) is logged, counted and dropped. A request never makes the worker queue more than
:data:`~pipeline.contract.resend.MAX_RESEND_ALERTS` alerts, and at most ``max_alerts_per_minute`` are queued
again per minute in all, so a flood of requests cannot bury fresh alerts behind old ones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from pydantic import ValidationError

from pipeline.alerts.publisher import MqttPublisher
from pipeline.contract.resend import MAX_RESEND_ALERTS, MAX_RESEND_REQUEST_BYTES, ResendRequestV1
from pipeline.contract.topics import parse_resend_request_topic, resend_request_topic
from pipeline.mqtt_url import configure_client

log = logging.getLogger(__name__)

Outcome = Literal["resent", "refused", "duplicate", "foreign", "throttled"]
REMEMBERED_REQUESTS = 1024
"""Request ids kept, so a redelivered request (QoS 1) is answered once."""
DEFAULT_ALERTS_PER_MINUTE = 6000
"""Most archived alerts queued again per minute, all requests together."""


class ResendResponder:
    """Subscribes to this worker's resend requests and re-queues the archived alerts they name.

    Args:
        publisher: the worker's durable publisher (its outbox holds the archive).
        client_id: MQTT client id of the responder's own connection.
        persistent: keep the MQTT session at the broker (requests sent while the worker restarts wait
            there); only with a ``client_id`` that stays the same across restarts.
        max_alerts_per_minute: budget of re-queued alerts per rolling minute.
    """

    def __init__(self, publisher: MqttPublisher, client_id: str, persistent: bool = True,
                 max_alerts_per_minute: int = DEFAULT_ALERTS_PER_MINUTE) -> None:
        self.publisher = publisher
        self.prefix = publisher.prefix
        self.worker_id = publisher.worker_id[:200]
        self.topic = resend_request_topic(self.prefix, self.worker_id)
        self.max_alerts_per_minute = max_alerts_per_minute
        self.counts: dict[str, int] = {"requests": 0, "resent": 0, "not_archived": 0, "refused": 0,
                                       "duplicate": 0, "throttled": 0}
        """Requests received, alerts queued again, numbers no longer archived, requests refused/duplicate/
        throttled (the worker's metrics)."""
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._spent: list[tuple[float, int]] = []  # (monotonic time, alerts queued) over the last minute
        self._address = publisher.address  # the worker's broker, credentials and transport
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id[:128],
                                   clean_session=not persistent, protocol=MQTTProtocolVersion.MQTTv311,
                                   transport=self._address.transport)
        configure_client(self._client, self._address, publisher.cfg)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background and subscribe (again after every reconnect)."""
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect; what was queued again stays in the outbox."""
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> dict[str, int]:
        """A copy of :attr:`counts`."""
        with self._lock:
            return dict(self.counts)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception:  # never into paho's thread: the responder must keep listening
            log.exception("resend request handling failed")
            self._count("refused")

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def handle(self, topic: str, payload: bytes, now: float | None = None) -> Outcome:
        """Answer one request (what an MQTT message does); never raises for any payload.

        Args:
            topic: the topic it arrived on.
            payload: raw payload.
            now: monotonic time (tests); None: now.

        Returns:
            ``resent`` (the archived alerts found are queued again), ``refused`` (unreadable or not for a
            valid range), ``duplicate`` (this request id was answered already), ``foreign`` (for another
            worker) or ``throttled`` (the per-minute budget is spent; the service asks again).
        """
        self._count("requests")
        if parse_resend_request_topic(topic, self.prefix) != self.worker_id:
            log.warning("resend request on %r is not for worker %s; ignored", topic[:300], self.worker_id)
            self._count("refused")
            return "foreign"
        if len(payload) > MAX_RESEND_REQUEST_BYTES:
            log.warning("resend request of %d bytes refused (limit %d)", len(payload), MAX_RESEND_REQUEST_BYTES)
            self._count("refused")
            return "refused"
        try:
            request = ResendRequestV1.model_validate_json(payload)
        except (ValidationError, ValueError) as exc:
            log.warning("resend request refused: %s", str(exc).replace("\n", "; ")[:500])
            self._count("refused")
            return "refused"
        if request.worker_id != self.worker_id:
            log.warning("resend request %s names worker %r, this is %s; ignored", request.request_id,
                        request.worker_id[:200], self.worker_id)
            self._count("refused")
            return "foreign"
        t = time.monotonic() if now is None else now
        count = min(request.count(), MAX_RESEND_ALERTS)
        with self._lock:
            if request.request_id in self._seen:
                self.counts["duplicate"] += 1
                return "duplicate"
            self._spent = [(at, n) for at, n in self._spent if t - at < 60.0]
            budget = self.max_alerts_per_minute - sum(n for _, n in self._spent)
            if budget < count:
                self.counts["throttled"] += 1
                log.warning("resend request %s (%d alerts) throttled: %d of %d per minute left",
                            request.request_id, count, max(0, budget), self.max_alerts_per_minute)
                return "throttled"
            self._spent.append((t, count))
            self._seen[request.request_id] = None
            while len(self._seen) > REMEMBERED_REQUESTS:
                self._seen.popitem(last=False)
        done = self.publisher.resend_archived([(r.first, r.last) for r in request.ranges], MAX_RESEND_ALERTS)
        self._count("resent", len(done.seqs))
        self._count("not_archived", done.missing)
        ranges = ", ".join(f"{r.first}..{r.last}" for r in request.ranges[:8])
        log.info("resend request %s (%s%s): %d alert(s) queued again, %d no longer archived",
                 request.request_id, ranges, ", ..." if len(request.ranges) > 8 else "", len(done.seqs),
                 done.missing)
        return "resent"
