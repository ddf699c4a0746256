"""The wall's admin screens in a real headless Chromium (Playwright driving /usr/bin/chromium) on the real
stack (uvicorn, SQLite, the built front end): figures per grid node, report codes (一楼一码), the site plan
with camera pins. One browser for the module. ``GRIDWATCH_SCREENSHOTS=docs/img`` keeps the screenshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pipeline.tickets.payload import HealthIn
from pipeline.tickets.service import upsert_camera_health
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site
from tests.web.wall_stack import Served, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "wall-admin-Pw9!x"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(make_site(tmp_path)) as s:
        user_token(s.app, "boss", Role.ADMIN, [], password=PASSWORD)
        yield s


def _shot(page: Page, name: str) -> None:
    if out := os.environ.get("GRIDWATCH_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / name))


def _plan_png(path: Path) -> Path:
    """A drawn site plan: two buildings and a road, with labels."""
    img = np.full((600, 1000, 3), 235, np.uint8)
    cv2.rectangle(img, (60, 60), (420, 300), (120, 120, 120), 4)
    cv2.rectangle(img, (560, 60), (940, 300), (120, 120, 120), 4)
    cv2.rectangle(img, (0, 380), (1000, 470), (190, 190, 190), -1)
    cv2.putText(img, "B1", (200, 200), cv2.FONT_HERSHEY_SIMPLEX, 2, (60, 60, 60), 4)
    cv2.putText(img, "B2", (700, 200), cv2.FONT_HERSHEY_SIMPLEX, 2, (60, 60, 60), 4)
    cv2.imwrite(str(path), img)
    return path


def test_figures_codes_and_site_plan(served: Served, chromium: Browser, tmp_path: Path) -> None:
    served.post_alert("cam1", "parking")
    served.post_alert("cam3", "clutter")
    upsert_camera_health(served.app.state.tickets.sessions, "cam1", HealthIn(state="streaming", frames_decoded=5))
    admin = bearer(user_token(served.app, "root", Role.ADMIN, []))
    wall = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    errors: list[str] = []
    wall.on("pageerror", lambda e: errors.append(str(e)))
    wall.goto(served.url + "wall")
    wall.fill("#login-user", "boss")
    wall.fill("#login-password", PASSWORD)
    wall.click("#login button[type=submit]")
    expect(wall.locator("#alerts li.alert")).to_have_count(2, timeout=15_000)

    # Figures per grid node: the per-hazard chart and the figures follow the selected node.
    chart, figures = wall.locator("#hazard-chart"), wall.locator(".figures")
    expect(chart).to_have_attribute("data-hazards", "clutter:1,parking:1")
    expect(figures).to_have_attribute("data-tickets", "2")
    tree = wall.locator("#grid-tree")
    tree.locator("li[data-path='T1']").click()
    tree.locator("li[data-path='T1/D2']").click()
    expect(chart).to_have_attribute("data-hazards", "clutter:1")
    expect(figures).to_have_attribute("data-tickets", "1")
    expect(wall.locator("#fig-open b")).to_have_text("1")
    tree.locator("li[data-path='T1/D1']").click()
    expect(chart).to_have_attribute("data-hazards", "parking:1")
    _shot(wall, "wall-node-figures.png")
    tree.locator("li[data-path='']").click()
    expect(chart).to_have_attribute("data-hazards", "clutter:1,parking:1")

    # Report codes: create for a cell picked from the grid, the QR shows, rename, disable.
    wall.locator("#open-codes").click()
    codes = wall.locator("#report-codes")
    expect(codes.locator("#code-list")).to_contain_text("暂无二维码")
    codes.locator("select[name=cell]").select_option("T1/D1/C1/G2")
    codes.locator("#code-create").click()
    expect(codes.locator("#code-message")).to_have_text("请填写位置名称")
    codes.locator("input[name=place]").fill("3号楼2单元")
    codes.locator("#code-create").click()
    row = codes.locator("#code-list tr[data-code]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("3号楼2单元")
    expect(row).to_contain_text("Town / District 1 / Community 1 / Cell 2")
    expect(row.locator(".state")).to_have_text("已启用")
    qr = codes.locator("#code-qr img")
    expect(qr).to_be_visible()
    wall.wait_for_function("() => document.querySelector('#code-qr img').naturalWidth > 100")
    expect(codes.locator("#code-sheet")).to_have_attribute("href", "/report-codes/sheet.html")
    _shot(wall, "report-codes.png")
    row.locator("button.rename").click()
    row.locator("input[name=rename]").fill("3号楼1单元")
    row.locator("button.save-name").click()
    expect(row.locator(".place")).to_have_text("3号楼1单元")
    row.locator("button.toggle").click()
    expect(row.locator(".state")).to_have_text("已停用")
    listed = httpx.get(f"{served.url}report-codes", headers=admin, timeout=10).json()
    assert [(c["place"], c["enabled"], c["grid_path"]) for c in listed] == [
        ("3号楼1单元", False, ["T1", "D1", "C1", "G2"])]
    token = listed[0]["url"].rsplit("/", 1)[1]
    assert httpx.get(f"{served.url}r/{token}", timeout=10).status_code == 404  # disabled: its page is gone
    codes.locator("button.back").click()

    # The site plan: none yet; the admin uploads one (a refused SVG first), places two pins, saves.
    wall.locator("#view-plan").click()
    expect(wall.locator("#site-plan")).to_contain_text("暂无平面图")
    wall.locator("#plan-edit").click()
    editor = wall.locator("#plan-editor")
    svg = tmp_path / "plan.png"
    svg.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    editor.locator("#plan-file").set_input_files(str(svg))
    expect(editor.locator("#plan-error")).to_contain_text("不是PNG或JPEG图片", timeout=15_000)
    editor.locator("#plan-file").set_input_files(str(_plan_png(tmp_path / "site.png")))
    stage = editor.locator(".plan-stage")
    expect(stage.locator("img")).to_be_visible(timeout=15_000)
    wall.wait_for_function("() => document.querySelector('#plan-editor .plan-stage img').naturalWidth === 1000")
    box = stage.bounding_box()
    assert box is not None
    editor.locator("select[name=camera]").select_option("cam1")
    wall.mouse.click(box["x"] + 0.24 * box["width"], box["y"] + 0.7 * box["height"])
    editor.locator("select[name=camera]").select_option("cam3")
    wall.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.2 * box["height"])
    wall.mouse.click(box["x"] + 0.76 * box["width"], box["y"] + 0.3 * box["height"])  # moved, not a second pin
    expect(editor.locator("#pin-list li")).to_have_count(2)
    _shot(wall, "site-plan-editor.png")
    editor.locator("#plan-save").click()
    expect(editor.locator("#plan-status")).to_have_text("已保存")
    plans = httpx.get(f"{served.url}site-plans", headers=admin, timeout=10).json()
    assert [(p["grid_path"], p["width"], p["height"]) for p in plans] == [([], 1000, 600)]
    pins = {p["camera_id"]: (p["x"], p["y"]) for p in plans[0]["pins"]}
    assert set(pins) == {"cam1", "cam3"}
    assert abs(pins["cam1"][0] - 0.24) < 0.02 and abs(pins["cam1"][1] - 0.7) < 0.02
    assert abs(pins["cam3"][0] - 0.76) < 0.02 and abs(pins["cam3"][1] - 0.3) < 0.02
    editor.locator("button.back").click()

    # The wall shows the plan with the pins: cam1 streaming, both with their open alert; a pin opens the debug view.
    plan = wall.locator("#site-plan")
    expect(plan.locator(".pin")).to_have_count(2, timeout=15_000)
    cam1 = plan.locator(".pin[data-camera=cam1]")
    expect(cam1).to_have_class("pin h-streaming alerting")
    expect(cam1.locator(".count")).to_have_text("1")
    expect(cam1.locator(".label")).to_have_text("North gate")
    expect(plan.locator(".pin[data-camera=cam3]")).to_have_class("pin h-unknown alerting")
    wall.wait_for_function("() => document.querySelector('#site-plan img').naturalWidth === 1000")
    _shot(wall, "wall-site-plan.png")
    tree.locator("li[data-path='T1']").click()
    tree.locator("li[data-path='T1/D2']").click()  # the whole site's plan still shows under a node without one
    expect(plan).to_have_attribute("data-plan", str(plans[0]["id"]))
    cam1.click()
    dialog = wall.locator(".modal .dialog[data-camera=cam1]")
    expect(dialog).to_contain_text("North gate")
    expect(dialog).to_contain_text("画面暂不可用", timeout=15_000)  # no worker in this test
    dialog.locator("button.close").click()
    wall.locator("header button", has_text="English").click()
    expect(wall.locator("#view-plan")).to_have_text("Site plan")
    assert not errors, errors
    wall.close()

    # Role limits in the UI: a dispatcher of District 2 manages only its cells' codes and cannot edit the plan;
    # a viewer gets neither screen.
    user_token(served.app, "disp2", Role.DISPATCHER, ["T1/D2"], password=PASSWORD)
    user_token(served.app, "watcher", Role.VIEWER, ["T1"], password=PASSWORD)
    disp = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    disp.goto(served.url + "wall#/codes")
    disp.fill("#login-user", "disp2")
    disp.fill("#login-password", PASSWORD)
    disp.click("#login button[type=submit]")
    cells = disp.locator("#report-codes select[name=cell] option:not([disabled])")
    expect(cells).to_have_count(1, timeout=15_000)
    expect(cells).to_have_attribute("value", "T1/D2/C2/G3")
    expect(disp.locator("#code-list")).to_contain_text("暂无二维码")  # the admin's code in D1 is not listed
    disp.locator("#report-codes button.back").click()
    disp.locator("#view-plan").click()
    expect(disp.locator("#site-plan .pin")).to_have_count(1)  # only cam3 is in D2
    expect(disp.locator("#plan-edit")).to_have_count(0)
    disp.close()
    viewer = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    viewer.goto(served.url + "wall")
    viewer.fill("#login-user", "watcher")
    viewer.fill("#login-password", PASSWORD)
    viewer.click("#login button[type=submit]")
    expect(viewer.locator("#alerts li.alert")).to_have_count(2, timeout=15_000)
    expect(viewer.locator("#open-codes")).to_have_count(0)
    viewer.locator("#view-plan").click()
    expect(viewer.locator("#site-plan .pin")).to_have_count(2)
    expect(viewer.locator("#plan-edit")).to_have_count(0)
    viewer.close()
