"""The built front end in a real headless Chromium (Playwright driving /usr/bin/chromium, no browser
download): a dispatcher logs in on /wall, a fire alert posted through the consumer's service path appears
without reload, flashes and beeps until acknowledged; a patrol user on a phone viewport sees the dispatched
ticket on /m without reload, accepts it and resolves it with a note and a camera photo; the wall follows.

Set ``GRIDWATCH_SCREENSHOTS=docs/img`` to keep the screenshots (docs/screens.md)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site
from tests.web.wall_stack import Served, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIP = Path("/work/shared/clips/car-detection.mp4")
PASSWORD = "wall-test-Pw9!x"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium)"),
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(make_site(tmp_path)) as s:
        user_token(s.app, "disp", Role.DISPATCHER, ["T1"], password=PASSWORD)
        user_token(s.app, "liwei", Role.PATROL, ["T1/D1/C1/G1"], password=PASSWORD)
        yield s


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A real JPEG: the first frame of a shared clip (what a phone camera would hand the page)."""
    cap = cv2.VideoCapture(str(CLIP))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"cannot read {CLIP}")
    path = tmp_path / "proof.jpg"
    cv2.imwrite(str(path), frame)
    return path


def _shot(page: Page, name: str) -> None:
    if out := os.environ.get("GRIDWATCH_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / name))


def _log_in(page: Page, url: str, user: str) -> None:
    page.goto(url)
    page.fill("#login-user", user)
    page.fill("#login-password", PASSWORD)
    page.click("#login button[type=submit]")


def test_wall_and_phone_live(served: Served, chromium: Browser, photo: Path) -> None:
    wall = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    wall.goto(served.url + "wall")
    expect(wall.locator("#login")).to_be_visible()
    wall.fill("#login-user", "disp")
    wall.fill("#login-password", "wrong-password")
    wall.click("#login button[type=submit]")
    expect(wall.locator("#login-error")).to_contain_text("用户名或密码错误")
    _log_in(wall, served.url + "wall", "disp")
    expect(wall.locator("#live")).to_have_class("live online", timeout=15_000)
    expect(wall.locator("#alerts .empty")).to_be_visible()

    # An alert arrives (the consumer's service path): it shows without a reload, newest first.
    served.post_alert("cam2", "clutter")
    expect(wall.locator("#alerts li.alert")).to_have_count(1, timeout=15_000)
    served.post_alert("cam1", "fire", snapshot=photo, severity=5)
    fire = wall.locator("#alerts li.alert[data-hazard=fire]")
    expect(fire).to_be_visible(timeout=15_000)
    thumb = fire.locator("img.thumb")  # the snapshot, fetched with the session cookie
    thumb.wait_for()
    wall.wait_for_function("document.querySelector('li.alert[data-hazard=fire] img.thumb').naturalWidth > 0")
    expect(wall.locator("#alerts li.alert").first).to_have_attribute("data-hazard", "fire")
    expect(fire).to_contain_text("火情")
    expect(fire).to_contain_text("North gate")
    expect(fire).to_contain_text("Community 1")  # grid names from /grid, not codes
    expect(fire).to_have_class("alert flashing")
    wall.wait_for_function("window.gridwatchBeeps.count > 0")
    _shot(wall, "wall.png")
    fire.locator("button.ack").click()
    expect(fire).not_to_have_class("alert flashing")

    # The wall's verify button moves the ticket as the dispatcher; the dispatch goes through the API.
    fire.locator("button.verify").click()
    expect(fire).to_contain_text("已核实", timeout=15_000)
    ticket_id = int(fire.get_attribute("data-ticket") or 0)
    disp_token = user_token(served.app, "disp", Role.DISPATCHER, ["T1"])

    # The patrol user's phone: nothing yet; the dispatch shows up live.
    phone_ctx = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                     has_touch=True, device_scale_factor=2, locale="zh-CN")
    phone = phone_ctx.new_page()
    _log_in(phone, served.url + "m", "liwei")
    expect(phone.locator("#live")).to_have_class("live online", timeout=15_000)
    expect(phone.locator("#mine .empty")).to_be_visible()
    r = httpx.post(f"{served.url}tickets/{ticket_id}/transition", headers=bearer(disp_token),
                   json={"to": "dispatched", "assignee": "liwei"}, timeout=10)
    assert r.status_code == 200, r.text
    card = phone.locator(f"#mine li.card[data-ticket='{ticket_id}']")
    expect(card).to_be_visible(timeout=15_000)
    expect(card).to_contain_text("火情")
    card.locator("button.accept").click()
    expect(card).to_contain_text("处置中", timeout=15_000)
    card.locator("button.resolve").click()
    card.locator("form.resolve-form button[type=submit]").click()
    expect(phone.locator("#phone-error")).to_contain_text("需要处理说明")  # no note, no photo: refused here
    card.locator("textarea[name=note]").fill("灭火器扑灭，现场已清理")
    photo_input = card.locator("input[type=file][name=photo]")
    assert photo_input.get_attribute("accept") == "image/*" and photo_input.get_attribute("capture") is not None
    photo_input.set_input_files(str(photo))
    expect(card.locator(".photos")).to_contain_text("1")
    _shot(phone, "phone.png")
    card.locator("form.resolve-form button[type=submit]").click()
    expect(card).to_have_count(0, timeout=15_000)  # resolved: off the patrol list

    detail = httpx.get(f"{served.url}tickets/{ticket_id}", headers=bearer(disp_token), timeout=10).json()
    assert detail["status"] == "resolved" and detail["note"] == "灭火器扑灭，现场已清理"
    attachments = httpx.get(f"{served.url}tickets/{ticket_id}/attachments", headers=bearer(disp_token),
                            timeout=10).json()
    assert len(attachments) == 1
    expect(fire).to_contain_text("已处置", timeout=15_000)  # the wall followed without a reload

    # Checked and closed: the ticket leaves the wall and the closure figure moves (1 of the 2 tickets).
    expect(wall.locator("#fig-closure")).to_contain_text("0.0%")
    for to in ("checked", "closed"):
        r = httpx.post(f"{served.url}tickets/{ticket_id}/transition", headers=bearer(disp_token),
                       json={"to": to, "note": "核查通过"}, timeout=10)
        assert r.status_code == 200, r.text
    expect(fire).to_have_count(0, timeout=15_000)
    expect(wall.locator("#fig-closure")).to_contain_text("50.0%", timeout=15_000)

    # English switch: every label from the catalogue.
    wall.get_by_role("button", name="English").click()
    expect(wall.locator("#alerts li.alert").first).to_contain_text("Clutter")
    expect(wall.locator("#fig-closure")).to_contain_text("Closure rate")
    phone_ctx.close()


def test_wall_offline_then_back(served: Served, chromium: Browser) -> None:
    page = chromium.new_page(viewport={"width": 1920, "height": 1080})
    _log_in(page, served.url + "wall", "disp")
    expect(page.locator("#live")).to_have_class("live online", timeout=15_000)
    # A camera tile opens its live debug picture; with no worker (no broker here) it says it is unavailable.
    tile = page.locator(".tiles li.tile[data-camera=cam1]")
    expect(tile).to_contain_text("North gate")
    expect(tile).to_contain_text("无数据")  # no health reported yet
    tile.click()
    expect(page.locator(".modal")).to_contain_text("North gate")
    expect(page.locator(".modal .error")).to_contain_text("画面暂不可用", timeout=20_000)
    page.locator(".modal button.close").click()
    expect(page.locator(".modal")).to_have_count(0)
    served.stop()  # the server goes away: the wall says so and keeps retrying
    expect(page.locator("#live")).to_have_class("live offline", timeout=30_000)
    expect(page.locator("#live")).to_contain_text("离线")
    served.post_alert("cam1", "parking")  # happens while the wall is offline
    served.start()
    expect(page.locator("#live")).to_have_class("live online", timeout=30_000)
    expect(page.locator("#alerts li.alert[data-hazard=parking]")).to_be_visible(timeout=30_000)
