"""``GET /events`` over a real uvicorn server with httpx streaming: scope, resume by Last-Event-ID, heartbeat,
revoked login ends the stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.tickets.users import Role
from tests.fixtures.auth import bearer, user_token
from tests.tickets.conftest import make_site
from tests.web.wall_stack import Served, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve(make_site(tmp_path)) as s:
        yield s


def read_events(url: str, headers: dict[str, str], want: int, timeout: float = 20.0,
                on_open: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Read ``want`` SSE messages (bounded by ``timeout``); returns parsed messages and comment lines."""
    messages: list[dict[str, Any]] = []
    comments: list[str] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(timeout, read=timeout)) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(":"):
                comments.append(line)
                if on_open is not None and line.startswith(": connected"):
                    on_open()
            elif line == "":
                if "data" in current:
                    messages.append(current)
                    if len(messages) >= want:
                        break
                current = {}
            else:
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
            if time.monotonic() > deadline:
                break
    return messages, comments


def test_events_are_scoped_and_typed(served: Served) -> None:
    token = user_token(served.app, "disp1", Role.DISPATCHER, ["T1/D1"])
    posted: list[str] = []

    def post() -> None:  # after the stream is open: a new client only gets events from now on
        posted.append(served.post_alert("cam3", "fire"))  # T1/D2: outside the scope
        posted.append(served.post_alert("cam1", "fire"))  # T1/D1/C1/G1: inside

    msgs, _ = read_events(served.url + "events", bearer(token), want=1, on_open=post)
    assert len(msgs) == 1
    data = msgs[0]["data"]
    assert msgs[0]["event"] == "ticket" and int(msgs[0]["id"]) == data["event_id"]
    assert data["type"] == "created" and data["ticket"]["incident_id"] == posted[1]
    assert data["ticket"]["grid_path"] == ["T1", "D1", "C1", "G1"]

    # A move is a "moved" event; resuming after the created one gets exactly it.
    admin = user_token(served.app, "boss", Role.ADMIN, [])
    r = httpx.post(f"{served.url}tickets/{data['ticket_id']}/transition", headers=bearer(admin),
                   json={"to": "verified", "note": "seen"}, timeout=10)
    assert r.status_code == 200, r.text
    msgs2, _ = read_events(served.url + "events", {**bearer(token), "Last-Event-ID": msgs[0]["id"]}, want=1)
    assert msgs2[0]["data"]["type"] == "moved" and msgs2[0]["data"]["to_status"] == "verified"
    assert msgs2[0]["data"]["actor"] == "boss" and int(msgs2[0]["id"]) > int(msgs[0]["id"])


def test_resume_replays_in_order_and_admin_sees_all(served: Served) -> None:
    admin = user_token(served.app, "boss", Role.ADMIN, [])
    ids = [served.post_alert(cam, "clutter") for cam in ("cam1", "cam3", "cam9")]
    msgs, _ = read_events(served.url + "events?after=0", bearer(admin), want=3)
    assert [m["data"]["ticket"]["incident_id"] for m in msgs] == ids
    assert [int(m["id"]) for m in msgs] == sorted(int(m["id"]) for m in msgs)


def test_heartbeat_and_revoked_login_end_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.web import events

    monkeypatch.setattr(events, "HEARTBEAT_S", 0.5)  # read when the app is built: beats twice a second
    with serve(make_site(tmp_path)) as s:
        token = user_token(s.app, "viewer1", Role.VIEWER, ["T1"])
        pings, _ = read_events(s.url + "events", bearer(token), want=2)
        assert [m["event"] for m in pings] == ["ping", "ping"] and "id" not in pings[0]
        assert pings[0]["data"]["ts"] > 1.7e9  # a real Unix time

        def log_out() -> None:
            assert httpx.post(s.url + "auth/logout", headers=bearer(token), timeout=10).status_code == 204

        msgs, _ = read_events(s.url + "events", bearer(token), want=1, on_open=log_out)
        assert msgs and msgs[0]["event"] == "logout"  # the open stream ends at the next beat
        assert httpx.get(s.url + "events", headers=bearer(token), timeout=10).status_code == 401


def test_events_need_a_login(served: Served) -> None:
    assert httpx.get(served.url + "events", timeout=10).status_code == 401


def test_stream_ends_after_max_s(served: Served) -> None:
    viewer = user_token(served.app, "viewer2", Role.VIEWER, ["T1/D1"])
    served.post_alert("cam1", "poster")
    r = httpx.get(served.url + "events?after=0&max_s=0", headers=bearer(viewer), timeout=10)
    assert r.status_code == 200 and r.text.count("event: ticket") == 1 and r.text.startswith("retry: ")
