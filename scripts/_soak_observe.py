"""What the soak (scripts/soak.py) watches: an MQTT tap on the alerts, the burst, the ticket API, the outboxes.

* :class:`AlertTap`: its own persistent MQTT session on ``<prefix>/alerts/#`` records every alert the broker
  delivers (not a shared subscription, so it sees what the ticket consumer's group sees).
* :func:`burst_alerts` / :class:`BurstPublisher`: valid ``AlertV1`` payloads with their own ``worker_id`` and
  ``seq``, published at once with QoS 1 directly to the broker.
* :class:`TicketApi`: ``/tickets`` (all pages, details with events), ``/dead-letters``, ``/metrics``.
* :func:`outbox_counts`: alerts a worker ever queued (the outbox's AUTOINCREMENT counter) and still pending.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from pipeline.alerts.schema import AlertV1, CameraRef, Evidence, GridRef, ZoneRef, alert_topic, example_alert

AlertKey = tuple[str, str, float]
"""(incident_id, event, ts as Unix seconds rounded to microseconds): one alert message, as the service keys it."""


def alert_key(payload: dict[str, Any]) -> AlertKey | None:
    """The key of an alert JSON object; None when it lacks the fields."""
    try:
        ts = datetime.fromisoformat(str(payload["ts"]).replace("Z", "+00:00"))
        return str(payload["incident_id"]), str(payload["event"]), round(ts.timestamp(), 6)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class TapRecord:
    """One delivery seen by the tap."""

    key: AlertKey
    camera_id: str
    received: float  # time.monotonic()


class AlertTap:
    """A persistent-session subscriber that records every alert delivery (redeliveries included).

    Args:
        port: broker port on 127.0.0.1.
        prefix: topic prefix.
        client_id: stable id (its session, and so its queue, survives broker restarts).
    """

    def __init__(self, port: int, prefix: str, client_id: str) -> None:
        self.topic = f"{prefix}/alerts/#"
        self.records: list[TapRecord] = []
        self.unparsable = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(1, 5)
        c.on_connect = lambda cl, *_: cl.subscribe(self.topic, qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        self._client = c
        self._port = port

    def start(self, timeout: float = 15.0) -> None:
        """Connect and subscribe (raises RuntimeError after ``timeout``)."""
        self._client.connect_async("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the alert tap did not subscribe")

    def stop(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
            key = alert_key(data)
            camera = str(data["camera"]["id"])
        except (ValueError, KeyError, TypeError):
            key = None
            camera = ""
        with self._lock:
            if key is None:
                self.unparsable += 1
            else:
                self.records.append(TapRecord(key, camera, time.monotonic()))

    def snapshot(self) -> list[TapRecord]:
        """The deliveries so far."""
        with self._lock:
            return list(self.records)


def burst_alerts(n: int, prefix: str, grid_path: list[str], worker_id: str, run_id: str) -> list[tuple[str, bytes]]:
    """``n`` valid ``opened`` alerts, seq 1..n of ``worker_id``; each its own incident and zone.

    A zone each keeps the duplicate-open guard from attaching them to one another.
    """
    base = example_alert()
    now = datetime.now(UTC)
    out = []
    for i in range(1, n + 1):
        alert = base.model_copy(update={
            "incident_id": f"soak-burst-{run_id}-{i}", "worker_id": worker_id, "seq": i, "ts": now,
            "started_at": now, "camera": CameraRef(id="soak-burst", name="soak burst"),
            "grid": GridRef(path=grid_path, names=[f"level {i}" for i in range(1, 5)]),
            "zone": ZoneRef(id=f"burst-{i}", kind="fire_lane"),
            "evidence": Evidence()})
        AlertV1.model_validate(alert.model_dump())  # a burst of invalid alerts would prove nothing
        out.append((alert_topic(prefix, grid_path, alert.camera.id, str(alert.hazard)), alert.to_bytes()))
    return out


@dataclass
class BurstPublisher:
    """Publishes the burst in a thread (QoS 1, many in flight); ``acked`` counts PUBACKs."""

    port: int
    messages: list[tuple[str, bytes]]
    timeout: float = 300.0
    acked: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start publishing."""
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="soak-burst", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether PUBACKs are still outstanding."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-burst-{uuid.uuid4().hex[:6]}")
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        try:
            c.connect("127.0.0.1", self.port)
            c.loop_start()
            infos = [c.publish(t, p, qos=1) for t, p in self.messages]
            deadline = time.monotonic() + self.timeout
            for info in infos:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
                if info.is_published():
                    self.acked += 1
        except Exception as exc:  # noqa: BLE001 - reported, not raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = time.monotonic()
            try:
                c.disconnect()
                c.loop_stop()
            except Exception:  # noqa: BLE001, S110
                pass


class TicketApi:
    """Reads the ticket API over HTTP (every call bounded by ``timeout``).

    Logs in as ``username`` (``POST /auth/login``, a bearer token) when a read answers 401, so it works with
    an API that requires logins and with one that does not.
    """

    def __init__(self, base: str, username: str, password: str, timeout: float = 20.0) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._login = {"username": username, "password": password}
        self._token: str | None = None
        self.errors: list[str] = []
        """Server errors and timeouts answered by the API (retried), e.g. ``GET /tickets: 500``."""

    def _request(self, path: str, body: dict[str, str] | None = None) -> bytes:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - loopback URL we built
            return bytes(resp.read())

    def _get(self, path: str, tries: int = 6) -> bytes:
        """GET with a login on 401 and up to ``tries`` attempts on 5xx or a timeout (counted in ``errors``)."""
        for attempt in range(tries):
            try:
                return self._request(path)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    self._token = str(json.loads(self._request("/auth/login", self._login))["token"])
                    continue
                if exc.code < 500 or attempt == tries - 1:
                    raise
                self.errors.append(f"GET {path.split('?')[0]}: {exc.code}")
            except (TimeoutError, urllib.error.URLError) as exc:
                if attempt == tries - 1:
                    raise
                self.errors.append(f"GET {path.split('?')[0]}: {exc}")
            time.sleep(2.0)
        raise RuntimeError(f"GET {path}: no answer after {tries} tries")

    def json(self, path: str) -> Any:
        """GET ``path`` as JSON."""
        return json.loads(self._get(path))

    def tickets(self, page: int = 500) -> list[dict[str, Any]]:
        """Every ticket (all pages)."""
        out: list[dict[str, Any]] = []
        for _ in range(10_000):  # bounded: 5 M tickets
            items = self.json(f"/tickets?limit={page}&offset={len(out)}")["items"]
            out += items
            if len(items) < page:
                break
        return out

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        """One ticket with its events."""
        return dict(self.json(f"/tickets/{ticket_id}"))

    def dead_letters(self, page: int = 500) -> list[dict[str, Any]]:
        """Every dead letter (all pages)."""
        out: list[dict[str, Any]] = []
        for _ in range(10_000):
            items = self.json(f"/dead-letters?limit={page}&offset={len(out)}")
            out += items
            if len(items) < page:
                break
        return out

    def metrics(self, tries: int = 6) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """``/metrics`` as {sample name: {sorted labels: value}}."""
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(self._get("/metrics", tries).decode()):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
        return out

    def processed(self) -> float | None:
        """Messages the consumer finished since the API started (applied + dead-lettered); None if down."""
        try:
            m = self.metrics(tries=1)  # a sample, not worth waiting for
        except (urllib.error.URLError, OSError, ValueError, RuntimeError):
            return None
        return sum(m.get("gridwatch_alerts_consumed_total", {}).values()) + \
            sum(m.get("gridwatch_dead_letters_received_total", {}).values())


def outbox_counts(path: Path) -> tuple[int, int]:
    """(alerts ever queued, still pending) of a worker outbox; (0, 0) before it exists."""
    if not path.is_file():
        return 0, 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        pending = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return (int(row[0]) if row else 0), int(pending[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    finally:
        db.close()
