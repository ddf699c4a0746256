"""The resident report page in a real headless Chromium on a phone viewport (Playwright driving
/usr/bin/chromium, no browser download): a resident opens a QR code's link, picks 堆物, writes a description
carrying markup, adds a photo through the camera input and sends it; the tracking page shows 受理, the
description as plain text (no script ran), and 派遣 after a dispatcher's move; the English switch relabels.

``GRIDWATCH_SCREENSHOTS=docs/img`` keeps docs/img/resident.png and resident-track.png (docs/screens.md)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site
from tests.web.wall_stack import Served, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLIP = Path("/work/shared/clips/car-detection.mp4")
EVIL = '<img src=x onerror="window.__pwned = 1">楼道堆满纸箱'
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install chromium)"),
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(make_site(tmp_path)) as s:
        yield s


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A real JPEG: the first frame of a shared clip (a phone camera's picture; noise when it is missing)."""
    cap = cv2.VideoCapture(str(CLIP))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        frame = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    path = tmp_path / "IMG_0001.jpg"
    cv2.imwrite(str(path), frame)
    return path


def _shot(page: Page, name: str) -> None:
    if out := os.environ.get("GRIDWATCH_SCREENSHOTS"):
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / name), full_page=True)


def test_resident_reports_through_a_qr_link_and_follows_it(served: Served, photo: Path) -> None:
    admin = user_token(served.app, "admin", Role.ADMIN, [])
    disp = user_token(served.app, "zhao.min", Role.DISPATCHER, ["T1"])
    code = httpx.post(f"{served.url}report-codes", json={"grid": "T1/D1/C1/G1", "place": "3号楼2单元"},
                      headers=bearer(admin)).json()
    link = code["url"]  # what the QR code holds (the server's own URL here: no public_base_url set)
    assert link.startswith(served.url.rstrip("/") + "/r/")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2, locale="zh-CN")
        page = ctx.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(link)
        expect(page.locator("#place")).to_have_text("3号楼2单元")
        expect(page.locator("#categories label")).to_have_count(5)
        page.locator("#submit").click()
        expect(page.locator("#error")).to_have_text("请选择问题类型")  # checked on the phone first
        page.locator("#categories label", has_text="堆物").click()
        page.fill("#description", EVIL)
        page.set_input_files("#photo", str(photo))  # the `capture` camera input
        expect(page.locator("#preview")).to_be_visible()
        page.wait_for_function("document.getElementById('preview').naturalWidth > 0")
        page.fill("#phone", "13800138000")
        _shot(page, "resident.png")
        page.locator("#submit").click()

        page.wait_for_url("**/r/t/*")
        expect(page.locator("#thanks")).to_be_visible()
        expect(page.locator("#t-status")).to_have_text("受理")
        expect(page.locator("#t-place")).to_have_text("3号楼2单元")
        expect(page.locator("#t-description")).to_have_text(EVIL)  # shown as text: no element, no script
        assert page.evaluate("window.__pwned === undefined")
        assert page.locator("#track img").count() == 0
        expect(page.locator("#steps li.reached")).to_have_count(1)
        assert "13800138000" not in page.content()

        # The ticket is in the dispatchers' queue of the code's cell, with the photo; a move shows on refresh.
        items = httpx.get(f"{served.url}tickets", headers=bearer(disp)).json()["items"]
        assert [(t["source"], t["grid_path"], t["hazard"]) for t in items] == [
            ("resident", ["T1", "D1", "C1", "G1"], "clutter")]
        snapshot = httpx.get(f"{served.url}tickets/{items[0]['id']}/evidence/snapshot", headers=bearer(disp))
        assert snapshot.status_code == 200 and snapshot.content.startswith(b"\xff\xd8\xff")
        user_token(served.app, "li.wei", Role.PATROL, ["T1/D1/C1/G1"])
        r = httpx.post(f"{served.url}tickets/{items[0]['id']}/transition", json={"to": "dispatched"},
                       headers=bearer(disp))
        assert r.status_code == 200, r.text
        page.locator("#refresh").click()
        expect(page.locator("#t-status")).to_have_text("派遣")
        expect(page.locator("#steps li.reached")).to_have_count(3)  # 受理, 核实 (with the dispatch), 派遣
        expect(page.locator("#steps li.current")).to_contain_text("派遣")
        _shot(page, "resident-track.png")
        assert "li.wei" not in page.content() and "zhao.min" not in page.content()

        page.locator("#lang").click()
        expect(page.locator("#t-status")).to_have_text("Dispatched")
        expect(page.locator("h1")).to_have_text("Report a problem")
        assert not errors, errors
        browser.close()
