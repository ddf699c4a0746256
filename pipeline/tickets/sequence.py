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
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from pipeline.tickets.models import WorkerSequence, utcnow


@dataclass(frozen=True)
class SequenceCheck:
    """What one alert's ``seq`` says about the worker's stream.

    Attributes:
        worker_id: the worker (None when the alert carries no sequence).
        missing: numbers skipped before this one (0 when in order).
        late: it arrived after a higher number and was not applied before.
        restarted: the worker started its series again at 1.
    """

    worker_id: str | None = None
    missing: int = 0
    late: bool = False
    restarted: bool = False


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
        return SequenceCheck(worker_id, missing=missing)
    if seq > row.last_seq:
        missing = seq - row.last_seq - 1
        row.last_seq = seq
        row.missing_total += missing
        row.updated_at = utcnow()
        return SequenceCheck(worker_id, missing=missing)
    if redelivery:
        return SequenceCheck(worker_id)
    row.updated_at = utcnow()
    if seq == 1:
        row.last_seq = 1
        return SequenceCheck(worker_id, restarted=True)
    row.late_total += 1
    return SequenceCheck(worker_id, late=True)
