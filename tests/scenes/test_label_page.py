"""The labelling page: its API (crops, image, labels, errors, roles and scope) and a real Chromium round trip:
an engineer logs in on /scenes/lane/label, clicks a state under a crop, and the label is in labels.json."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect, sync_playwright

from pipeline.config import SiteConfig
from pipeline.scenes.jobs import scene_store
from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.scenes.conftest import T0
from tests.web.wall_stack import serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "scene-label-Pw7!q"


def _crops(site: SiteConfig, n: int = 3) -> list[str]:
    store = scene_store(site, site.scenes[0])
    return [store.add_crop(np.full((40, 80, 3), 30 * i, np.uint8), T0 + 10 * i) for i in range(n)]


@pytest.fixture
def client(site: SiteConfig) -> Iterator[TestClient]:
    with TestClient(create_app(site, start_consumer=False)) as c:
        yield c


def test_label_round_trip_through_the_api(site: SiteConfig, client: TestClient) -> None:
    names = _crops(site)
    eng = bearer(user_token(client.app, "eng", Role.ENGINEER, ["T1"]))  # type: ignore[arg-type]
    listed = client.get("/scenes", headers=eng).json()
    assert listed[0]["scene"] == "lane" and listed[0]["crops"] == 3 and listed[0]["labelled"] == 0
    body = client.get("/scenes/lane/crops", headers=eng).json()
    assert body["states"] == ["clear", "blocked"] and body["name"] == "消防通道占用"
    assert [c["name"] for c in body["crops"]] == names[::-1]  # newest first
    img = client.get(f"/scenes/lane/crops/{names[0]}", headers=eng)
    assert img.status_code == 200 and img.content[:2] == b"\xff\xd8"
    r = client.put(f"/scenes/lane/labels/{names[1]}", json={"state": "blocked"}, headers=eng)
    assert r.status_code == 200 and r.json() == {"name": names[1], "state": "blocked"}
    labels = json.loads((Path(site.scenes[0].data_path()) / "labels.json").read_text())
    assert labels == {names[1]: "blocked"}
    assert client.put(f"/scenes/lane/labels/{names[1]}", json={"state": None}, headers=eng).json()["state"] is None
    assert json.loads((Path(site.scenes[0].data_path()) / "labels.json").read_text()) == {}
    # wrong state, unknown crop, unknown scene, path tricks: refused, nothing written
    assert client.put(f"/scenes/lane/labels/{names[0]}", json={"state": "full"}, headers=eng).status_code == 422
    assert client.put("/scenes/lane/labels/1796000999000.jpg", json={"state": "clear"},
                      headers=eng).status_code == 404
    assert client.get("/scenes/nope/crops", headers=eng).status_code == 404
    assert client.get("/scenes/lane/crops/..%2Flabels.json", headers=eng).status_code in (404, 422)
    assert json.loads((Path(site.scenes[0].data_path()) / "labels.json").read_text()) == {}


def test_roles_and_scope(site: SiteConfig, client: TestClient) -> None:
    _crops(site, 1)
    dispatcher = bearer(user_token(client.app, "disp", Role.DISPATCHER, ["T1"]))  # type: ignore[arg-type]
    outsider = bearer(user_token(client.app, "far", Role.ENGINEER, ["T1/D2"]))  # type: ignore[arg-type]
    assert client.get("/scenes/lane/crops", headers=dispatcher).status_code == 403
    r = client.get("/scenes/lane/crops", headers=outsider)
    assert r.status_code == 403 and "scope" in r.text
    assert client.get("/scenes", headers=outsider).json() == []
    assert client.get("/scenes/lane/crops").status_code == 401
    page = client.get("/scenes/lane/label")  # the shell has no data: it logs in itself
    assert page.status_code == 200 and "场景标注" in page.text and "/auth/login" in page.text


def test_scope_follows_the_scene_camera_in_the_database(tmp_path: Path) -> None:
    """A scene on a camera the YAML lacks: outside every engineer's scope until the camera is added over the
    API; moving the camera to another cell moves the scene's scope with it."""
    from tests.scenes.conftest import scene_site

    site = scene_site(tmp_path, camera="cam7")
    with TestClient(create_app(site, start_consumer=False)) as c:
        admin = bearer(user_token(c.app, "admin", Role.ADMIN, []))  # type: ignore[arg-type]
        g2 = bearer(user_token(c.app, "eng2", Role.ENGINEER, ["T1/D1/C1/G2"]))  # type: ignore[arg-type]
        assert c.get("/scenes/lane/crops", headers=g2).status_code == 403
        cam7 = {"id": "cam7", "url": "e.mp4", "grid": "G2"}
        assert c.post("/cameras", json=cam7, headers=admin).status_code == 201
        assert c.get("/scenes/lane/crops", headers=g2).status_code == 200
        assert [s["scene"] for s in c.get("/scenes", headers=g2).json()] == ["lane"]
        assert c.put("/cameras/cam7", json={**cam7, "grid": "G1"}, headers=admin).status_code == 200
        assert c.get("/scenes/lane/crops", headers=g2).status_code == 403


@pytest.mark.integration
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium)")
def test_engineer_labels_a_crop_in_chromium(site: SiteConfig) -> None:
    names = _crops(site, 5)
    labels_file = Path(site.scenes[0].data_path()) / "labels.json"
    with serve(site) as served, sync_playwright() as p:
        user_token(served.app, "eng", Role.ENGINEER, ["T1"], password=PASSWORD)
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            page.goto(served.url + "scenes/lane/label")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#user", "eng")
            page.fill("#pass", PASSWORD)
            page.click("#login button[type=submit]")
            card = page.locator(f'.crop[data-name="{names[0]}"]')
            expect(card).to_be_visible()
            expect(page.locator("#title")).to_contain_text("消防通道占用")
            card.locator('button[data-state="blocked"]').click()
            expect(card.locator('button[data-state="blocked"]')).to_have_class("badstate on")
            expect(card).to_have_class("crop labelled bad")
            assert json.loads(labels_file.read_text()) == {names[0]: "blocked"}
            page.reload()  # the label is on disk, not only in the page
            expect(page.locator(f'.crop[data-name="{names[0]}"] button[data-state="blocked"]')).to_have_class(
                "badstate on")
            page.check("#only-unlabelled")
            expect(page.locator(".crop")).to_have_count(4)
            # a range: click the newest, shift-click an older one -> the two crops between are labelled too
            page.locator(f'.crop[data-name="{names[4]}"] button[data-state="clear"]').click()
            page.locator(f'.crop[data-name="{names[1]}"] button[data-state="clear"]').click(modifiers=["Shift"])
            expect(page.locator(f'.crop[data-name="{names[1]}"]')).to_have_class("crop labelled")
            assert json.loads(labels_file.read_text()) == {names[0]: "blocked", **dict.fromkeys(names[1:], "clear")}
        finally:
            browser.close()
