"""A real ticket API served by uvicorn in a thread (for the SSE and wall/phone tests), and alert helpers."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from pipeline.alerts.schema import alert_topic
from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.tickets.payload import parse_alert
from pipeline.tickets.service import apply_alert
from tests.tickets.conftest import make_alert


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running API: its base URL (ending in ``/``), the app, and stop/start of its server (same port)."""

    url: str
    app: FastAPI
    port: int
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve the app on ``port`` (again)."""
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1)  # open SSE streams must not hold a stop up
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving (open connections are cut within about a second)."""
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(15)
            self.server = self.thread = None

    def post_alert(self, camera: str, hazard: str, snapshot: Path | None = None, **update: Any) -> str:
        """Feed one ``opened`` alert through the consumer's service path; returns its incident id.

        ``snapshot``: a JPEG put where the worker writes the incident's snapshot (evidence dir).
        """
        alert = make_alert(camera=camera, hazard=hazard, ts=time.time(), **update)
        if snapshot is not None:
            folder = self.app.state.tickets.evidence_dir / alert.incident_id
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(snapshot, folder / "snapshot.jpg")
        topic = alert_topic("gwtest", alert.grid.path, camera, hazard)
        apply_alert(self.app.state.tickets.sessions, parse_alert(topic, alert.model_dump_json().encode(), "gwtest"))
        return alert.incident_id


@contextmanager
def serve(site: SiteConfig) -> Iterator[Served]:
    """Run ``create_app(site)`` (no MQTT consumer) on a free port until the block ends."""
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}/", create_app(site, start_consumer=False), port)
    served.start()
    try:
        yield served
    finally:
        served.stop()
