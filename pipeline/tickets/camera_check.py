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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
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
CheckOutcome = Literal["applied", "duplicate"]


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
    note = f"camera_check: {result.outcome}" + (f" ({result.detail})" if result.detail else "")
    body = result.model_dump(mode="json")
    session.add(TicketEvent(ticket_id=ticket.id, kind=EventKind.CAMERA_CHECK.value,
                            message_key=f"camera_check:{check.check_id}", actor=camera_actor(check.camera_id),
                            note=note[:4000], ts=now, payload=body))
    session.flush()
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
