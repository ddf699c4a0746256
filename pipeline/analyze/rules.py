"""The hazard-rule interface and the incident lifecycle every rule shares.

A rule judges one hazard in one zone (or the whole frame) of one camera. The parts any rule needs live here:

* :class:`FrameView` - one analysed frame as a rule sees it: time (float64 Unix seconds), size, image and
  the output of every detector that ran, by detector name.
* :class:`Rule` - the one protocol :class:`~pipeline.analyze.analyzer.CameraAnalyzer` drives:
  ``judge(view) -> list[Incident]``, the ``detectors`` it reads, its ``interval_seconds`` and ``state()``.
* :class:`KofN` - "seen in at least k of the last n analysed frames" confirmation.
* :class:`PresenceTimer` - since when something has been present, tolerating short gaps (dwell).
* :class:`IncidentLifecycle` - one incident at a time: ``opened`` -> rate-limited ``updated`` ->
  ``cleared`` after ``clear_seconds`` absent, then a ``cooldown_seconds`` pause before the next opens;
  stable ids ``{camera}-{zone}-{hazard}-{int(started_at)}-{n}``.

A new hazard implements :class:`Rule` by turning the view into an :class:`Observation` (or None) per
frame and handing it to an :class:`IncidentLifecycle`, and joins the analyzer with
:func:`~pipeline.analyze.analyzer.register_rule`. Times are Python floats (float64) throughout: near
1.8e9 a float32 holds only multiples of 128 s.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from pipeline.analyze.incident import Hazard, Incident, IncidentBox, IncidentEvent
from pipeline.config import HazardRule
from pipeline.detect.detections import Detections

TIME_EPS = 1e-3
"""Slack (s) when comparing elapsed times, so float timestamps (0.1 + 0.2 ...) do not skip a frame."""


@dataclass(frozen=True)
class FrameView:
    """One analysed frame as every rule sees it.

    Attributes:
        ts: capture time, float64 Unix seconds (a numpy float32 is refused: it cannot hold them).
        width: frame width in pixels.
        height: frame height in pixels.
        image: the BGR frame (None when judged from detections alone: image checks are skipped).
        detections: output of each detector that ran, by detector name, in pixels of the full frame.
        carried: detectors whose output was carried forward from an earlier frame by the motion gate
            (nothing changed in their zones; :mod:`pipeline.analyze.motion_gate`), not run on this one.

    Example:
        >>> v = FrameView(1_796_000_000.25, 640, 480)
        >>> v.ts, len(v.detections_of("coco"))
        (1796000000.25, 0)
    """

    ts: float
    width: int
    height: int
    image: np.ndarray | None = None
    detections: Mapping[str, Detections] = field(default_factory=dict)
    carried: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if isinstance(self.ts, np.floating) and np.dtype(type(self.ts)).itemsize < 8:
            raise TypeError(f"ts must be float64 Unix seconds, got {type(self.ts).__name__}")
        object.__setattr__(self, "ts", float(self.ts))

    def detections_of(self, name: str) -> Detections:
        """The output of detector ``name``; empty when it did not run (so incidents can still clear)."""
        d = self.detections.get(name)
        return d if d is not None else Detections.empty()


@runtime_checkable
class Rule(Protocol):
    """What the analyzer needs from a hazard rule (the one interface every rule implements).

    Attributes:
        hazard: the hazard judged.
        camera_id: camera id.
        zone_id: zone id, or None for whole-frame rules.
        rule: the effective (zone-merged) :class:`~pipeline.config.HazardRule`.
        detectors: names of the detectors whose output the rule reads; the analyzer runs those the site
            defines (``rule.detector`` always), never ``ocr`` (a rule that reads text runs OCR itself).
        interval_seconds: judge at most once per this many seconds of video (0: every analysed frame);
            the analyzer skips the rule on frames in between.
        lifecycle: the rule's incident (restored after a worker restart, cleared when its camera is down).
    """

    hazard: Hazard
    camera_id: str
    zone_id: str | None
    rule: HazardRule
    detectors: tuple[str, ...]
    interval_seconds: float
    lifecycle: IncidentLifecycle

    def judge(self, view: FrameView) -> list[Incident]:
        """Judge one analysed frame; returns the incident events it causes."""
        ...

    def state(self) -> dict[str, object]:
        """The rule's internals now, JSON-able (k-of-n counts, dwell timers, why candidates were rejected)."""
        ...


def normalised_box(box: Sequence[float] | np.ndarray, width: int, height: int, label: str,
                   confidence: float) -> IncidentBox:
    """A pixel box as an :class:`IncidentBox` in 0..1 coordinates (clipped to the frame).

    Example:
        >>> normalised_box([10, 20, 50, 40], 100, 100, "car", 0.9)
        IncidentBox(x1=0.1, y1=0.2, x2=0.5, y2=0.4, label='car', confidence=0.9)
    """
    x1, y1, x2, y2 = (float(v) for v in box)

    def c(v: float) -> float:
        return round(min(1.0, max(0.0, v)), 4)

    return IncidentBox(c(x1 / width), c(y1 / height), c(x2 / width), c(y2 / height), label,
                       round(float(confidence), 4))


class KofN:
    """k-of-n confirmation over analysed frames.

    Example:
        >>> c = KofN(2, 3)
        >>> [c.push(x) for x in (True, True, False, True, False, False)]
        [False, True, True, True, False, False]
    """

    def __init__(self, k: int, n: int) -> None:
        if not 1 <= k <= n:
            raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
        self.k = k
        self._window: deque[bool] = deque(maxlen=n)

    def push(self, seen: bool) -> bool:
        """Record one frame; True when at least k of the last n frames saw it."""
        self._window.append(bool(seen))
        return sum(self._window) >= self.k

    def reset(self) -> None:
        self._window.clear()

    def state(self) -> dict[str, object]:
        """``{k, n, hits, frames}``: the confirmation window now (hits among its last ``frames``)."""
        return {"k": self.k, "n": self._window.maxlen, "hits": sum(self._window), "frames": len(self._window)}


class PresenceTimer:
    """Since when a (zone-level) condition has held, forgiving gaps up to ``grace_seconds``.

    Example:
        >>> t = PresenceTimer(grace_seconds=5)
        >>> [t.update(ts, p) for ts, p in [(0, True), (3, False), (6, True), (20, False), (21, True)]]
        [0, 0, 0, None, 21]
    """

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = float(grace_seconds)
        self.since: float | None = None
        self.last_present: float | None = None

    def update(self, ts: float, present: bool) -> float | None:
        """Record one frame; returns the ts since when the condition holds, or None."""
        if present:
            if self.since is None:
                self.since = ts
            self.last_present = ts
        elif self.last_present is not None and ts - self.last_present > self.grace_seconds + TIME_EPS:
            self.since = self.last_present = None
        return self.since

    def seconds(self, ts: float) -> float:
        """How long the condition has held as of ``ts`` (0 when it does not)."""
        return 0.0 if self.since is None else max(0.0, ts - self.since)

    def state(self) -> dict[str, object]:
        """``{since, last_present, grace_seconds}`` (times in Unix seconds, None when absent)."""
        return {"since": self.since, "last_present": self.last_present, "grace_seconds": self.grace_seconds}


@dataclass(frozen=True)
class Observation:
    """What a rule saw of its hazard in one frame.

    Attributes:
        started_at: when the hazard began (e.g. when a car came to rest); becomes the incident's
            ``started_at`` and part of its id when the incident opens.
        confidence: best detector confidence behind it.
        boxes: the objects, normalised.
        details: hazard-specific extras for the event.
    """

    started_at: float
    confidence: float
    boxes: tuple[IncidentBox, ...] = ()
    details: dict[str, object] = field(default_factory=dict)


class IncidentLifecycle:
    """One incident at a time for one (camera, zone, hazard), with stable ids.

    Per analysed frame call :meth:`step` with an :class:`Observation` when the hazard is there (and
    ripe: dwell already satisfied) or None when it is not. Presence goes through ``rule.confirm_k`` of
    ``rule.confirm_n`` confirmation. Events:

    * ``opened`` when confirmed present, no incident is open and the cooldown has passed;
    * ``updated`` while present, at most every ``rule.update_interval_seconds`` after the last event;
    * ``cleared`` once not confirmed present for ``rule.clear_seconds``; then no new incident opens
      before ``rule.cooldown_seconds`` have passed.

    Args:
        camera_id: camera id.
        zone_id: zone id, or None for whole-frame hazards (the id then says ``frame``).
        hazard: the hazard.
        rule: the effective rule (thresholds, timings, severity).

    Example:
        >>> from pipeline.config import HazardRule
        >>> lc = IncidentLifecycle("cam1", "z1", Hazard.PARKING,
        ...                        HazardRule(clear_seconds=10, update_interval_seconds=5))
        >>> obs = Observation(started_at=100.0, confidence=0.9)
        >>> [(e.event.value, e.id) for e in [lc.step(100.0, obs)] if e]
        [('opened', 'cam1-z1-parking-100-1')]
        >>> lc.step(102.0, obs) is None, lc.step(105.0, obs).event.value
        (True, 'updated')
        >>> lc.step(110.0, None) is None, lc.step(115.0, None).event.value
        (True, 'cleared')
    """

    def __init__(self, camera_id: str, zone_id: str | None, hazard: Hazard, rule: HazardRule) -> None:
        self.camera_id = camera_id
        self.zone_id = zone_id
        self.hazard = hazard
        self.rule = rule
        self.confirm = KofN(rule.confirm_k, rule.confirm_n)
        self.incident_id: str | None = None
        self.started_at: float | None = None
        self.opened_at: float | None = None
        self.last_event_ts: float | None = None
        self.last_present_ts: float | None = None
        self.last_observation: Observation | None = None
        self.cooldown_until: float = float("-inf")
        self.count = 0
        """Incidents opened so far (the ``n`` of the id)."""
        self.last_step_ts: float | None = None
        """Frame time of the last :meth:`step` (the last frame the rule judged)."""
        self.last_step_observation: Observation | None = None
        """What that step saw, before confirmation: the hazard in that very frame, or None (read by camera
        checks, :mod:`pipeline.camera_check`, the same way for every rule)."""

    @property
    def is_open(self) -> bool:
        return self.incident_id is not None

    def in_cooldown(self, ts: float) -> bool:
        return ts + TIME_EPS < self.cooldown_until

    def state(self) -> dict[str, object]:
        """The lifecycle now, JSON-able: open incident (id, started/opened/last event), confirmation window,
        last present time, cooldown end (None when none) and incidents opened so far."""
        return {
            "incident_id": self.incident_id,
            "started_at": self.started_at,
            "opened_at": self.opened_at,
            "last_event_ts": self.last_event_ts,
            "last_present_ts": self.last_present_ts,
            "cooldown_until": self.cooldown_until if self.cooldown_until != float("-inf") else None,
            "confirm": self.confirm.state(),
            "opened_count": self.count,
        }

    def restore(self, incident_id: str, started_at: float, opened_at: float, ts: float,
                confidence: float = 0.0) -> None:
        """Take over an incident a previous run of the worker left open (see
        :class:`~pipeline.analyze.journal.IncidentJournal`), so a restart neither reopens nor orphans it.

        The rule has to see the hazard ripen again after the restart (a parked car needs its
        ``dwell_seconds`` anew), so the incident counts as present until ``ts + rule.dwell_seconds``:
        confirmed by then, it goes on with ``updated`` events under the same id; not seen again, it is
        ``cleared`` ``rule.clear_seconds`` after that.

        Example:
            >>> from pipeline.config import HazardRule
            >>> lc = IncidentLifecycle("cam1", "z1", Hazard.PARKING, HazardRule(dwell_seconds=20, clear_seconds=10))
            >>> lc.restore("cam1-z1-parking-100-3", 100.0, 101.0, ts=500.0)
            >>> lc.step(525.0, None) is None, lc.step(530.0, None).id
            (True, 'cam1-z1-parking-100-3')
            >>> lc.count
            3
        """
        self.incident_id = incident_id
        self.started_at = float(started_at)
        self.opened_at = float(opened_at)
        self.last_event_ts = float(ts)
        self.last_present_ts = float(ts) + self.rule.dwell_seconds
        self.last_observation = Observation(started_at=float(started_at), confidence=float(confidence))
        tail = incident_id.rsplit("-", 1)[-1]
        # The id's last part is the opened count: the next incident of this rule must not reuse the id.
        self.count = max(self.count, int(tail) if tail.isdigit() else 0)

    def clear_now(self, ts: float, reason: str) -> Incident | None:
        """Clear the open incident at once (e.g. its camera has been down too long); None when none is open.

        The event's details say ``clear_reason``.
        """
        if not self.is_open:
            return None
        obs = self.last_observation or Observation(started_at=self.started_at or ts, confidence=0.0)
        self.last_observation = Observation(obs.started_at, obs.confidence, obs.boxes,
                                            {**obs.details, "clear_reason": reason})
        return self._clear(ts)

    def step(self, ts: float, observation: Observation | None) -> Incident | None:
        """Advance by one analysed frame; returns the event it causes, if any."""
        self.last_step_ts, self.last_step_observation = ts, observation
        present = self.confirm.push(observation is not None)
        if observation is not None:
            self.last_observation = observation
        if present:
            self.last_present_ts = ts
        obs = observation or self.last_observation
        if not self.is_open:
            if present and obs is not None and not self.in_cooldown(ts):
                return self._open(ts, obs)
            return None
        if present and obs is not None:
            since = ts - self.last_event_ts if self.last_event_ts is not None else float("inf")
            if since + TIME_EPS >= self.rule.update_interval_seconds:
                return self._event(IncidentEvent.UPDATED, ts, obs)
            return None
        last = self.last_present_ts if self.last_present_ts is not None else ts
        if ts - last + TIME_EPS >= self.rule.clear_seconds:
            return self._clear(ts)
        return None

    def _open(self, ts: float, obs: Observation) -> Incident:
        self.count += 1
        self.started_at = min(obs.started_at, ts)
        zone = self.zone_id if self.zone_id is not None else "frame"
        self.incident_id = f"{self.camera_id}-{zone}-{self.hazard.value}-{int(self.started_at)}-{self.count}"
        self.opened_at = ts
        return self._event(IncidentEvent.OPENED, ts, obs)

    def _clear(self, ts: float) -> Incident:
        obs = self.last_observation or Observation(started_at=self.started_at or ts, confidence=0.0)
        details = {**obs.details, "duration_seconds": round(ts - (self.started_at or ts), 3)}
        event = self._event(IncidentEvent.CLEARED, ts, Observation(obs.started_at, obs.confidence,
                                                                   obs.boxes, details))
        self.incident_id = self.started_at = self.opened_at = self.last_event_ts = None
        self.last_observation = None
        self.confirm.reset()
        self.cooldown_until = ts + self.rule.cooldown_seconds
        return event

    def _event(self, kind: IncidentEvent, ts: float, obs: Observation) -> Incident:
        assert self.incident_id is not None and self.started_at is not None
        self.last_event_ts = ts
        return Incident(
            id=self.incident_id, event=kind, hazard=self.hazard, camera_id=self.camera_id,
            zone_id=self.zone_id, started_at=self.started_at, ts=ts, confidence=obs.confidence,
            boxes=obs.boxes, severity=self.rule.severity, details=dict(obs.details), frame_ts=ts,
        )
