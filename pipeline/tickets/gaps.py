"""Open gaps of the per-worker alert sequences (``alert_gaps``): which numbers are missing, to ask for them.

:mod:`pipeline.tickets.sequence` keeps only the highest ``seq`` per worker; this table keeps the missing
ranges themselves, in the same transaction, so any API replica can ask the worker to send them again
(:mod:`pipeline.tickets.recovery`) and see when they arrive:

* a jump opens the range ``last + 1 .. seq - 1`` (split into rows of at most
  :data:`~pipeline.contract.resend.MAX_RESEND_ALERTS` numbers, one resend request's worth);
* an alert that fills a number (a late or re-sent one) shrinks or splits its row, and the row is deleted
  when it is empty: the number is *recovered*;
* a row asked for ``resend_max_requests`` times and still there is ``unrecoverable`` (the worker's archive
  no longer has it); it stays for :data:`UNRECOVERABLE_KEEP_DAYS` days, and is still filled if the alert
  turns up;
* a worker that starts its series again at 1 (it lost its outbox, and its archive with it) drops its rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from pipeline.contract.resend import MAX_RESEND_ALERTS
from pipeline.tickets.models import Base, UTCDateTime, utcnow

OPEN, UNRECOVERABLE = "open", "unrecoverable"
"""States of a gap row."""
MAX_TRACKED_GAP = 100_000
"""Most numbers one gap records (its newest); older ones of a larger jump are given up at once (a store that
first meets a worker at seq 5,000,000 does not ask for five million alerts)."""
UNRECOVERABLE_KEEP_DAYS = 7
"""Unrecoverable rows are deleted after this many days (the loss stays in the metrics and the log)."""


class AlertGap(Base):
    """Missing alert sequence numbers ``first_seq`` .. ``last_seq`` of one worker."""

    __tablename__ = "alert_gaps"
    __table_args__ = (Index("ix_alert_gaps_worker_first", "worker_id", "first_seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(200))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=OPEN)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    last_request_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def size(self) -> int:
        """How many numbers are still missing."""
        return self.last_seq - self.first_seq + 1


def open_gap(session: Session, worker_id: str, first: int, last: int, now: datetime | None = None) -> int:
    """Record ``first .. last`` as missing (rows of at most one request's worth, the newest
    :data:`MAX_TRACKED_GAP` numbers); returns how many older numbers were given up instead."""
    at = now or utcnow()
    start = max(first, last - MAX_TRACKED_GAP + 1)
    while start <= last:
        end = min(last, start + MAX_RESEND_ALERTS - 1)
        session.add(AlertGap(worker_id=worker_id, first_seq=start, last_seq=end, state=OPEN, detected_at=at,
                             requests=0))
        start = end + 1
    return max(0, last - first + 1 - MAX_TRACKED_GAP)


def fill(session: Session, worker_id: str, seq: int) -> bool:
    """Take ``seq`` out of its gap row; True when it was missing (recovered)."""
    row = session.scalars(select(AlertGap).where(AlertGap.worker_id == worker_id, AlertGap.first_seq <= seq,
                                                 AlertGap.last_seq >= seq).limit(1).with_for_update()).first()
    if row is None:
        return False
    if row.first_seq == row.last_seq:
        session.delete(row)
    elif seq == row.first_seq:
        row.first_seq = seq + 1
    elif seq == row.last_seq:
        row.last_seq = seq - 1
    else:
        session.add(AlertGap(worker_id=worker_id, first_seq=seq + 1, last_seq=row.last_seq, state=row.state,
                             detected_at=row.detected_at, requests=row.requests,
                             last_request_at=row.last_request_at))
        row.last_seq = seq - 1
    return True


def drop_worker(session: Session, worker_id: str) -> int:
    """Delete every gap row of a worker that restarted its series; returns the numbers dropped."""
    rows = list(session.scalars(select(AlertGap).where(AlertGap.worker_id == worker_id).with_for_update()))
    dropped = sum(r.size for r in rows if r.state == OPEN)
    for row in rows:
        session.delete(row)
    return dropped


def missing_numbers(session: Session, state: str = OPEN) -> dict[str, int]:
    """Worker id -> numbers in gap rows of ``state``."""
    rows = session.execute(select(AlertGap.worker_id, func.sum(AlertGap.last_seq - AlertGap.first_seq + 1))
                           .where(AlertGap.state == state).group_by(AlertGap.worker_id)).all()
    return {str(w): int(n or 0) for w, n in rows}
