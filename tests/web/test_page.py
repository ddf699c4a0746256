"""The command-centre page is served by the API, self-contained (no CDN) and wired to the REST API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.web.router import STATIC_DIR
from tests.fixtures.auth import login
from tests.tickets.conftest import make_site


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_site(tmp_path), start_consumer=False)) as c:
        login(c)
        yield c


def test_index_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    for needle in ('id="tickets"', 'id="cameras"', 'id="detail"', 'id="status-filter"', 'id="hazard-filter"',
                   'src="/static/app.js"', 'href="/static/app.css"'):
        assert needle in html, needle


@pytest.mark.parametrize(("path", "ctype"), [("/static/app.js", "javascript"),
                                             ("/static/app.css", "text/css")])
def test_assets_served(client: TestClient, path: str, ctype: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and ctype in r.headers["content-type"]


@pytest.mark.parametrize("name", ["index.html", "app.js", "app.css"])
def test_no_external_resources(name: str) -> None:
    text = (STATIC_DIR / name).read_text()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", text)
    assert "@import" not in text and "cdn" not in text.lower()


@pytest.mark.parametrize("endpoint", ["/tickets", "/cameras", "/grid", "/healthz", "/transition",
                                      "evidence.snapshot", "evidence.clip"])
def test_script_uses_api(endpoint: str) -> None:
    assert endpoint in (STATIC_DIR / "app.js").read_text()


def test_api_endpoints_used_by_page_exist(client: TestClient) -> None:
    for path in ("/tickets?status=received&status=dispatched&hazard=fire&grid=T1&limit=200", "/cameras", "/grid",
                 "/healthz"):
        assert client.get(path).status_code == 200, path
