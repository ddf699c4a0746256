"""The command-centre page in a real headless Chromium (DevTools protocol): log in through its form, then it
renders live tickets and cameras from the API."""

from __future__ import annotations

import shutil
import socket
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
from tests.fixtures.auth import TEST_ADMIN_PASSWORD
from tests.tickets.conftest import make_alert, make_site
from tests.web.cdp import Browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)"),
]


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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(str(CHROMIUM), tmp_path / "chromium-profile")
    yield b
    b.close()


def _log_in(browser: Browser, url: str, password: str = TEST_ADMIN_PASSWORD) -> None:
    browser.goto(url)
    browser.wait_for("!document.getElementById('login').hidden")  # not logged in: only the form shows
    assert browser.js("document.getElementById('app').hidden")
    browser.js(f"""document.getElementById('login-user').value = 'admin';
                  document.getElementById('login-password').value = {password!r};
                  document.getElementById('login').requestSubmit();""")


def test_login_form_then_live_tickets_and_cameras(served: str, browser: Browser) -> None:
    _log_in(browser, served, password="wrong")
    browser.wait_for("document.getElementById('login-error').textContent.includes('wrong user name')")
    _log_in(browser, served)
    # Rendered by the page's JS from /tickets and /cameras after the login, not in the static HTML.
    browser.wait_for("document.querySelectorAll('#tickets tbody tr').length >= 2")
    tickets_html = browser.js("document.getElementById('tickets').outerHTML")
    assert "fire" in tickets_html and "parking" in tickets_html
    browser.wait_for("document.getElementById('cameras').textContent.includes('North gate')")
    assert browser.js("document.getElementById('whoami-name').textContent").startswith("admin (admin")
    # The session is an HttpOnly cookie: the page's script cannot read it.
    assert "gridwatch_session" not in browser.js("document.cookie")
    # A move from the page is made by the logged-in user.
    browser.js("document.querySelector('#tickets tbody tr').click()")
    browser.wait_for("!!document.querySelector('#detail button[data-to=verified]')")
    browser.js("document.querySelector('#detail button[data-to=verified]').click()")
    browser.wait_for("document.querySelector('#detail .events').textContent.includes('by admin')")
    browser.js("document.getElementById('logout').click()")
    browser.wait_for("!document.getElementById('login').hidden")
    browser.goto(served)  # the revoked session does not come back on reload
    browser.wait_for("!document.getElementById('login').hidden")


def test_page_screenshot(served: str, browser: Browser, tmp_path: Path) -> None:
    _log_in(browser, served)
    browser.wait_for("document.querySelectorAll('#tickets tbody tr').length >= 2")
    browser.wait_for("document.getElementById('cameras').children.length >= 1")
    shot = tmp_path / "page.png"
    browser.screenshot(shot)
    assert shot.is_file() and shot.stat().st_size > 10_000
    if (keep := Path("var")).is_dir():
        shutil.copy(shot, keep / "command-centre.png")  # for a person to look at
