"""Replay a video file through one camera's live analysis path, as fast as the CPU allows.

The file is decoded by the live :class:`~pipeline.ingest.reader.CameraReader` decode loop (same decode
mode, key-frame handling, ``max_fps`` / ``analysis_interval`` throttling) but unpaced, and every frame is
stamped ``start_ts + (pts - first pts)``: the rules see stream time, never the wall clock. Each handed-over
frame goes through the worker's request splitting (:func:`~pipeline.detect_requests.detect_requests`) and
:meth:`CameraAnalyzer.analyze`, exactly as live; nothing is dropped for being slow.

Each analysed frame yields a :class:`FrameRecord` (detections per class, every rule's state, incident
events); the run ends with a :class:`ReplaySummary`. ``gridwatch replay`` prints them (see docs/replay.md).

Example:
    >>> from pipeline.config import load_config
    >>> site = load_config("configs/demo.yaml")  # doctest: +SKIP
    >>> summary = Replay(site, site.camera("lot-1")).run("var/demo/car-parks.mp4", start_ts=1.8e9)  # doctest: +SKIP
    >>> [(i.hazard, round(i.opened_t)) for i in summary.incidents]  # doctest: +SKIP
    [('parking', 36)]
"""

from __future__ import annotations

import inspect
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Incident, IncidentEvent
from pipeline.config import CameraConfig, DecodeMode, SiteConfig
from pipeline.detect.detections import Detections
from pipeline.detect.registry import DetectorRegistry
from pipeline.detect_requests import detect_requests
from pipeline.ingest.frame import Frame
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.reader import CameraReader, SourceError


@dataclass
class FrameRecord:
    """One analysed frame.

    Attributes:
        t: seconds since the clip start (``ts - start_ts``).
        frame: the frame (``ts`` = start_ts + stream time).
        detections: the detector outputs the rules saw, by detector name.
        rules: :meth:`CameraAnalyzer.rule_states` after the frame (hazard, zone, rule, state).
        incidents: incident events this frame caused.
    """

    t: float
    frame: Frame
    detections: dict[str, Detections]
    rules: list[dict[str, Any]]
    incidents: list[Incident]

    def detection_summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{detector: {class: {"n": count, "max": best score}}}``."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for name, det in self.detections.items():
            per: dict[str, dict[str, float]] = {}
            for cid, conf in zip(det.class_id.tolist(), det.confidence.tolist(), strict=True):
                label = str(det.class_names.get(int(cid), cid))
                cur = per.setdefault(label, {"n": 0, "max": 0.0})
                cur["n"] += 1
                cur["max"] = max(cur["max"], round(float(conf), 3))
            out[name] = per
        return out


@dataclass
class IncidentSpan:
    """One incident from open to clear (times in seconds since the clip start).

    Attributes:
        id: incident id.
        hazard: hazard value.
        zone: zone id, or None (whole frame).
        started_t: when the hazard began, per the rule (``Incident.started_at``).
        opened_t: when it opened (the alert time).
        cleared_t: when it cleared, or None if still open at the end of the clip.
        updates: ``updated`` events in between.
        confidence: best confidence at open.
    """

    id: str
    hazard: str
    zone: str | None
    started_t: float
    opened_t: float
    cleared_t: float | None = None
    updates: int = 0
    confidence: float = 0.0


@dataclass
class ReplaySummary:
    """A whole replay.

    Attributes:
        video: the file.
        camera_id: the camera replayed.
        start_ts: Unix time of the clip start.
        duration_s: stream time covered by the analysed frames (last analysed ``t``).
        frames_decoded: frames the decoder produced.
        frames_analysed: frames analysed (after the mode's throttling).
        wall_s: wall-clock seconds the replay took.
        incidents: every incident, in opening order.
        events: every incident event, in order.
        width: frame width. height: frame height.
    """

    video: str
    camera_id: str
    start_ts: float
    duration_s: float = 0.0
    frames_decoded: int = 0
    frames_analysed: int = 0
    wall_s: float = 0.0
    incidents: list[IncidentSpan] = field(default_factory=list)
    events: list[Incident] = field(default_factory=list)
    width: int = 0
    height: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (events left out; they appear as their own records)."""
        return {"video": self.video, "camera": self.camera_id, "start_ts": self.start_ts,
                "duration_s": round(self.duration_s, 3), "frames_decoded": self.frames_decoded,
                "frames_analysed": self.frames_analysed, "wall_s": round(self.wall_s, 3),
                "analysed_fps_wall": round(self.frames_analysed / self.wall_s, 2) if self.wall_s else None,
                "width": self.width, "height": self.height,
                "incidents": [vars(s) for s in self.incidents]}


class _CallbackMailbox(LatestFrameMailbox):
    """Hands every frame straight to a callback (replay analyses each one; nothing is replaced)."""

    def __init__(self, on_frame: Callable[[Frame], None]) -> None:
        super().__init__()
        self._on_frame = on_frame

    def put(self, frame: Frame) -> None:
        self._on_frame(frame)


class _ReplayReader(CameraReader):
    """The live reader's decode loop over one pass of a file, unpaced, stamped from the stream pts."""

    def __init__(self, camera: CameraConfig, path: str, on_frame: Callable[[Frame], None],
                 start_ts: float, rates: dict[str, float] | None = None) -> None:
        # The live reader takes the hazards' analysis rates (decode: auto follows them); older ones did not.
        extra: dict[str, Any] = {"hazard_rates": rates} if rates is not None else {}
        super().__init__(camera, path, _CallbackMailbox(on_frame), None, **extra)
        self.start_ts = float(start_ts)
        self.first_pts: float | None = None
        self.duration_s: float | None = None

    def stamp(self, pts_s: float | None) -> float:
        """Unix time of stream time ``pts_s`` (the first pts seen is the clip start)."""
        if pts_s is None:
            return self.start_ts
        if self.first_pts is None:
            self.first_pts = pts_s
        return self.start_ts + (pts_s - self.first_pts)

    def _packets(self, container: InputContainer, stream: VideoStream, tb: Fraction,
                 frame_dur: int) -> Iterator[tuple[av.Packet[Any], float | None, float]]:
        if stream.start_time is not None and self.first_pts is None:
            self.first_pts = float(stream.start_time * tb)
        if stream.duration is not None:
            self.duration_s = float(stream.duration * tb)
        elif container.duration is not None:
            self.duration_s = container.duration / 1_000_000
        count = 0
        # Packets the live reader already read to tell a still image from a video come first.
        source = itertools.chain(getattr(self, "_prefetched", None) or [], container.demux(stream))
        self._prefetched = []
        for packet in source:
            if self._stop.is_set():
                return
            if packet.size == 0:
                continue
            if packet.pts is None and packet.dts is None:
                packet.pts = packet.dts = count * frame_dur  # raw streams carry no timestamps
            count += 1
            stamp = packet.pts if packet.pts is not None else packet.dts
            pts_s = float(stamp * tb) if stamp is not None else None
            yield packet, pts_s, self.stamp(pts_s)
        if count == 0 or self._seq == 0:
            raise SourceError("no decodable video frames in file")

    def _on_frame(self, frame: av.VideoFrame, pts_s: float | None, ts: float, key: bool) -> None:
        # The frame's own pts (decoders may lag behind packets) sets its time, as a camera's clock would.
        super()._on_frame(frame, pts_s, self.stamp(pts_s), key)


def live_hazard_rates(site: SiteConfig, camera: CameraConfig) -> dict[str, float] | None:
    """The per-hazard analysis rates the worker hands a camera's reader, where the reader takes them."""
    if "hazard_rates" not in inspect.signature(CameraReader.__init__).parameters:
        return None
    from pipeline.ingest import decode_plan

    rates: dict[str, float] = decode_plan.hazard_rates(site.hazards, camera)
    return rates


def with_fps(camera: CameraConfig, fps: float | None) -> CameraConfig:
    """``camera`` decoding every frame and analysing at most ``fps`` frames/s (None: unchanged)."""
    if fps is None:
        return camera
    return camera.model_copy(update={"decode": DecodeMode.INTERVAL, "max_fps": float(fps)})


def file_start_ts(path: str | Path) -> float:
    """Default clip start: the file's modification time (a real Unix time, like a camera's clock)."""
    return float(Path(path).stat().st_mtime)


class Replay:
    """One camera's analysis over a file.

    Args:
        site: the site config (rules, detectors).
        camera: the camera (zones, hazards, decode mode); its ``url`` is not used.
        registry: detectors (default: a new :class:`DetectorRegistry` of ``site``).
    """

    def __init__(self, site: SiteConfig, camera: CameraConfig, registry: DetectorRegistry | None = None) -> None:
        self.site = site
        self.camera = camera
        self.registry = registry or DetectorRegistry(site)
        self.analyzer = CameraAnalyzer(site, camera)

    def rule_states(self) -> list[dict[str, Any]]:
        """The analyzer's rule states (``CameraAnalyzer.rule_states``, or a minimal stand-in without it)."""
        states = getattr(self.analyzer, "rule_states", None)
        if callable(states):
            return list(states())
        out = []
        for r in self.analyzer.rules:
            state_of = getattr(r, "state", None)
            out.append({"hazard": r.hazard.value, "zone": r.zone_id, "rule": type(r).__name__,
                        "state": state_of() if callable(state_of) else {}})
        return out

    def run(self, video: str | Path, start_ts: float | None = None,
            on_frame: Callable[[FrameRecord], None] | None = None,
            on_duration: Callable[[float | None], None] | None = None) -> ReplaySummary:
        """Replay ``video``; calls ``on_frame`` per analysed frame; returns the summary.

        Args:
            video: a video file.
            start_ts: Unix time of the clip start (default: the file's mtime).
            on_frame: called with each :class:`FrameRecord`, in order.
            on_duration: called once with the stream's duration in seconds (None if unknown), before
                the first frame.

        Raises:
            FileNotFoundError: no such file.
            SourceError / av.FFmpegError: not a decodable video.
        """
        path = str(video)
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
        t0 = file_start_ts(path) if start_ts is None else float(start_ts)
        summary = ReplaySummary(path, self.camera.id, t0)
        spans: dict[str, IncidentSpan] = {}
        last_ts = -math.inf
        reported = False

        def analyse(frame: Frame) -> None:
            nonlocal last_ts, reported
            if not reported and on_duration is not None:
                on_duration(reader.duration_s)
                reported = True
            # The worker's own gate: at most one analysed frame per camera.analysis_interval.
            if frame.ts - last_ts < self.camera.analysis_interval:
                return
            last_ts = frame.ts
            requests = self.analyzer.frame_requests(frame)  # the worker's requests, motion gate included
            found, _ = detect_requests(self.registry, frame.image, requests)
            incidents = self.analyzer.analyze(frame, found)
            if self.analyzer.motion_gate is not None:  # the rules saw the carried detections too
                found = {**self.analyzer.motion_gate.last_carried, **found}
            summary.frames_analysed += 1
            summary.width, summary.height = frame.width, frame.height
            t = frame.ts - t0
            summary.duration_s = max(summary.duration_s, t)
            for inc in incidents:
                summary.events.append(inc)
                _track(spans, summary, inc, t0)
            if on_frame is not None:
                on_frame(FrameRecord(t, frame, found, self.rule_states(), incidents))

        reader = _ReplayReader(self.camera, path, analyse, t0, live_hazard_rates(self.site, self.camera))
        started = time.perf_counter()
        reader._session()
        summary.wall_s = time.perf_counter() - started
        summary.frames_decoded = reader._seq
        return summary


def _track(spans: dict[str, IncidentSpan], summary: ReplaySummary, inc: Incident, t0: float) -> None:
    if inc.event is IncidentEvent.OPENED:
        span = IncidentSpan(inc.id, inc.hazard.value, inc.zone_id, round(inc.started_at - t0, 3),
                            round(inc.ts - t0, 3), confidence=round(float(inc.confidence), 3))
        spans[inc.id] = span
        summary.incidents.append(span)
        return
    span_of = spans.get(inc.id)
    if span_of is None:
        return
    if inc.event is IncidentEvent.UPDATED:
        span_of.updates += 1
    else:
        span_of.cleared_t = round(inc.ts - t0, 3)
