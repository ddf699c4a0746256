"""Site plans with camera pins (pipeline/web/site_plan.py) on a real app and store: upload judged by content,
replace, pins, scope and role limits, refusals counted (SQLite; the upsert also on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site, pg_url  # noqa: F401 - pg_url: the fixture, by name


@pytest.fixture(params=["sqlite", "postgresql"])
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    app = create_app(make_site(tmp_path, database_url=url), start_consumer=False)
    with TestClient(app) as c:
        yield c


def _png(w: int = 320, h: int = 200, value: int = 180) -> bytes:
    img = np.full((h, w, 3), value, np.uint8)
    cv2.rectangle(img, (20, 20), (w - 20, h - 20), (40, 40, 40), 3)
    return cv2.imencode(".png", img)[1].tobytes()


def _upload(c: TestClient, token: str, data: bytes, grid: str | None = None, ctype: str = "image/png") -> object:
    params = {"grid": grid} if grid is not None else None
    return c.put("/site-plans/image", content=data, params=params,
                 headers={**bearer(token), "Content-Type": ctype})


def _refused(c: TestClient, admin: str) -> dict[str, float]:
    text = c.get("/metrics", headers=bearer(admin)).text
    out = {}
    for line in text.splitlines():
        if line.startswith("gridwatch_site_plan_uploads_refused_total{"):
            out[line.split('reason="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def test_upload_replace_pins_and_scope(client: TestClient) -> None:
    app = client.app
    admin = user_token(app, "root", Role.ADMIN, [])  # type: ignore[arg-type]
    r = _upload(client, admin, _png())
    assert r.status_code == 200, r.text  # type: ignore[attr-defined]
    site = r.json()  # type: ignore[attr-defined]
    assert (site["grid_path"], site["width"], site["height"], site["pins"]) == ([], 320, 200, [])
    img = client.get(site["image_url"], headers=bearer(admin))
    assert img.headers["content-type"] == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (200, 320, 3)
    pins = {"pins": [{"camera_id": "cam1", "x": 0.25, "y": 0.5}, {"camera_id": "cam3", "x": 0.75, "y": 0.5}]}
    r = client.put(f"/site-plans/{site['id']}/pins", json=pins, headers=bearer(admin))
    assert r.status_code == 200 and [p["camera_id"] for p in r.json()["pins"]] == ["cam1", "cam3"]
    # A new image for the same node replaces the old one (file too) and keeps the pins.
    old = app.state.tickets.evidence_dir / "site-plans"  # type: ignore[attr-defined]
    again = _upload(client, admin, _png(400, 300, 90)).json()  # type: ignore[attr-defined]
    assert again["id"] == site["id"] and again["sha256"] != site["sha256"] and len(again["pins"]) == 2
    assert len(list(old.glob("*.jpg"))) == 1
    d1 = _upload(client, admin, _png(), grid="T1/D1/").json()  # type: ignore[attr-defined]
    assert d1["grid_path"] == ["T1", "D1"] and d1["id"] != site["id"]
    bad = client.put(f"/site-plans/{d1['id']}/pins", json={"pins": [{"camera_id": "cam3", "x": 0.1, "y": 0.1}]},
                     headers=bearer(admin))
    assert bad.status_code == 400 and "inside grid node" in bad.json()["detail"]
    for body in ({"pins": [{"camera_id": "nope", "x": 0.1, "y": 0.1}]},
                 {"pins": [{"camera_id": "cam1", "x": 0.1, "y": 0.1}, {"camera_id": "cam1", "x": 0.2, "y": 0.1}]}):
        assert client.put(f"/site-plans/{d1['id']}/pins", json=body, headers=bearer(admin)).status_code == 400
    assert client.put(f"/site-plans/{d1['id']}/pins", json={"pins": [{"camera_id": "cam1", "x": 1.5, "y": 0}]},
                      headers=bearer(admin)).status_code == 422
    assert _upload(client, admin, _png(), grid="T1/D9").status_code == 404  # type: ignore[attr-defined]
    # A viewer of T1/D2/C2 sees the site's plan with only cam3's pin, and not D1's plan.
    viewer = user_token(app, "v", Role.VIEWER, ["T1/D2/C2"])  # type: ignore[arg-type]
    seen = client.get("/site-plans", headers=bearer(viewer)).json()
    assert [(p["grid_path"], [q["camera_id"] for q in p["pins"]]) for p in seen] == [([], ["cam3"])]
    assert client.get(d1["image_url"], headers=bearer(viewer)).status_code == 403
    assert client.get(site["image_url"], headers=bearer(viewer)).status_code == 200
    assert client.get("/site-plans/999999/image", headers=bearer(admin)).status_code == 404
    # Only an admin writes.
    for role, scopes in ((Role.PATROL, ["T1/D1/C1/G1"]), (Role.VIEWER, ["T1"]), (Role.DISPATCHER, ["T1"]),
                         (Role.ENGINEER, ["T1"])):
        tok = user_token(app, f"u-{role}", role, scopes)  # type: ignore[arg-type]
        assert _upload(client, tok, _png()).status_code == 403  # type: ignore[attr-defined]
        assert client.put(f"/site-plans/{site['id']}/pins", json={"pins": []},
                          headers=bearer(tok)).status_code == 403
    assert client.get("/site-plans").status_code == 401


def test_bad_uploads_are_refused_and_counted(client: TestClient) -> None:
    app = client.app
    admin = user_token(app, "root", Role.ADMIN, [])  # type: ignore[arg-type]
    jpeg = cv2.imencode(".jpg", np.full((50, 60, 3), 128, np.uint8))[1].tobytes()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    cases = [(svg, "image/png", 415), (gif, "image/png", 415), (jpeg + b"<script>alert(1)</script>", "image/jpeg", 415),
             (jpeg + b"PK\x03\x04zip", "image/jpeg", 415), (jpeg, "image/gif", 415), (jpeg, "text/html", 415),
             (b"\x00" * (15 * 1024 * 1024 + 1), "image/png", 413)]
    # A small PNG that claims 10000 x 10000 pixels in its header: refused before decoding.
    big = bytearray(_png(10, 10))
    big[16:24] = (10000).to_bytes(4, "big") * 2
    cases.append((bytes(big), "image/png", 413))
    for data, ctype, status in cases:
        r = _upload(client, admin, data, ctype=ctype)
        assert r.status_code == status, (ctype, status, r.text)  # type: ignore[attr-defined]
    assert _refused(client, admin) == {"type": 4.0, "polyglot": 2.0, "size": 1.0, "pixels": 1.0}
    assert client.get("/site-plans", headers=bearer(admin)).json() == []  # nothing stored
    assert _upload(client, admin, jpeg, ctype="image/jpeg").status_code == 200  # type: ignore[attr-defined]
