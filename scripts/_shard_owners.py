"""Who ran which camera when (scripts/shard_proof.py): a health tap, worker lifetimes and the checks on them.

Two owner logs, both per camera:

* **observed**: every camera health message (``<prefix>/health/<camera>``, one per camera every
  ``worker.health_interval_seconds``) names its ``worker_id`` and carries the worker's ``ts``. Each message is
  given to the worker *incarnation* (one process start) of that id whose lifetime holds ``ts``; a camera's
  interval on an incarnation is its first to its last message there.
* **by process**: each incarnation ran the cameras its shard owns by rendezvous hashing
  (:func:`pipeline.sharding.shard_of`) for its whole life, from just before its start to just after its exit.
  These intervals hold the observed ones, so no overlap here means none in reality either.

Double ownership is any two intervals of one camera, on two different incarnations, that overlap.
"""

from __future__ import annotations

import json
import statistics
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from pipeline.sharding import shard_of


@dataclass(frozen=True)
class HealthRecord:
    """One camera health message as the tap received it."""

    camera_id: str
    worker_id: str
    ts: float  # the worker's clock (Unix seconds); one host, so comparable with Lifetime's
    frames_analysed: int


@dataclass
class Lifetime:
    """One worker process incarnation: shard ``index`` of ``count``, alive within [start, end]."""

    worker_id: str
    index: int
    count: int
    incarnation: int
    start: float
    end: float | None = None  # None: still running
    how_ended: str = ""  # "kill -9" or "SIGTERM"

    @property
    def name(self) -> str:
        """e.g. ``shard-1/3#2`` (second start of shard 1 of 3)."""
        return f"{self.worker_id}/{self.count}#{self.incarnation}"

    def holds(self, ts: float, end: float) -> bool:
        """Whether ``ts`` lies in this lifetime (an open one ends at ``end``)."""
        return self.start <= ts <= (self.end if self.end is not None else end)


class HealthTap:
    """Records every live (not retained) camera health message of ``<prefix>/health/+``."""

    def __init__(self, port: int, prefix: str, client_id: str) -> None:
        self.topic = f"{prefix}/health/+"
        self.records: list[HealthRecord] = []
        self.unparsable = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        c.on_connect = lambda cl, *_: cl.subscribe(self.topic, qos=0)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_message = self._on_message
        self._client = c
        self._port = port

    def start(self, timeout: float = 15.0) -> None:
        """Connect and subscribe (RuntimeError after ``timeout``)."""
        self._client.connect_async("127.0.0.1", self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the health tap did not subscribe")

    def stop(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:  # a retained copy replays an older message; only live ones are evidence
            return
        try:
            data = json.loads(msg.payload)
            record = HealthRecord(str(data["camera_id"]), str(data["worker_id"]), float(data["ts"]),
                                  int(data.get("frames_analysed") or 0))
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.unparsable += 1
            return
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[HealthRecord]:
        """The messages so far."""
        with self._lock:
            return list(self.records)


Interval = tuple[str, float, float]  # (incarnation name, first, last)


def observed_intervals(records: list[HealthRecord], lives: list[Lifetime], now: float
                       ) -> tuple[dict[str, list[Interval]], int]:
    """Per camera, its health intervals per incarnation; and the messages no incarnation's lifetime holds."""
    by_id: dict[str, list[Lifetime]] = defaultdict(list)
    for life in lives:
        by_id[life.worker_id].append(life)
    spans: dict[tuple[str, str], list[float]] = {}
    orphans = 0
    for r in records:
        owner = next((lf for lf in by_id.get(r.worker_id, []) if lf.holds(r.ts, now)), None)
        if owner is None:
            orphans += 1
            continue
        span = spans.setdefault((r.camera_id, owner.name), [r.ts, r.ts])
        span[0], span[1] = min(span[0], r.ts), max(span[1], r.ts)
    out: dict[str, list[Interval]] = defaultdict(list)
    for (camera, name), (first, last) in spans.items():
        out[camera].append((name, first, last))
    return dict(out), orphans


def process_intervals(cameras: list[str], lives: list[Lifetime], now: float) -> dict[str, list[Interval]]:
    """Per camera, the lifetimes of the incarnations whose shard owns it by rendezvous hashing."""
    out: dict[str, list[Interval]] = {c: [] for c in cameras}
    for life in lives:
        for camera in cameras:
            if shard_of(camera, life.count) == life.index:
                out[camera].append((life.name, life.start, life.end if life.end is not None else now))
    return out


def overlaps(intervals: dict[str, list[Interval]]) -> list[dict[str, Any]]:
    """Every pair of one camera's intervals on two incarnations that share a moment."""
    found = []
    for camera, spans in intervals.items():
        ordered = sorted(spans, key=lambda s: s[1])
        for i, (name_a, _, end_a) in enumerate(ordered):
            for name_b, start_b, end_b in ordered[i + 1:]:
                if name_b != name_a and start_b <= end_a:
                    found.append({"camera": camera, "a": name_a, "b": name_b,
                                  "overlap_s": round(min(end_a, end_b) - start_b, 3)})
    return found


def wrong_owners(records: list[HealthRecord], counts_at: dict[str, int]) -> list[dict[str, str]]:
    """Health messages from a worker that the hash does not give the camera (``counts_at``: worker id ->
    shard count of the phase; the worker id is ``shard-<i>``)."""
    bad = []
    seen: set[tuple[str, str]] = set()
    for r in records:
        count = counts_at.get(r.worker_id)
        index = int(r.worker_id.rsplit("-", 1)[1]) if r.worker_id.startswith("shard-") else -1
        owned = count is not None and shard_of(r.camera_id, count) == index
        if not owned and (r.camera_id, r.worker_id) not in seen:
            seen.add((r.camera_id, r.worker_id))
            bad.append({"camera": r.camera_id, "worker": r.worker_id})
    return bad


def pick_up(records: list[HealthRecord], cameras: list[str], worker_id: str, since: float,
            down_since: float) -> dict[str, Any]:
    """How long after ``since`` (the new incarnation's start) each camera was analysed again by ``worker_id``.

    A camera counts as picked up at the ``ts`` of its first health message from ``worker_id`` after ``since``
    whose ``frames_analysed`` is at least 1 (its reader and analyzer run again). ``down_since``: when the
    cameras lost their previous owner (the kill or the stop), for the unwatched time.
    """
    first: dict[str, float] = {}
    for r in sorted(records, key=lambda r: r.ts):
        if r.worker_id == worker_id and r.ts >= since and r.frames_analysed >= 1 and r.camera_id in cameras:
            first.setdefault(r.camera_id, r.ts)
    after = [first[c] - since for c in cameras if c in first]
    unwatched = [first[c] - down_since for c in cameras if c in first]
    return {"cameras": len(cameras), "picked_up": len(first), "missing": sorted(set(cameras) - first.keys()),
            "after_start_s": _stats(after), "unwatched_s": _stats(unwatched)}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
            "max": round(max(values), 1)}
