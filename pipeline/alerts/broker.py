"""Embedded MQTT broker (amqtt) for the zero-config demo.

``gridwatch run`` without an ``mqtt.url`` starts this broker in-process so that the worker, the
ticket consumer and ``mosquitto_sub`` users have something to talk to. It is an MQTT 3.1.1 broker
running in its own thread with its own asyncio loop; production sites should use Mosquitto, EMQX or
another real broker (persistence across restarts, shared subscriptions, ACLs, TLS).

Caveats of the embedded broker (amqtt 0.12):
    * no persistence: sessions, queued QoS 1 messages and retained messages are lost when the
      process stops;
    * no ``$share/<group>/...`` shared subscriptions: set ``mqtt.shared_group: null``;
    * anonymous access, plain TCP on the given address only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedBrokerError(OSError):
    """The embedded broker could not be started (e.g. the port is busy)."""


class EmbeddedBroker:
    """An amqtt broker in a background thread.

    Args:
        host: listen address.
        port: listen port; 0 picks a free port (read it from ``.port`` after ``start()``).

    Example:
        >>> import paho.mqtt.client as mqtt
        >>> broker = EmbeddedBroker(port=0)
        >>> broker.start()
        >>> c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        >>> c.connect(broker.host, broker.port) == 0
        True
        >>> c.disconnect() == 0
        True
        >>> broker.stop()
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self._requested_port = port
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started: Future[int] | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the running broker."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker; returns once it accepts MQTT connections.

        Raises:
            EmbeddedBrokerError: the port is taken or the broker did not come up in ``timeout``.
        """
        if self.running:
            return
        port = self._requested_port or _free_port(self.host)
        self._started = Future()
        self._thread = threading.Thread(target=self._run, args=(port,), name="gridwatch-broker", daemon=True)
        self._thread.start()
        try:
            self.port = self._started.result(timeout)
        except Exception as exc:
            self.stop()
            raise EmbeddedBrokerError(f"embedded MQTT broker on {self.host}:{port} failed: {exc}") from exc
        deadline = time.monotonic() + timeout
        while not _mqtt_ping(self.host, self.port):
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedBrokerError(f"embedded MQTT broker on {self.host}:{self.port} does not answer")
            time.sleep(0.05)
        log.info("embedded MQTT broker listening on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_event_set)
            thread.join(timeout)
        self._thread = None
        self._loop = None

    # -- broker thread -------------------------------------------------------------------------

    def _stop_event_set(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    def _run(self, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(port))
        except Exception as exc:
            if self._started is not None and not self._started.done():
                self._started.set_exception(exc)  # start() reports it
            else:
                log.exception("embedded MQTT broker crashed")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self, port: int) -> None:
        from amqtt.broker import Broker

        config: dict[str, Any] = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{port}"}},
            "timeout_disconnect_delay": 0,
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._stop_event = asyncio.Event()
        broker = Broker(config)
        self._broker = broker
        await broker.start()
        assert self._started is not None
        bound = port
        server = broker._servers.get("default")
        if server is not None and getattr(server.instance, "sockets", None):
            bound = int(server.instance.sockets[0].getsockname()[1])
        self._started.set_result(bound)
        try:
            await self._stop_event.wait()
        finally:
            try:
                await asyncio.wait_for(broker.shutdown(), 10)
            except Exception:  # pragma: no cover - best effort on the way out
                log.warning("embedded MQTT broker did not shut down cleanly", exc_info=True)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _mqtt_ping(host: str, port: int) -> bool:
    """True when an MQTT client can connect (CONNACK 0) and disconnect."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gridwatch-probe-{time.monotonic_ns()}")
    try:
        return bool(c.connect(host, port, keepalive=10) == mqtt.MQTT_ERR_SUCCESS and _wait_connack(c))
    except OSError:
        return False
    finally:
        with contextlib.suppress(Exception):
            c.disconnect()


def _wait_connack(c: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c.loop(timeout=0.1)
        if c.is_connected():
            return True
    return False
