"""Per-worker alert sequence tracking: a jump in ``seq`` is a lost alert, wherever it was lost.

Each worker numbers its alerts 1, 2, 3, ... (persisted in its outbox, so restarts continue the series).
The ticket service keeps the highest number applied per worker in ``worker_sequences``, in the same
transaction as the ticket change, so all API replicas of a shared subscription see one shared state:

* ``seq == last + 1``: in order.
* ``seq > last + 1``: ``seq - last - 1`` numbers are missing (a gap, counted and logged).
* ``seq <= last`` and already applied: a redelivery, nothing to count.
* ``seq <= last`` and new: it arrived late (after a later one, e.g. on another replica); it was counted
  missing before, so it is counted ``late`` and ``missing - late`` is the real loss.

A worker's first alert counts ``seq - 1`` missing (its series starts at 1), so a burst lost before the
first delivered alert shows too; a store created after a worker has been running counts its earlier
alerts once. A new ``seq == 1`` below the last number means the worker lost its outbox and started over:
the series is restarted (``restarted``) instead of counting every later alert as late.

The missing ranges themselves go to ``alert_gaps`` (:mod:`pipeline.tickets.gaps`) in the same transaction,
so the service can ask the worker for them (:mod:`pipeline.tickets.recovery`); a late number that fills one
is ``recovered``. :func:`claim_last_seq` does the same for the worker's own word (its retained status's
``last_seq``), which shows a loss at the very end of a stream that no later alert would reveal.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from pipeline.tickets.gaps import drop_worker, fill, open_gap
from pipeline.tickets.models import WorkerSequence, utcnow


@dataclass(frozen=True)
class SequenceCheck:
    """What one alert's ``seq`` says about the worker's stream.

    Attributes:
        worker_id: the worker (None when the alert carries no sequence).
        missing: numbers skipped before this one (0 when in order).
        late: it arrived after a higher number and was not applied before.
        restarted: the worker started its series again at 1.
        recovered: it filled a recorded gap (a late or re-sent alert).
        dropped: numbers given up at once: still missing from the old series when the worker restarted it,
            or beyond :data:`~pipeline.tickets.gaps.MAX_TRACKED_GAP` of one jump.
    """

    worker_id: str | None = None
    missing: int = 0
    late: bool = False
    restarted: bool = False
    recovered: bool = False
    dropped: int = 0


NO_SEQUENCE = SequenceCheck()


def track_sequence(session: Session, worker_id: str | None, seq: int | None, redelivery: bool) -> SequenceCheck:
    """Record ``seq`` of ``worker_id`` inside the caller's transaction (the row is locked while it runs).

    Args:
        session: open session in the transaction that applies the alert.
        worker_id: the alert's worker, or None.
        seq: the alert's sequence number, or None (old producers).
        redelivery: the alert was already applied (a broker redelivery).

    Returns:
        The gap or lateness this alert shows.
    """
    if worker_id is None or seq is None:
        return NO_SEQUENCE
    row = session.get(WorkerSequence, worker_id, with_for_update=True)
    if row is None:
        missing = seq - 1
        session.add(WorkerSequence(worker_id=worker_id, last_seq=seq, missing_total=missing, late_total=0,
                                   updated_at=utcnow()))
        dropped = open_gap(session, worker_id, 1, seq - 1) if missing else 0
        return SequenceCheck(worker_id, missing=missing, dropped=dropped)
    if seq > row.last_seq:
        missing = seq - row.last_seq - 1
        dropped = open_gap(session, worker_id, row.last_seq + 1, seq - 1) if missing else 0
        row.last_seq = seq
        row.missing_total += missing
        row.updated_at = utcnow()
        return SequenceCheck(worker_id, missing=missing, dropped=dropped)
    if redelivery:
        return SequenceCheck(worker_id)
    row.updated_at = utcnow()
    if seq == 1:
        row.last_seq = 1
        return SequenceCheck(worker_id, restarted=True, dropped=drop_worker(session, worker_id))
    row.late_total += 1
    return SequenceCheck(worker_id, late=True, recovered=fill(session, worker_id, seq))


def claim_last_seq(session: Session, worker_id: str, last_seq: int, new_worker: bool = True) -> SequenceCheck:
    """Record the worker's own last number (its status) inside the caller's transaction.

    Numbers above the last one that arrived are counted missing and recorded as a gap, as if an alert with
    ``last_seq + 1`` had arrived; a claim at or below what arrived changes nothing.

    Args:
        session: open session.
        worker_id: the worker.
        last_seq: the last number it says it has queued.
        new_worker: also for a worker of which nothing arrived yet (else such a claim changes nothing).

    Returns:
        The gap the claim shows (``missing`` 0 when none).
    """
    row = session.get(WorkerSequence, worker_id, with_for_update=True)
    if row is None and not new_worker:
        return SequenceCheck(worker_id)
    if row is None:
        session.add(WorkerSequence(worker_id=worker_id, last_seq=last_seq, missing_total=last_seq, late_total=0,
                                   updated_at=utcnow()))
        return SequenceCheck(worker_id, missing=last_seq, dropped=open_gap(session, worker_id, 1, last_seq))
    if last_seq <= row.last_seq:
        return SequenceCheck(worker_id)
    missing = last_seq - row.last_seq
    dropped = open_gap(session, worker_id, row.last_seq + 1, last_seq)
    row.last_seq = last_seq
    row.missing_total += missing
    row.updated_at = utcnow()
    return SequenceCheck(worker_id, missing=missing, dropped=dropped)
