"""``GET /events``: ticket events as Server-Sent Events, scoped to the logged-in user's grid nodes.

Why polling the ``ticket_events`` table (by its autoincrement id) instead of an in-process hub: every
change to a ticket (alert from the consumer, a move through the API, an escalation of the case loop, a
camera check) already writes a ``ticket_events`` row in the same transaction, whichever process or
replica made it. Reading ``WHERE id > last_id`` is one indexed query per stream per poll, works with
several API replicas behind a load balancer and needs no broker; the price is up to ``poll_s`` latency.

Each event is sent as::

    id: <ticket_events.id>
    event: ticket
    data: {"type": "created|moved|escalated|camera_check|updated", "kind": ..., "ticket": {...}}

A client that reconnects sends ``Last-Event-ID`` (the browser's ``EventSource`` does so by itself) and
gets every event after it that is still in scope; a new client starts at the newest event (nothing is
replayed). A ``ping`` event without an id (``event: ping``, ``data: {"ts": <unix time>}``) goes out every
``heartbeat_s``: proxies keep the stream open, and the browser (which never sees comment lines) can tell a
dead connection; the login is checked again at each heartbeat, and a revoked or
expired one ends the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.tickets.auth import SESSION_COOKIE, CurrentUser, Principal
from pipeline.tickets.models import EventKind, Ticket, TicketEvent
from pipeline.tickets.roles import ticket_scope
from pipeline.tickets.schemas import TicketOut

POLL_S = 1.0
HEARTBEAT_S = 15.0
BATCH = 200
STREAM_MAX_S = 1800.0
"""A stream ends after this long (the browser reconnects at once with Last-Event-ID): open streams spread
over replicas again after a deploy, and no stream outlives a token expiry by much."""
RETRY_MS = 3000
"""Reconnect delay the browser is told to use (``retry:``)."""

EVENT_TYPES: dict[str, str] = {
    EventKind.ALERT_OPENED.value: "created",
    EventKind.RESIDENT_REPORT.value: "created",
    EventKind.TRANSITION.value: "moved",
    EventKind.ESCALATED.value: "escalated",
    EventKind.OVERDUE.value: "escalated",
    EventKind.CAMERA_CHECK.value: "camera_check",
}
"""``ticket_events.kind`` -> the ``type`` a client switches on; every other kind is ``updated``."""


def newest_event_id(sessions: sessionmaker[Session]) -> int:
    """The highest ``ticket_events.id`` (0 for an empty store)."""
    with sessions() as session:
        return int(session.scalar(select(func.max(TicketEvent.id))) or 0)


def events_after(sessions: sessionmaker[Session], user: Principal, last_id: int,
                 limit: int = BATCH) -> tuple[int, list[tuple[int, dict[str, Any]]]]:
    """Events with ``id > last_id`` in ``user``'s scope, oldest first.

    Returns:
        The id to continue after (the highest id *looked at*, in scope or not, so events outside the scope
        are not read again) and ``(id, data)`` pairs to send.
    """
    with sessions() as session:
        newest = session.scalars(select(TicketEvent.id).where(TicketEvent.id > last_id)
                                 .order_by(TicketEvent.id).limit(limit)).all()
        if not newest:
            return last_id, []
        upto = newest[-1]
        rows = session.execute(
            select(TicketEvent, Ticket).join(Ticket, Ticket.id == TicketEvent.ticket_id)
            .where(TicketEvent.id > last_id, TicketEvent.id <= upto, ticket_scope(user))
            .order_by(TicketEvent.id)).all()
        out = [(e.id, {"type": EVENT_TYPES.get(e.kind, "updated"), "kind": e.kind, "event_id": e.id,
                       "ticket_id": t.id, "ts": e.ts.isoformat(), "from_status": e.from_status,
                       "to_status": e.to_status, "actor": e.actor,
                       "ticket": TicketOut.of(t).model_dump(mode="json")}) for e, t in rows]
        return upto, out


def sse_message(event_id: int, data: dict[str, Any]) -> str:
    """One SSE message (``data`` is one JSON line, so it needs no line splitting)."""
    return f"id: {event_id}\nevent: ticket\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _secret(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(SESSION_COOKIE)


def install_events(app: FastAPI, poll_s: float | None = None, heartbeat_s: float | None = None) -> None:
    """Add ``GET /events`` to ``app`` (the ticket API: ``app.state.tickets``).

    Args:
        app: the ticket API.
        poll_s: seconds between reads of ``ticket_events`` (default :data:`POLL_S`).
        heartbeat_s: seconds between ``ping`` events and login checks (default :data:`HEARTBEAT_S`).
    """
    poll = POLL_S if poll_s is None else poll_s
    beat = HEARTBEAT_S if heartbeat_s is None else heartbeat_s

    # Not in the OpenAPI document: it cannot describe an endless event stream, and the generated-request
    # contract test (tests/tickets/test_api_schemathesis.py) reads each answer to its end. Documented in
    # docs/screens.md and docs/api.md; tested in tests/web/test_wall_events.py.
    @app.get("/events", response_class=StreamingResponse, include_in_schema=False)
    async def events(request: Request, user: CurrentUser,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID",
                                                                 max_length=20)] = None,
                     after: Annotated[int | None, Query(ge=0, description="Resume after this event id (for "
                                                        "clients that cannot set Last-Event-ID).")] = None,
                     max_s: Annotated[float, Query(ge=0, le=86_400, description="End the stream after this "
                                                   "many seconds (0: send what is there, then end).")
                                      ] = STREAM_MAX_S,
                     ) -> StreamingResponse:
        """Ticket events in the user's grid scope as they happen (``created``, ``moved``, ``escalated``,
        ``camera_check``, ``updated``); resume with ``Last-Event-ID``; a ``ping`` event every
        heartbeat."""
        st = request.app.state.tickets
        sessions: sessionmaker[Session] = st.sessions
        start = after
        if last_event_id is not None and last_event_id.strip().isdigit():
            start = int(last_event_id.strip())
        if start is None:
            start = await run_in_threadpool(newest_event_id, sessions)
        secret = _secret(request)

        async def stream() -> AsyncIterator[str]:
            cursor: int = start
            yield f"retry: {RETRY_MS}\n: connected after {cursor}\n\n"
            next_beat = time.monotonic() + beat
            end = time.monotonic() + max_s
            while not await request.is_disconnected():
                cursor, batch = await run_in_threadpool(events_after, sessions, user, cursor)
                for event_id, data in batch:
                    yield sse_message(event_id, data)
                if time.monotonic() >= end:
                    return
                if time.monotonic() >= next_beat:
                    if secret is not None and await run_in_threadpool(st.auth.principal_of_token, secret) is None:
                        yield "event: logout\ndata: {}\n\n"
                        return
                    yield f'event: ping\ndata: {{"ts":{time.time():.0f}}}\n\n'
                    next_beat = time.monotonic() + beat
                if len(batch) < BATCH:
                    await asyncio.sleep(poll)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
