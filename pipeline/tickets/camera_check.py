"""Cameras that check the fix, service side: the request to the worker and what its result does.

When a camera ticket is resolved, :func:`~pipeline.tickets.moves.queue_camera_check` writes a
``camera_checks`` row; the case loop publishes it as :class:`CameraCheckRequestV1` on
``<prefix>/check/request/<camera_id>`` (:func:`request_message`). The worker running the camera re-judges
the zone for ``window_seconds`` and answers with :class:`CameraCheckResultV1` on
``<prefix>/check/result/<camera_id>``; the consumer parses it with the same bounds as alerts
(:func:`parse_check_result`) and :func:`apply_check_result` records it:

* ``passed``: event ``camera_check: passed`` with the snapshot URL; the ticket moves to ``checked`` when
  the hazard's policy says so (``casework.hazards.<hazard>.check_passes``) and it is still ``resolved``.
* ``failed``: event ``camera_check: failed``; a ``resolved`` ticket goes back to ``in_progress`` and its
  cell is notified (``check_failed``).
* ``unavailable``: the event only; a dispatcher decides.

A result is applied once (the event key is the check id); a result for an unknown check, or whose ticket or
camera disagrees with the request, is a :class:`~pipeline.tickets.payload.PayloadError` (dead letter).

A check without a result ``casework.check_timeout_seconds`` after it was requested times out
(:func:`time_out_checks`, run by the case loop under its lock): event ``camera_check: timeout``, and a ticket
still ``resolved`` on that check is flagged ``manual_check`` for a dispatcher (notification
``check_timeout`` to its community). A result arriving after that is stored on the check and as an event,
but moves nothing (outcome ``late``): the dispatcher has the ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1
from pipeline.contract.enums import Hazard
from pipeline.contract.topics import parse_single_level
from pipeline.tickets.deadlines import CaseContext, notify
from pipeline.tickets.limits import DEFAULT_LIMITS, PayloadLimits
from pipeline.tickets.models import CameraCheck, EventKind, Ticket, TicketEvent, TicketStatus, utcnow
from pipeline.tickets.moves import move
from pipeline.tickets.payload import PayloadError, _check_size, _load_json, _short

log = logging.getLogger(__name__)

S = TicketStatus
MAX_RESULT_BYTES = 16 * 1024
"""A check result is a few hundred bytes; anything much larger is refused before parsing."""
CheckOutcome = Literal["applied", "duplicate", "late"]
TIMEOUT_ACTOR = "system"
"""Actor of the timeout event (the service itself)."""
TIMEOUT_BATCH = 500
"""Checks timed out per pass at most (the rest in the next pass)."""


def camera_actor(camera_id: str) -> str:
    """Actor of the moves a camera check makes."""
    return f"camera:{camera_id}"[:64]


def request_message(check: CameraCheck, ticket: Ticket) -> CameraCheckRequestV1:
    """The ``CameraCheckRequestV1`` of a queued check."""
    return CameraCheckRequestV1(
        schema_version=1, check_id=check.check_id, ticket_id=ticket.id, incident_id=ticket.incident_id,
        camera_id=check.camera_id, zone_id=ticket.zone_id, hazard=Hazard(ticket.hazard),
        window_seconds=check.window_seconds, requested_at=check.requested_at)


def parse_check_result(topic: str, payload: bytes, prefix: str,
                       limits: PayloadLimits = DEFAULT_LIMITS) -> CameraCheckResultV1:
    """Parse a check result arriving on ``<prefix>/check/result/<camera_id>``.

    Raises:
        PayloadError: too large or deep, not JSON, wrong shape, or the topic's camera is not the payload's.
    """
    camera_id = parse_single_level(topic, prefix, "check/result")
    if camera_id is None:
        raise PayloadError("topic_mismatch", f"unexpected check result topic {topic[:300]!r}")
    _check_size(payload, MAX_RESULT_BYTES, "check result")
    data, _ = _load_json(payload, limits)
    try:
        result = CameraCheckResultV1.model_validate(data)
    except ValidationError as exc:
        raise PayloadError("schema", _short(exc)) from exc
    if result.camera_id != camera_id:
        raise PayloadError("topic_mismatch", f"topic camera {camera_id!r} != payload {result.camera_id!r}")
    if result.snapshot_url is not None and len(result.snapshot_url) > 2000:
        raise PayloadError("too_large", "snapshot_url longer than 2000 characters")
    return result


@dataclass(frozen=True)
class CheckApplied:
    """What one result did: ``applied`` or ``duplicate``, and the ticket's status after it."""

    ticket_id: int
    outcome: CheckOutcome
    status: str


def _apply(session: Session, result: CameraCheckResultV1, ctx: CaseContext) -> CheckApplied:
    check = session.get(CameraCheck, result.check_id, with_for_update=True)
    if check is None or check.ticket_id != result.ticket_id or check.camera_id != result.camera_id:
        raise PayloadError("unknown_check", f"no camera check {result.check_id!r} of ticket {result.ticket_id} "
                           f"on camera {result.camera_id!r}")
    ticket = session.scalars(select(Ticket).where(Ticket.id == check.ticket_id).with_for_update()).one()
    if check.outcome is not None:
        return CheckApplied(ticket.id, "duplicate", ticket.status)
    now = utcnow()
    check.outcome, check.result_at = result.outcome, now
    check.snapshot_url, check.detail = result.snapshot_url, result.detail
    late = check.timed_out_at is not None
    note = f"camera_check: {result.outcome}" + (f" ({result.detail})" if result.detail else "") + (
        " (late: after the timeout; a dispatcher checks, the ticket is not moved)" if late else "")
    body = result.model_dump(mode="json")
    session.add(TicketEvent(ticket_id=ticket.id, kind=EventKind.CAMERA_CHECK.value,
                            message_key=f"camera_check:{check.check_id}", actor=camera_actor(check.camera_id),
                            note=note[:4000], ts=now, payload=body))
    session.flush()
    if late:  # the timeout handed the ticket to a dispatcher: it moves once, by a person
        return CheckApplied(ticket.id, "late", ticket.status)
    policy = ctx.casework.policy(ticket.hazard)
    if ticket.status == S.RESOLVED:
        actor = camera_actor(check.camera_id)
        if result.outcome == "passed" and policy.check_passes:
            move(session, ticket, S.CHECKED.value, actor, note="camera check passed", ctx=ctx, now=now,
                 payload={"check_id": check.check_id, "snapshot_url": result.snapshot_url})
        elif result.outcome == "failed":
            move(session, ticket, S.IN_PROGRESS.value, actor, note="camera check failed: the hazard is still "
                 "there", ctx=ctx, now=now, payload={"check_id": check.check_id,
                                                      "snapshot_url": result.snapshot_url})
            notify(session, ticket, ctx, "check_failed", now, reason="the camera still sees the hazard")
    if result.outcome == "passed":
        notify(session, ticket, ctx, "check_passed", now)
    session.flush()
    return CheckApplied(ticket.id, "applied", ticket.status)


def apply_check_result(sessions: sessionmaker[Session], result: CameraCheckResultV1,
                       ctx: CaseContext) -> CheckApplied:
    """Record one check result in its own transaction, once (see the module docstring).

    Raises:
        PayloadError: the result names no check this service asked for (``unknown_check``).
        sqlalchemy.exc.SQLAlchemyError: the database failed (the caller must not acknowledge).
    """
    for attempt in range(1, 4):
        try:
            with sessions() as session, session.begin():
                applied = _apply(session, result, ctx)
            log.info("camera check %s of ticket %d: %s (%s) -> %s", result.check_id, applied.ticket_id,
                     result.outcome, applied.outcome, applied.status)
            return applied
        except IntegrityError:
            if attempt == 3:  # a concurrent consumer applied the same result first
                raise
    raise AssertionError("unreachable")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def time_out_checks(session: Session, ctx: CaseContext, now: float) -> int:
    """Time out the checks without a result ``check_timeout_seconds`` after their request (inside the case
    loop's locked transaction); returns how many.

    Each gets ``timed_out_at`` (the moment it became due, also after downtime) and a ``camera_check:
    timeout`` event (key ``camera_check_timeout:<check_id>``, unique per ticket, so two racing passes cannot
    record it twice). A ticket still ``resolved`` on that check (not resolved again since) is flagged
    ``manual_check`` and its community's dispatchers are notified (``check_timeout``).
    """
    timeout = timedelta(seconds=ctx.casework.check_timeout_seconds)
    due = session.execute(
        select(CameraCheck, Ticket).join(Ticket, Ticket.id == CameraCheck.ticket_id)
        .where(CameraCheck.outcome.is_(None), CameraCheck.timed_out_at.is_(None),
               CameraCheck.requested_at <= _utc(now) - timeout)
        .order_by(CameraCheck.requested_at).limit(TIMEOUT_BATCH).with_for_update()).tuples().all()
    for check, ticket in due:
        at = check.requested_at + timeout
        check.timed_out_at = at
        current = ticket.status == S.RESOLVED and (ticket.resolved_at is None
                                                    or check.requested_at >= ticket.resolved_at)
        wait = f"{ctx.casework.check_timeout_seconds:g} s"
        note = (f"camera_check: timeout (no result from camera {check.camera_id} within {wait}"
                + ("; a dispatcher checks by hand)" if current else ")"))
        session.add(TicketEvent(ticket_id=ticket.id, kind=EventKind.CAMERA_CHECK.value,
                                message_key=f"camera_check_timeout:{check.check_id}", actor=TIMEOUT_ACTOR,
                                note=note, ts=at, payload={"check_id": check.check_id, "outcome": "timeout",
                                                           "timeout_seconds": ctx.casework.check_timeout_seconds,
                                                           "published": check.published_at is not None}))
        if current:
            ticket.manual_check = True
            ticket.updated_at = max(ticket.updated_at, at)
            notify(session, ticket, ctx, "check_timeout", at, level=1,
                   reason=f"camera {check.camera_id} did not answer the check within {wait}; check by hand")
        log.warning("camera check %s of ticket %d timed out after %s%s", check.check_id, ticket.id, wait,
                    "" if check.published_at is not None else " (never published: broker unreachable?)")
    session.flush()
    return len(due)


class CheckTimeoutCollector(Collector):
    """``gridwatch_camera_check_timeouts`` (checks that timed out, ever) and ``gridwatch_tickets_manual_check``
    (resolved tickets waiting for a dispatcher's manual check), read from the store at scrape time so every
    replica reports the same."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Query the store; yields nothing when the database is unreachable."""
        try:
            with self._sessions() as session:
                timed_out = session.scalar(select(func.count()).select_from(CameraCheck)
                                           .where(CameraCheck.timed_out_at.is_not(None))) or 0
                manual = session.scalar(select(func.count()).select_from(Ticket).where(
                    Ticket.manual_check.is_(True), Ticket.status == S.RESOLVED.value)) or 0
        except SQLAlchemyError as exc:
            log.warning("camera check metrics: database unavailable: %s", exc)
            return
        yield GaugeMetricFamily("gridwatch_camera_check_timeouts", "Camera checks that got no result within "
                                "casework.check_timeout_seconds (in the store).", value=float(timed_out))
        yield GaugeMetricFamily("gridwatch_tickets_manual_check", "Resolved tickets whose camera check timed "
                                "out, waiting for a dispatcher's manual check.", value=float(manual))
