"""The command-centre page in a real headless Chromium: it renders live tickets and cameras from the API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from pipeline.alerts.schema import alert_topic
from pipeline.tickets.api import create_app
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.payload import parse_alert
from pipeline.tickets.service import apply_alert
from tests.tickets.conftest import make_alert, make_site

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)"),
]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    site = make_site(tmp_path)
    site = site.model_copy(update={"api": site.api.model_copy(update={"port": _free_port()})})
    sessions = session_factory(init_db(site.database_url()))
    for cam, hazard in (("cam1", "parking"), ("cam3", "fire")):
        alert = make_alert(camera=cam, hazard=hazard, incident_id=f"{cam}-z1-{hazard}-browser-1")
        topic = alert_topic("gwtest", alert.grid.path, cam, hazard)
        apply_alert(sessions, parse_alert(topic, alert.model_dump_json().encode(), "gwtest"))
    server = uvicorn.Server(uvicorn.Config(create_app(site, start_consumer=False), host="127.0.0.1",
                                           port=site.api.port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{site.api.port}/"
    server.should_exit = True


def _chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    out = subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                         capture_output=True, text=True, timeout=90)
    return out.stdout


def test_page_lists_live_tickets_and_cameras(served: str, tmp_path: Path) -> None:
    dom = _chromium(tmp_path, "--virtual-time-budget=8000", "--dump-dom", served)
    # Rendered by the page's JS from /tickets and /cameras, not present in the static HTML.
    tickets_html = dom.split('id="tickets"', 1)[1].split("</table>", 1)[0]
    assert tickets_html.count("<tr") >= 3, tickets_html  # header + 2 tickets
    assert "fire" in tickets_html and "parking" in tickets_html
    cameras_html = dom.split('id="cameras"', 1)[1].split("</ul>", 1)[0]
    assert "North gate" in cameras_html


def test_page_screenshot(served: str, tmp_path: Path) -> None:
    shot = tmp_path / "page.png"
    _chromium(tmp_path, "--virtual-time-budget=8000", "--window-size=1280,800", f"--screenshot={shot}", served)
    assert shot.is_file() and shot.stat().st_size > 10_000
    if (keep := Path("var")).is_dir():
        shutil.copy(shot, keep / "command-centre.png")  # for a person to look at
