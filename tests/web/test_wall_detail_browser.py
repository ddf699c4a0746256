"""The wall's ticket detail, grid filter and zone editor, and the phone's role limit, in a real headless
Chromium (Playwright driving /usr/bin/chromium) on the real stack (uvicorn, SQLite, the built front end).

One browser for the module; each test opens few pages. Set ``GRIDWATCH_SCREENSHOTS=docs/img`` to keep the
screenshots (docs/screens.md)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from pipeline.contract.casework import CameraCheckResultV1
from pipeline.tickets.camera_check import apply_check_result
from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site
from tests.web.wall_stack import Served, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIP = Path("/work/shared/clips/car-detection.mp4")
PASSWORD = "wall-test-Pw9!x"
BOX = {"x1": 0.25, "y1": 0.3, "x2": 0.55, "y2": 0.7, "label": "car", "confidence": 0.91}
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium)"),
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(make_site(tmp_path)) as s:
        user_token(s.app, "disp", Role.DISPATCHER, ["T1"], password=PASSWORD)
        user_token(s.app, "liwei", Role.PATROL, ["T1/D1/C1/G1"], password=PASSWORD)
        user_token(s.app, "eng", Role.ENGINEER, ["T1"], password=PASSWORD)
        yield s


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def frame_jpeg(tmp_path: Path) -> Path:
    """A real camera frame (the first of a shared clip) as JPEG."""
    cap = cv2.VideoCapture(str(CLIP))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        pytest.skip(f"cannot read {CLIP}")
    path = tmp_path / "frame.jpg"
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


def _ticket_id(served: Served, incident: str) -> int:
    token = user_token(served.app, "root", Role.ADMIN, [])
    page = httpx.get(f"{served.url}tickets", headers=bearer(token), timeout=10).json()
    return next(int(t["id"]) for t in page["items"] if t["incident_id"] == incident)


def test_detail_moves_grid_filter_and_role_limit(served: Served, chromium: Browser, frame_jpeg: Path) -> None:
    near = served.post_alert("cam1", "parking", snapshot=frame_jpeg, severity=3, boxes=[BOX])
    folder = served.app.state.tickets.evidence_dir / near
    shutil.copy(frame_jpeg, folder / "frame.jpg")  # the raw frame: the detail draws the boxes on it
    shutil.copy(CLIP, folder / "clip.mp4")
    far = served.post_alert("cam3", "clutter")
    near_id, far_id = _ticket_id(served, near), _ticket_id(served, far)

    wall = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    errors: list[str] = []
    wall.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(wall, served.url + "wall", "disp")
    expect(wall.locator("#alerts li.alert")).to_have_count(2, timeout=15_000)

    # The grid tree: counts per node from /grid/counts; a node filters alerts and cameras.
    tree = wall.locator("#grid-tree")
    expect(tree.locator("li[data-path='T1'] .n.open")).to_have_text("2")
    tree.locator("li[data-path='T1']").click()
    tree.locator("li[data-path='T1/D2']").click()
    expect(tree.locator("li[data-path='T1/D2'] .n.open")).to_have_text("1")
    expect(wall.locator("#alerts li.alert")).to_have_count(1)
    expect(wall.locator("#alerts li.alert")).to_have_attribute("data-ticket", str(far_id))
    expect(wall.locator(".tiles li.tile")).to_have_count(1)
    expect(wall.locator(".tiles li.tile")).to_have_attribute("data-camera", "cam3")
    expect(wall.locator("#grid-filter")).to_contain_text("Town / District 2")
    trend = wall.locator("#trend-chart")  # /stats/daily of the node: its one ticket, opened today
    expect(trend).to_have_attribute("data-days", "7")
    expect(trend).to_have_attribute("data-opened", "1")
    _shot(wall, "wall-grid.png")
    tree.locator("li[data-path='']").click()
    expect(wall.locator("#alerts li.alert")).to_have_count(2)
    expect(trend).to_have_attribute("data-opened", "2")
    wall.locator("#trend-30").click()
    expect(trend).to_have_attribute("data-days", "30")

    # The detail: the frame with the alert's box drawn, the clip, the timeline, the dispatcher's moves.
    wall.locator(f"#alerts li.alert[data-ticket='{near_id}'] .place").click()
    detail = wall.locator("#ticket-detail")
    expect(detail).to_be_visible()
    expect(detail.locator("#detail-status")).to_have_text("待核实")
    wall.wait_for_function("document.querySelector('#detail-picture')?.naturalWidth > 0")
    assert "/evidence/frame" in (detail.locator("#detail-picture").get_attribute("src") or "")
    expect(detail.locator("svg.boxes rect.box")).to_have_count(1)
    expect(detail.locator(".box-label")).to_contain_text("car 91%")
    assert detail.locator("#detail-clip").get_attribute("src") == f"/tickets/{near_id}/evidence/clip"
    wall.wait_for_function("document.querySelector('#detail-clip').duration > 0")  # the MP4 loads and plays
    expect(detail.locator("#timeline li[data-kind=alert_opened]")).to_contain_text("告警")
    expect(detail.locator("#detail-moves button[data-move]")).to_have_count(3)  # verify, dispatch, false alarm
    detail.locator("textarea[name=note]").fill("监控确认车辆占用消防通道")
    detail.locator("button[data-move=verified]").click()
    expect(detail.locator("#detail-status")).to_have_text("已核实", timeout=15_000)
    expect(detail.locator("#timeline li[data-kind=transition]")).to_contain_text("待核实 → 已核实")
    expect(detail.locator("#timeline li[data-kind=transition]")).to_contain_text("监控确认车辆占用消防通道")
    expect(detail.locator("select[name=assignee] option[value=liwei]")).to_have_count(1)
    detail.locator("select[name=assignee]").select_option("liwei")
    detail.locator("button[data-move=dispatched]").click()
    expect(detail.locator("#detail-status")).to_have_text("已派遣", timeout=15_000)
    expect(detail.locator("#timeline li[data-kind=transition]").nth(1)).to_contain_text("已核实 → 已派遣")
    expect(detail.locator("#timeline li[data-kind=transition]").nth(1)).to_contain_text("disp")
    expect(detail).to_contain_text("liwei")
    _shot(wall, "ticket-detail.png")
    admin = bearer(user_token(served.app, "root", Role.ADMIN, []))
    body = httpx.get(f"{served.url}tickets/{near_id}", headers=admin, timeout=10).json()
    assert (body["status"], body["assignee"]) == ("dispatched", "liwei")
    wall.keyboard.press("Escape")
    expect(detail).to_have_count(0)

    # The patrol user: another cell's ticket by URL is refused with a clear message; their own one offers
    # only their step.
    phone_ctx = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                     locale="zh-CN")
    phone = phone_ctx.new_page()
    phone.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(phone, f"{served.url}m#/ticket/{far_id}", "liwei")
    expect(phone.locator("#detail-error")).to_contain_text("无权查看该工单", timeout=15_000)
    _shot(phone, "phone-forbidden.png")
    phone.evaluate(f"location.hash = '#/ticket/{near_id}'")
    expect(phone.locator("#detail-status")).to_have_text("已派遣", timeout=15_000)
    expect(phone.locator("#detail-moves button[data-move]")).to_have_count(1)
    expect(phone.locator("#detail-moves button[data-move=in_progress]")).to_have_text("开始处置")
    phone.locator("button[data-move=in_progress]").click()
    expect(phone.locator("#detail-status")).to_have_text("处置中", timeout=15_000)
    phone.locator("button.back").click()
    card = phone.locator(f"#mine li.card[data-ticket='{near_id}']")
    expect(card).to_contain_text("处置中")
    phone.locator("#tab-history").click()
    expect(phone.locator("#history .empty")).to_be_visible()
    phone.locator("#tab-open").click()

    # The network drops the photo upload (the fault made in the browser); the report is kept, and a reload
    # resumes it: the photo goes up, the ticket is resolved and moves to the history.
    phone.route("**/proof", lambda route: route.abort())
    card.locator("button.resolve").click()
    card.locator("textarea[name=note]").fill("已联系车主挪车")
    card.locator("input[type=file][name=photo]").set_input_files(str(frame_jpeg))
    card.locator("form.resolve-form button[type=submit]").click()
    expect(card.locator("form.resolve-form button[type=submit]")).to_contain_text("重试中", timeout=15_000)
    phone.unroute("**/proof")
    phone.reload()
    expect(phone.locator("#live")).to_have_class("live online", timeout=15_000)
    expect(phone.locator(f"#mine li.card[data-ticket='{near_id}']")).to_have_count(0, timeout=20_000)
    body = httpx.get(f"{served.url}tickets/{near_id}", headers=admin, timeout=10).json()
    assert (body["status"], body["note"]) == ("resolved", "已联系车主挪车")
    assert len(httpx.get(f"{served.url}tickets/{near_id}/attachments", headers=admin, timeout=10).json()) == 1
    phone.locator("#tab-history").click()
    expect(phone.locator(f"#history li.card[data-ticket='{near_id}']")).to_contain_text("已处置")
    _shot(phone, "phone-history.png")
    phone_ctx.close()

    # Back on the wall: the proof photo and the waiting camera check are in the timeline; the camera's
    # result (the consumer's service path) arrives live, then the dispatcher closes the case from the detail.
    wall.evaluate(f"location.hash = '#/ticket/{near_id}'")
    expect(detail.locator("#detail-status")).to_have_text("已处置", timeout=15_000)
    wall.wait_for_function("document.querySelector('#timeline li[data-kind=proof] img.proof')?.naturalWidth > 0")
    expect(detail.locator("#timeline li[data-kind=camera_check]")).to_contain_text("等待结果")
    check = httpx.get(f"{served.url}tickets/{near_id}/camera-checks", headers=admin, timeout=10).json()[0]
    (served.app.state.tickets.evidence_dir / check["check_id"]).mkdir()
    shutil.copy(frame_jpeg, served.app.state.tickets.evidence_dir / check["check_id"] / "snapshot.jpg")
    apply_check_result(served.app.state.tickets.sessions, CameraCheckResultV1(
        schema_version=1, check_id=check["check_id"], ticket_id=near_id, camera_id="cam1", outcome="passed",
        checked_at=datetime.now(UTC), worker_id="w1",
        snapshot_url=f"http://127.0.0.1:8080/evidence/{check['check_id']}/snapshot.jpg"), served.app.state.tickets.case)
    expect(detail.locator("#detail-status")).to_have_text("已核查", timeout=15_000)
    # One camera-check row: the result replaces the waiting row (never both, whichever list is read first).
    expect(detail.locator("#timeline li[data-kind=camera_check]")).to_have_count(1)
    expect(detail.locator("#timeline li[data-kind=camera_check]")).to_contain_text("摄像头核查: 通过")
    wall.wait_for_function(
        "document.querySelector('#timeline li[data-kind=camera_check] img.proof')?.naturalWidth > 0")
    detail.locator("button[data-move=closed]").click()
    expect(detail.locator("#detail-status")).to_have_text("已结案", timeout=15_000)
    expect(detail.locator("#detail-moves button[data-move=in_progress]")).to_have_text("重新打开")
    detail.locator("button[data-move=in_progress]").click()  # a reopen needs a reason
    expect(detail.locator("#move-error")).to_contain_text("需要在处理说明中填写原因")
    detail.locator("textarea[name=note]").fill("车主再次占用")
    detail.locator("button[data-move=in_progress]").click()
    expect(detail.locator("#detail-status")).to_have_text("处置中", timeout=15_000)
    expect(detail.locator("#timeline li[data-kind=transition]").last).to_contain_text("车主再次占用")
    _shot(wall, "ticket-timeline.png")
    wall.close()
    assert not errors, errors  # no script error on either screen


def test_zone_editor_draws_validates_and_saves(served: Served, chromium: Browser) -> None:
    page = chromium.new_page(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(page, f"{served.url}wall#/zones/cam1", "eng")
    editor = page.locator("#zone-editor")
    expect(editor).to_be_visible(timeout=15_000)
    expect(editor.locator(".frame.none")).to_contain_text("暂无最新画面", timeout=20_000)  # no worker here
    stage = editor.locator(".stage")
    box = stage.bounding_box()
    assert box is not None

    def click_at(x: float, y: float) -> None:
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])

    # Two points are not a polygon: the server's 422 is shown at the zone's polygon field.
    editor.locator("#zone-new").click()
    click_at(0.1, 0.1)
    click_at(0.5, 0.1)
    expect(editor.locator(".handle")).to_have_count(2)
    editor.locator("#zone-save").click()
    expect(editor.locator("[data-error=polygon]")).to_contain_text("至少需要3个顶点", timeout=15_000)
    expect(editor.locator("[data-error=polygon]")).to_contain_text("at least 3 points")  # the server's, as detail
    expect(editor.locator("#zone-list li.bad")).to_have_count(1)
    _shot(page, "zone-editor-error.png")
    click_at(0.5, 0.6)
    editor.locator("select[name=kind]").select_option("fire_lane")
    editor.locator("input[name=hazard-clutter]").check()
    editor.locator("input[name=name]").fill("消防通道A")
    editor.locator("#zone-save").click()
    expect(editor.locator("#zone-status")).to_have_text("已保存", timeout=15_000)
    expect(editor.locator("[data-error=polygon]")).to_have_count(0)

    admin = bearer(user_token(served.app, "root", Role.ADMIN, []))
    zones = httpx.get(f"{served.url}cameras/cam1/config", headers=admin, timeout=10).json()["zones"]
    assert [(z["id"], z["kind"], z["hazards"], z["name"], len(z["polygon"])) for z in zones] == [
        ("z1", "fire_lane", ["clutter"], "消防通道A", 3)]
    assert zones[0]["polygon"][0] == pytest.approx([0.1, 0.1], abs=0.01)

    # Drag the third point; the saved polygon follows.
    handle = editor.locator(".handle[data-point='2']").bounding_box()
    assert handle is not None
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.8 * box["height"], steps=5)
    page.mouse.up()
    _shot(page, "zone-editor.png")
    editor.locator("#zone-save").click()
    expect(editor.locator("#zone-status")).to_have_text("已保存", timeout=15_000)
    zones = httpx.get(f"{served.url}cameras/cam1/config", headers=admin, timeout=10).json()["zones"]
    assert zones[0]["polygon"][2] == pytest.approx([0.3, 0.8], abs=0.01)

    # Drag the whole zone (from inside it) 0.1 to the right: every point moves by that much.
    before = zones[0]["polygon"]
    page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.4 * box["width"], box["y"] + 0.3 * box["height"], steps=5)
    page.mouse.up()
    editor.locator("#zone-save").click()
    expect(editor.locator("#zone-status")).to_have_text("已保存", timeout=15_000)
    after = httpx.get(f"{served.url}cameras/cam1/config", headers=admin, timeout=10).json()["zones"][0]["polygon"]
    assert [c for x, y in after for c in (x, y)] == pytest.approx([c for x, y in before for c in (x + 0.1, y)],
                                                                  abs=0.01)

    # Delete it: the camera has no zones again.
    editor.locator("#zone-delete").click()
    expect(editor.locator("#zone-list .empty")).to_be_visible()
    editor.locator("#zone-save").click()
    expect(editor.locator("#zone-status")).to_have_text("已保存", timeout=15_000)
    assert httpx.get(f"{served.url}cameras/cam1/config", headers=admin, timeout=10).json()["zones"] == []

    # An engineer reads a ticket's detail but has no moves (the server's role table).
    ticket_id = _ticket_id(served, served.post_alert("cam1", "poster"))
    page.evaluate(f"location.hash = '#/ticket/{ticket_id}'")
    expect(page.locator("#detail-status")).to_have_text("待核实", timeout=15_000)
    expect(page.locator("#ticket-detail")).to_contain_text("当前角色无可执行操作")
    expect(page.locator("#detail-moves")).to_have_count(0)
    page.close()
    assert not errors, errors
