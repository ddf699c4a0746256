"""The resident report (一楼一码) through real HTTP on the FastAPI app: report codes (create, scope, sheet,
QR image, disable), a report becoming a ticket in the code's cell with its photo, the public tracking view
following a dispatcher's moves, the abuse limits (rate limits, photo checks, text caps) each counted by
reason, and markup kept inert. SQLite; the report-to-ticket path also on PostgreSQL (row lock, counts)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipeline.config import SiteConfig
from pipeline.tickets.api import create_app
from pipeline.tickets.users import Role
from pipeline.web.resident import PAGE
from tests.fixtures.auth import bearer, user_token

from .conftest import make_site

CLIP = Path("/work/shared/clips/car-detection.mp4")
G1 = "T1/D1/C1/G1"


def _site(tmp_path: Path, database_url: str | None = None, **resident: Any) -> SiteConfig:
    site = make_site(tmp_path, database_url)
    data = site.model_dump(mode="json")
    data["api"]["resident"] = {"public_base_url": "https://report.example.org", **resident}
    return SiteConfig.model_validate(data)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real picture: the first frame of a shared clip (a synthetic one when the clip is missing)."""
    cap = cv2.VideoCapture(str(CLIP))
    ok, image = cap.read()
    cap.release()
    if not ok:
        rng = np.random.default_rng(7)
        image = rng.integers(0, 255, (432, 768, 3), dtype=np.uint8)
    return image


@pytest.fixture(scope="module")
def jpeg(frame: np.ndarray) -> bytes:
    """The frame as a phone-style JPEG with an EXIF block (APP1) holding a GPS-like tag."""
    data = cv2.imencode(".jpg", frame)[1].tobytes()
    exif = b"Exif\x00\x00" + b"GPSLatitude=39.9042;GPSLongitude=116.4074" + b"\x00" * 8
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return data[:2] + app1 + data[2:]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[FastAPI, TestClient, dict[str, str]]]:
    app = create_app(_site(tmp_path, max_reports_per_address_per_hour=3, max_reports_per_code_per_day=4),
                     start_consumer=False)
    with TestClient(app) as client:
        tokens = {"admin": user_token(app, "admin", Role.ADMIN, []),
                  "disp": user_token(app, "disp", Role.DISPATCHER, ["T1/D1"]),
                  "disp2": user_token(app, "disp2", Role.DISPATCHER, ["T1/D2"]),
                  "li": user_token(app, "li.wei", Role.PATROL, [G1]),
                  "wang": user_token(app, "wang.fang", Role.PATROL, ["T1/D1/C1/G2"])}
        yield app, client, tokens


def _code(client: TestClient, token: str, place: str = "3号楼2单元", grid: str = G1) -> dict[str, Any]:
    r = client.post("/report-codes", json={"grid": grid, "place": place}, headers=bearer(token))
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _token(code: dict[str, Any]) -> str:
    return str(code["url"].rsplit("/", 1)[1])


def _report(app: FastAPI, token: str, address: str = "10.0.0.1", photo: bytes | None = None,
            **fields: str) -> Any:
    """POST a report as a phone at ``address`` would (multipart; the photo as a file part)."""
    data = {"category": "pile", "description": "楼道里堆满纸箱", "phone": "", **fields}
    files = {"photo": ("IMG_0001.jpg", photo, "image/jpeg")} if photo is not None else None
    with TestClient(app, client=(address, 40000)) as phone:
        return phone.post(f"/r/{token}/reports", data=data, files=files)


def _refused(client: TestClient, admin: str) -> dict[str, float]:
    text = client.get("/metrics", headers=bearer(admin)).text
    return {m[0]: float(m[1]) for m in re.findall(r'gridwatch_resident_reports_refused_total\{reason="(\w+)"\} (\S+)',
                                                  text)}


def test_codes_are_scoped_audited_and_print(world: tuple[FastAPI, TestClient, dict[str, str]]) -> None:
    app, client, tokens = world
    code = _code(client, tokens["disp"], place="<b>5号楼</b>1单元")
    assert code["grid_path"] == G1.split("/") and code["enabled"] and code["reports"] == 0
    token = _token(code)
    assert code["url"] == f"https://report.example.org/r/{token}" and len(token) >= 22  # 128 random bits
    assert client.post("/report-codes", json={"grid": G1, "place": "x"}, headers=bearer(tokens["disp2"])
                       ).status_code == 403
    assert client.post("/report-codes", json={"grid": "T1/D1/C1", "place": "x"}, headers=bearer(tokens["admin"])
                       ).status_code == 404  # a community, not a cell
    assert client.get("/report-codes", headers=bearer(tokens["li"])).status_code == 403  # patrol: not theirs
    assert client.get("/report-codes", headers=bearer(tokens["disp2"])).json() == []
    assert [c["id"] for c in client.get("/report-codes", headers=bearer(tokens["admin"])).json()] == [code["id"]]

    sheet = client.get("/report-codes/sheet.html", headers=bearer(tokens["disp"]))
    assert sheet.status_code == 200 and sheet.text.count("<svg") == 1
    assert "&lt;b&gt;5号楼&lt;/b&gt;1单元" in sheet.text and "<b>5号楼" not in sheet.text
    assert "script-src" not in sheet.headers["content-security-policy"]  # no script at all on the sheet
    png = client.get(f"/report-codes/{code['id']}/qr.png", headers=bearer(tokens["disp"]))
    assert png.headers["content-type"] == "image/png"
    image = cv2.imdecode(np.frombuffer(png.content, np.uint8), cv2.IMREAD_COLOR)
    decoded, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    assert decoded == code["url"]  # the printed code opens this code's page
    assert client.get(f"/report-codes/{code['id']}/qr.png", headers=bearer(tokens["disp2"])).status_code == 403

    r = client.patch(f"/report-codes/{code['id']}", json={"enabled": False}, headers=bearer(tokens["disp"]))
    assert r.status_code == 200 and r.json()["enabled"] is False and r.json()["disabled_at"]
    assert client.get("/report-codes/sheet.html", headers=bearer(tokens["disp"])).text.count("<svg") == 0
    audit = client.get("/audit", headers=bearer(tokens["admin"])).json()
    actions = [(a["actor"], a["action"]) for a in (audit["items"] if isinstance(audit, dict) else audit)]
    assert ("disp", "report_code.create") in actions and ("disp", "report_code.update") in actions


def test_disabled_or_unknown_code_is_404(world: tuple[FastAPI, TestClient, dict[str, str]]) -> None:
    app, client, tokens = world
    code = _code(client, tokens["admin"])
    token = _token(code)
    page = client.get(f"/r/{token}")
    assert page.status_code == 200 and "resident.js" in page.text
    assert client.get(f"/r/{token}/info").json()["place"] == "3号楼2单元"
    client.patch(f"/report-codes/{code['id']}", json={"enabled": False}, headers=bearer(tokens["admin"]))
    for path in (f"/r/{token}", f"/r/{token}/info", "/r/AAAAAAAAAAAAAAAAAAAAAA", "/r/..%2f..%2fetc",
                 "/r/t/AAAAAAAAAAAAAAAAAAAAAAAA", "/r/t/AAAAAAAAAAAAAAAAAAAAAAAA/status"):
        assert client.get(path).status_code == 404, path
    assert _report(app, token).status_code == 404
    assert _refused(client, tokens["admin"])["unknown_code"] == 1
    client.patch(f"/report-codes/{code['id']}", json={"enabled": True}, headers=bearer(tokens["admin"]))
    assert client.get(f"/r/{token}").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_report_becomes_a_ticket_in_the_cell_and_tracks_progress(
        tmp_path: Path, backend: str, jpeg: bytes, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    app = create_app(_site(tmp_path, url), start_consumer=False)
    with TestClient(app) as client:
        admin = user_token(app, "admin", Role.ADMIN, [])
        disp = user_token(app, "zhao.min", Role.DISPATCHER, ["T1/D1"])
        li = user_token(app, "li.wei", Role.PATROL, [G1])
        wang = user_token(app, "wang.fang", Role.PATROL, ["T1/D1/C1/G2"])
        token = _token(_code(client, admin))
        r = _report(app, token, photo=jpeg, category="pile", description="楼道里堆放电动车和纸箱",
                    phone="138 0013 8000")
        assert r.status_code == 201, r.text
        tracking = r.json()["tracking_url"]
        assert re.fullmatch(r"/r/t/[A-Za-z0-9_-]{24}", tracking)

        tickets = client.get("/tickets", headers=bearer(disp)).json()["items"]
        assert len(tickets) == 1
        t = tickets[0]
        assert (t["source"], t["hazard"], t["grid_path"], t["status"]) == ("resident", "clutter", G1.split("/"),
                                                                            "received")
        assert t["camera_name"] == "3号楼2单元" and t["details"]["category"] == "pile"
        assert t["details"]["contact_phone"] == "138 0013 8000"  # staff in scope may call back
        detail = client.get(f"/tickets/{t['id']}", headers=bearer(disp)).json()
        assert [e["kind"] for e in detail["events"]][0] == "resident_report"
        attachments = client.get(f"/tickets/{t['id']}/attachments", headers=bearer(li)).json()
        assert [a["kind"] for a in attachments] == ["resident"]
        stored = client.get(attachments[0]["url"], headers=bearer(li)).content
        snapshot = client.get(f"/tickets/{t['id']}/evidence/snapshot", headers=bearer(li)).content
        assert stored == snapshot and stored.startswith(b"\xff\xd8\xff") and stored != jpeg
        assert b"GPSLatitude" not in stored and b"Exif" not in stored  # re-encoded: the EXIF block is gone
        assert cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (432, 768)

        # A patrol user of another cell sees nothing of it.
        assert client.get(f"/tickets/{t['id']}", headers=bearer(wang)).status_code == 403
        assert client.get(f"/tickets/{t['id']}/attachments", headers=bearer(wang)).status_code == 403
        assert client.get(f"/tickets/{t['id']}/evidence/snapshot", headers=bearer(wang)).status_code == 403
        assert client.get("/tickets", headers=bearer(wang)).json()["total"] == 0

        status = client.get(f"{tracking}/status").json()
        assert status["status"] == "received" and status["place"] == "3号楼2单元"
        assert client.get(tracking).status_code == 200
        move = client.post(f"/tickets/{t['id']}/transition", json={"to": "dispatched", "assignee": "li.wei",
                                                                    "note": "李伟 13900001111 去看"},
                           headers=bearer(disp))
        assert move.status_code == 200, move.text
        client.post(f"/tickets/{t['id']}/transition", json={"to": "in_progress"}, headers=bearer(li))
        answer = client.get(f"{tracking}/status")
        status = answer.json()
        assert status["status"] == "in_progress"
        assert [h["status"] for h in status["history"]] == ["received", "dispatched", "in_progress"]
        assert status["labels"]["in_progress"]["zh"] == "处置" and status["labels"]["dispatched"]["zh"] == "派遣"
        for private in ("li.wei", "zhao.min", "13900001111", "138 0013 8000", "李伟"):  # no staff, no notes, no phone
            assert private not in answer.text, private

        # 消防隐患 goes to the fire queue, whose policy dispatches to the cell's patrol user at once.
        r = _report(app, token, "10.0.0.9", category="fire_risk", description="消防通道被堵")
        assert r.status_code == 201, r.text
        fire = client.get("/tickets?hazard=fire", headers=bearer(disp)).json()["items"]
        assert [(f["source"], f["status"], f["assignee"]) for f in fire] == [("resident", "dispatched", "li.wei")]
        assert client.get(f"{r.json()['tracking_url']}/status").json()["status"] == "dispatched"


def test_rate_limits_per_address_and_per_code(world: tuple[FastAPI, TestClient, dict[str, str]]) -> None:
    app, client, tokens = world
    token = _token(_code(client, tokens["admin"]))
    other = _token(_code(client, tokens["admin"], place="4号楼1单元"))
    assert [_report(app, token, "10.0.0.1").status_code for _ in range(3)] == [201, 201, 201]
    r = _report(app, other, "10.0.0.1")  # the address limit counts over all codes
    assert r.status_code == 429 and r.json()["reason"] == "rate_address"
    assert _report(app, token, "10.0.0.2").status_code == 201  # 4th through this code today
    r = _report(app, token, "10.0.0.3")
    assert r.status_code == 429 and r.json()["reason"] == "rate_code"
    assert _report(app, other, "10.0.0.3").status_code == 201
    refused = _refused(client, tokens["admin"])
    assert refused["rate_address"] == 1 and refused["rate_code"] == 1
    assert client.get("/tickets", headers=bearer(tokens["admin"])).json()["total"] == 5


def test_bad_photos_are_refused_by_content(tmp_path: Path, jpeg: bytes, frame: np.ndarray) -> None:
    app = create_app(_site(tmp_path, max_photo_bytes=256 * 1024, max_photo_pixels=1_000_000,
                           max_reports_per_address_per_hour=100), start_consumer=False)
    with TestClient(app) as client:
        admin = user_token(app, "admin", Role.ADMIN, [])
        token = _token(_code(client, admin))
        noise = np.random.default_rng(1).integers(0, 255, (900, 1000, 3), dtype=np.uint8)
        big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        assert len(big) > 256 * 1024
        zip_tail = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"payload.html" + b"\x00" * 40
        cases = {
            "photo_too_large": big,
            "photo_type": b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>",  # named .jpg
            "photo_polyglot": jpeg + b"<script>alert(document.cookie)</script>",
            "photo_pixels": cv2.imencode(".png", np.zeros((1000, 1500, 3), np.uint8))[1].tobytes(),
        }
        for reason, data in cases.items():
            r = _report(app, token, photo=data)
            assert r.status_code in (413, 415) and r.json()["reason"] == reason, (reason, r.text)
        r = _report(app, token, photo=jpeg + zip_tail)  # a JPEG with an archive appended
        assert r.status_code == 415 and r.json()["reason"] == "photo_polyglot"
        r = _report(app, token, photo=b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
        assert r.status_code == 415 and r.json()["reason"] == "photo_type"
        with TestClient(app) as phone:  # a declared size over the cap is refused before the body is read
            r = phone.post(f"/r/{token}/reports", content=b"x", headers={
                "Content-Type": "multipart/form-data; boundary=b", "Content-Length": str(10 * 1024 * 1024)})
        assert r.status_code == 413
        refused = _refused(client, admin)
        assert refused == {**refused, "photo_too_large": 2, "photo_type": 2, "photo_polyglot": 2, "photo_pixels": 1}
        assert client.get("/tickets", headers=bearer(admin)).json()["total"] == 0
        assert _report(app, token, photo=jpeg).status_code == 201  # the plain photo still goes through


def test_text_caps_and_form_refusals(world: tuple[FastAPI, TestClient, dict[str, str]]) -> None:
    app, client, tokens = world
    token = _token(_code(client, tokens["admin"]))
    for fields in ({"category": "graffiti"}, {"description": "长" * 501}, {"phone": "call me <b>"},
                   {"description": "nul\x00here"}, {"description": ""}):
        r = _report(app, token, **fields)
        assert r.status_code == 400 and r.json()["reason"] == "text_invalid", (fields, r.text)
    with TestClient(app) as phone:
        r = phone.post(f"/r/{token}/reports", json={"category": "pile", "description": "x"})
    assert r.status_code == 400 and r.json()["reason"] == "form_invalid"
    assert _refused(client, tokens["admin"])["text_invalid"] == 5
    r = _report(app, token, description="小广告贴满电梯", category="flyer")  # no photo: allowed by default
    assert r.status_code == 201
    t = client.get("/tickets", headers=bearer(tokens["admin"])).json()["items"][0]
    assert t["hazard"] == "poster" and t["details"]["photo"] is False


def test_photo_required_when_configured(tmp_path: Path) -> None:
    app = create_app(_site(tmp_path, photo_required=True), start_consumer=False)
    with TestClient(app) as client:
        admin = user_token(app, "admin", Role.ADMIN, [])
        token = _token(_code(client, admin))
        assert client.get(f"/r/{token}/info").json()["photo_required"] is True
        r = _report(app, token)
        assert r.status_code == 400 and r.json()["reason"] == "photo_missing"


def test_markup_stays_inert(world: tuple[FastAPI, TestClient, dict[str, str]]) -> None:
    app, client, tokens = world
    token = _token(_code(client, tokens["admin"], place="<img src=x onerror=alert(1)>"))
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    r = _report(app, token, description=evil)
    assert r.status_code == 201
    page = client.get(r.json()["tracking_url"])
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-content-type-options"] == "nosniff"
    assert evil not in page.text and "onerror" not in page.text  # the page is static; data comes as JSON
    assert re.findall(r"<script[^>]*>", PAGE.read_text()) == ['<script src="/static/resident.js" defer>']
    status = client.get(f"{r.json()['tracking_url']}/status")
    assert status.headers["content-type"].startswith("application/json") and status.json()["description"] == evil
    js = (PAGE.parent / "resident.js").read_text()
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "document.write" not in js
