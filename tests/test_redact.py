"""Credentials never leave the process: redact_url/redact_text, every log record (tracebacks included),
the real reader's errors and log lines, the worker's retained health message on a real Mosquitto and
GET /cameras of the ticket API fed by that broker."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.config import CameraConfig, SiteConfig, WorkerConfig
from pipeline.ingest import CameraReader, LatestFrameMailbox
from pipeline.redact import install_log_redaction, redact_text, redact_url, register_secret
from tests.fixtures.auth import login
from tests.fixtures.mqtt import free_port

PASSWORD = "Sup3rS3cret"


@pytest.mark.parametrize(("url", "expected"), [
    ("rtsp://admin:Sup3rS3cret@10.0.0.7:554/ch1", "rtsp://***@10.0.0.7:554/ch1"),
    ("rtsp://admin@10.0.0.7/ch1", "rtsp://***@10.0.0.7/ch1"),
    ("rtsp://admin:p@ss@10.0.0.7/ch1", "rtsp://***@10.0.0.7/ch1"),  # unencoded '@' in the password
    ("rtsp://10.0.0.7/ch1?user=admin&password=Sup3rS3cret", "rtsp://10.0.0.7/ch1?user=admin&password=***"),
    ("http://cam/video.cgi?pwd=Sup3rS3cret&x=1", "http://cam/video.cgi?pwd=***&x=1"),
    ("http://cam/snap.jpg?token=abc;api_key=def", "http://cam/snap.jpg?token=***;api_key=***"),
    ("clips/gate.mp4", "clips/gate.mp4"),
    ("http://cam/path/a@b.jpg", "http://cam/path/a@b.jpg"),  # '@' in the path is no credential
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_every_url_in_a_message() -> None:
    text = ("[Errno 111] Connection refused: 'rtsp://admin:Sup3rS3cret@cam1/ch1'; fallback "
            "\"rtsps://op:x-Y_z@cam2:322/ch2\" and mqtt://gw:pw@broker:1883")
    assert redact_text(text) == ("[Errno 111] Connection refused: 'rtsp://***@cam1/ch1'; fallback "
                                 "\"rtsps://***@cam2:322/ch2\" and mqtt://***@broker:1883")


def test_registered_secrets_are_masked_outside_urls() -> None:
    register_secret("Zebra-Horse-9")
    register_secret("ab")  # too short to mask in free text
    assert redact_text("auth failed for password Zebra-Horse-9 (ab)") == "auth failed for password *** (ab)"


def test_every_log_record_is_redacted_including_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()
    log = logging.getLogger("tests.redact")
    url = f"rtsp://admin:{PASSWORD}@10.0.0.7/ch1"
    with caplog.at_level(logging.INFO):
        log.info("opening %s", url)
        log.warning(f"formatted eagerly: {url}")
        try:
            raise ConnectionRefusedError(111, "Connection refused", url)
        except OSError:
            log.exception("camera failed")
        log.info("no secret here: %d cameras", 3)
    assert PASSWORD not in caplog.text
    assert caplog.text.count("rtsp://***@10.0.0.7/ch1") == 3, caplog.text
    assert "Traceback (most recent call last)" in caplog.text
    clean = [r for r in caplog.records if r.getMessage() == "no secret here: 3 cameras"]
    assert clean and clean[0].args == (3,)  # records without secrets are left as they were


def _wait(cond: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.05)
    return cond()


def _closed_port_url(scheme: str = "rtsp") -> str:
    return f"{scheme}://admin:{PASSWORD}@127.0.0.1:{free_port()}/ch1"


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_reader_errors_and_log_lines_carry_no_password(scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    """PyAV's errors quote the URL with its credentials; the reader's health and log lines must not."""
    url = _closed_port_url(scheme)
    camera = CameraConfig(id="cam1", url=url, grid="G1")
    reader = CameraReader(camera, url, LatestFrameMailbox(), None,
                          WorkerConfig(reconnect_min_seconds=0.2, reconnect_max_seconds=0.5,
                                       open_timeout_seconds=2))
    with caplog.at_level(logging.INFO):
        reader.start()
        try:
            error = _wait(lambda: reader.health().last_error, 15)
        finally:
            reader.stop()
    assert error and "Connection refused" in error, error
    assert "***@127.0.0.1" in error, error  # the URL is there, masked
    assert PASSWORD not in error
    assert "***@127.0.0.1" in caplog.text and PASSWORD not in caplog.text, caplog.text


GRID = [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
    {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}]


def _site(tmp_path: Path, broker_url: str, camera_url: str) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": GRID,
        "cameras": [{"id": "gate", "url": camera_url, "grid": "G1"}],
        "mqtt": {"url": broker_url, "topic_prefix": "gwredact", "shared_group": None},
        "api": {"database_url": f"sqlite:///{tmp_path}/tickets.db", "evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "reconnect_min_seconds": 0.2,
                   "reconnect_max_seconds": 0.5, "open_timeout_seconds": 2, "health_interval_seconds": 0.5},
    })


class _HealthWatcher:
    """Subscribes to the retained health topics and keeps every payload."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="health-watcher")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(f"{prefix}/health/+", qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.payloads.append(bytes(msg.payload))

    def with_error(self) -> list[dict[str, Any]]:
        with self._lock:
            found = [json.loads(p) for p in self.payloads if p]
        return [h for h in found if h.get("last_error")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
def test_worker_health_and_api_cameras_carry_no_password(tmp_path: Path, mosquitto: Any,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.tickets.api import create_app
    from pipeline.worker import Worker

    broker = mosquitto()
    site = _site(tmp_path, broker.url, _closed_port_url())
    watcher = _HealthWatcher(broker.host, broker.port, "gwredact")
    caplog.set_level(logging.INFO)
    worker = Worker(site, worker_id="w-redact")
    try:
        with TestClient(create_app(site)) as client:
            login(client)
            worker.start()
            health = _wait(watcher.with_error, 20)
            assert health, watcher.payloads
            cameras = _wait(lambda: [c for c in client.get("/cameras").json()
                                     if c["health"] and c["health"]["last_error"]], 20)
            assert cameras, client.get("/cameras").json()
            api_text = client.get("/cameras").text
            worker.stop()  # no newer health from it may overwrite the next message
            published = b"\n".join(watcher.payloads).decode()

            # A health message from a worker that does not redact (older version) is masked by the API.
            raw = {"camera_id": "gate", "state": "reconnecting",
                   "last_error": f"ConnectionRefusedError: rtsp://admin:{PASSWORD}@10.0.0.9/ch1"}
            watcher.client.publish("gwredact/health/gate", json.dumps(raw), qos=1, retain=True).wait_for_publish(5)
            old = _wait(lambda: [c for c in client.get("/cameras").json() if c["health"]
                                 and "10.0.0.9" in (c["health"]["last_error"] or "")], 20)
    finally:
        worker.stop()
        watcher.close()
    assert "***@127.0.0.1" in health[0]["last_error"] and health[0]["url"].startswith("rtsp://***@127.0.0.1:")
    assert PASSWORD not in published, published
    assert "***@127.0.0.1" in api_text and PASSWORD not in api_text, api_text
    assert old and old[0]["health"]["last_error"] == "ConnectionRefusedError: rtsp://***@10.0.0.9/ch1"
    assert "Connection refused" in caplog.text and PASSWORD not in caplog.text
