"""Live debug view: the API asks a camera's worker over MQTT for its latest analysed frame, drawn.

Nothing is drawn or kept for cameras nobody watches. A request marks its camera *watched* for
:data:`WATCH_SECONDS`; while watched, the worker keeps a reference to the camera's latest analysed frame
with its detections, zones and rule states (:class:`DebugFrames`; one frame per watched camera). The
first request to an unwatched camera waits for its next analysed frame. The picture is drawn by
:func:`pipeline.annotate.draw_debug`, the same drawing as ``gridwatch replay --annotate``.

Topics (under ``mqtt.topic_prefix``, built in :mod:`pipeline.contract.topics`), QoS 0, never retained (a
stale picture is worse than none):

* ``<prefix>/debug/request/<camera>``: API -> workers, :class:`~pipeline.contract.messages.DebugRequestV1`
  ``{"reply_to": "<prefix>/debug/reply/<camera>/<id>"}``. Every worker sees it; the one running the camera
  answers.
* ``<prefix>/debug/reply/<camera>/<id>``: that worker -> API, the JPEG bytes; an empty payload means the
  camera had no analysed frame within the wait (e.g. it is not streaming).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.annotate import draw_debug, encode_jpeg
from pipeline.config import MqttConfig
from pipeline.contract.messages import DebugRequestV1
from pipeline.contract.topics import (
    debug_reply_filter,
    debug_reply_prefix,
    debug_reply_topic,
    debug_request_filter,
    debug_request_topic,
    parse_debug_request_topic,
    valid_debug_reply_to,
)
from pipeline.detect.detections import Detections
from pipeline.ingest.frame import Frame
from pipeline.mqtt_url import broker_address, configure_client

log = logging.getLogger(__name__)

WATCH_SECONDS = 30.0
"""How long after a request a camera's analysed frames are kept for the next one."""
FRAME_WAIT_SECONDS = 3.0
"""How long a worker waits for an unwatched camera's next analysed frame."""


@dataclass(frozen=True)
class DebugFrame:
    """What the debug picture is drawn from (captured in the analysis thread, drawn elsewhere)."""

    frame: Frame
    detections: dict[str, Detections]
    rules: list[dict[str, Any]]
    zones_px: dict[str, np.ndarray]
    decode: str

    def jpeg(self, quality: int = 80) -> bytes:
        """The frame with boxes, zones and rule states drawn, as JPEG."""
        when = datetime.fromtimestamp(self.frame.ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        age = max(0.0, time.time() - self.frame.ts)
        header = f"{self.frame.camera_id} {self.decode} seq {self.frame.seq}  {when} ({age:.1f} s ago)"
        return encode_jpeg(draw_debug(self.frame.image, self.zones_px, self.detections, self.rules, header,
                                      now=self.frame.ts), quality)


class DebugFrames:
    """Latest analysed frame per *watched* camera (thread-safe).

    The analysis thread calls :meth:`wants` (cheap) and, when true, :meth:`offer`; the responder calls
    :meth:`latest`.
    """

    def __init__(self, watch_seconds: float = WATCH_SECONDS) -> None:
        self.watch_seconds = watch_seconds
        self._watched: dict[str, float] = {}
        self._views: dict[str, DebugFrame] = {}
        self._cond = threading.Condition()

    def wants(self, camera_id: str) -> bool:
        """Whether someone watched ``camera_id`` in the last ``watch_seconds``."""
        until = self._watched.get(camera_id)
        if until is None:
            return False
        if time.monotonic() > until:
            with self._cond:
                self._watched.pop(camera_id, None)
                self._views.pop(camera_id, None)  # free the frame
            return False
        return True

    def offer(self, frame: Frame, detections: dict[str, Detections], analyzer: CameraAnalyzer) -> None:
        """Keep ``frame`` as ``analyzer``'s camera's latest (call right after ``analyzer.analyze``)."""
        states = getattr(analyzer, "rule_states", None)
        view = DebugFrame(frame, dict(detections), list(states()) if callable(states) else [],
                          analyzer.zone_polygons_px(frame.width, frame.height), analyzer.camera.decode.value)
        with self._cond:
            self._views[frame.camera_id] = view
            self._cond.notify_all()

    def latest(self, camera_id: str, wait_s: float = FRAME_WAIT_SECONDS) -> DebugFrame | None:
        """Mark ``camera_id`` watched; its latest analysed frame, waiting up to ``wait_s`` for one."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._watched[camera_id] = time.monotonic() + self.watch_seconds
            while camera_id not in self._views:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._views[camera_id]


def _client(mqtt: MqttConfig, client_id: str, side: Literal["worker", "service"]) -> paho.Client:
    addr = broker_address(mqtt, side)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id[:128], clean_session=True,
                    protocol=MQTTProtocolVersion.MQTTv311, transport=addr.transport)
    configure_client(c, addr, mqtt)
    c.reconnect_delay_set(min_delay=1, max_delay=10)
    return c


class DebugResponder:
    """The worker's side: answers debug requests for its cameras from :class:`DebugFrames`.

    Args:
        mqtt: the site's MQTT settings.
        client_id: MQTT client id (unique per worker).
        frames: where the analysis threads keep watched cameras' frames.
        camera_ids: the cameras this worker runs (requests for others are left to their workers).
    """

    def __init__(self, mqtt: MqttConfig, client_id: str, frames: DebugFrames, camera_ids: Iterable[str]) -> None:
        self.prefix = mqtt.topic_prefix
        self.frames = frames
        self.cameras = set(camera_ids)
        self.served = 0
        self.empty = 0
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gridwatch-debug")
        self._address = broker_address(mqtt)
        self._client = _client(mqtt, client_id, "worker")
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self.subscribed = threading.Event()
        """Set once the broker has acknowledged the request subscription (requests before it are not seen)."""
        self._client.on_subscribe = lambda *_: self.subscribed.set()

    def start(self) -> None:
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if not reason_code.is_failure:
            client.subscribe(debug_request_filter(self.prefix), qos=0)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        camera_id = parse_debug_request_topic(msg.topic, self.prefix)
        if camera_id is None or camera_id not in self.cameras:
            return
        try:
            reply_to = DebugRequestV1.model_validate_json(msg.payload).reply_to
        except ValueError:  # pydantic's ValidationError: not JSON, or no usable reply_to
            log.warning("debug request for %s without a valid reply_to: %r", camera_id, msg.payload[:100])
            return
        if not valid_debug_reply_to(reply_to, self.prefix, camera_id):
            log.warning("debug request for %s: reply_to %r is not under %s", camera_id, reply_to,
                        debug_reply_prefix(self.prefix, camera_id))
            return
        self._pool.submit(self._answer, camera_id, reply_to)  # drawing must not block the network loop

    def _answer(self, camera_id: str, reply_to: str) -> None:
        try:
            view = self.frames.latest(camera_id)
            payload = view.jpeg() if view is not None else b""
        except Exception:  # noqa: BLE001 - a bad drawing must not kill the responder
            log.exception("debug view of %s failed", camera_id)
            payload = b""
        if payload:
            self.served += 1
        else:
            self.empty += 1
        self._client.publish(reply_to, payload, qos=0, retain=False)


class DebugUnavailable(RuntimeError):
    """The API's MQTT client is not connected to the broker."""


class DebugRequester:
    """The API's side: asks for a camera's debug picture and waits for the answer.

    Args:
        mqtt: the site's MQTT settings.
        client_id: MQTT client id.
        connect_timeout: how long the first request waits for the broker connection (later ones do not).
    """

    def __init__(self, mqtt: MqttConfig, client_id: str, connect_timeout: float = 5.0) -> None:
        self.prefix = mqtt.topic_prefix
        self.connect_timeout = connect_timeout
        self._address = broker_address(mqtt, "service")  # the API's broker user (ACL: requests, replies)
        self._client = _client(mqtt, client_id, "service")
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[threading.Event, list[bytes]]] = {}
        self._started = False
        self._connect_wait = connect_timeout

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any = None) -> None:
        if not reason_code.is_failure:
            client.subscribe(debug_reply_filter(self.prefix), qos=0)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any = None) -> None:
        self._subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any = None) -> None:
        self._subscribed.clear()  # requests fail fast (503) until the reconnect has subscribed again

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            waiting = self._pending.get(msg.topic)
        if waiting is not None:
            waiting[1].append(bytes(msg.payload))
            waiting[0].set()

    def fetch(self, camera_id: str, timeout: float) -> bytes | None:
        """The camera's JPEG; ``b""`` when its worker had no analysed frame; None when no worker answered
        within ``timeout`` seconds.

        Raises:
            DebugUnavailable: not connected to the broker within ``connect_timeout``.
        """
        self._start()
        # Only the first request waits for the connection; while the broker stays away (paho keeps
        # reconnecting in the background) the others answer at once instead of piling up.
        wait, self._connect_wait = self._connect_wait, 0.0
        if not self._subscribed.wait(wait):
            raise DebugUnavailable(f"not connected to the MQTT broker {self._address.describe()}")
        reply_to = debug_reply_topic(self.prefix, camera_id, uuid.uuid4().hex)
        done = threading.Event()
        box: list[bytes] = []
        with self._lock:
            self._pending[reply_to] = (done, box)
        try:
            self._client.publish(debug_request_topic(self.prefix, camera_id),
                                 DebugRequestV1(reply_to=reply_to).to_bytes(), qos=0)
            if not done.wait(timeout):
                return None
            return box[0]
        finally:
            with self._lock:
                self._pending.pop(reply_to, None)

