"""Which frames a camera must decode for its hazards, what its stream gives, and warnings when it cannot.

A hazard rule may need a minimum analysis rate (``hazards.<h>.min_analysis_fps``: fire 2/s); parking,
clutter and posters need only key frames. The GOP (key-frame interval) and frame rate are measured from
the stream's packets (:class:`GopMeter`, :func:`probe_file`), so ``decode: auto`` picks key frames while
they come often enough and decodes every frame otherwise, and :func:`camera_rate_warnings` says when an
explicit mode cannot give a hazard the rate it needs (``gridwatch check-config``, worker start-up log,
camera health).

Example:
    >>> from pipeline.config import CameraConfig, DecodeMode
    >>> effective_mode(DecodeMode.AUTO, required_fps=2.0, keyframe_interval_s=3.0).value
    'interval'
    >>> effective_mode(DecodeMode.AUTO, required_fps=0.0, keyframe_interval_s=3.0).value
    'keyframes'
    >>> cam = CameraConfig(id="c", url="a.mp4", grid="G1", decode="keyframes")
    >>> camera_rate_warnings(cam, {"fire": 2.0}, StreamProbe(fps=25.0, keyframe_interval_s=3.0))[0][:40]
    'camera c: `decode: keyframes` analyses 0'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import av

from pipeline.analyze.incident import Hazard
from pipeline.config import CameraConfig, DecodeMode, HazardRule, SiteConfig
from pipeline.sources import is_stream_url, resolve_source

# Key frames at 1.9/s meet a 2/s need: timestamps jitter and encoders round GOPs.
RATE_TOLERANCE = 0.95
# Key-frame gaps remembered; the longest decides, so one short GOP (a loop point, a scene cut) does not
# switch a fire camera to key frames only.
RECENT_GOPS = 4


@dataclass(frozen=True, slots=True)
class StreamProbe:
    """What a stream's packets say about its timing.

    Attributes:
        fps: frames per second (packets per key-frame interval, else the container's rate), or None.
        keyframe_interval_s: longest of the recent key-frame intervals in stream seconds, or None
            before two key frames were seen.
    """

    fps: float | None
    keyframe_interval_s: float | None

    @property
    def keyframe_fps(self) -> float | None:
        """Key frames per second, or None while unknown."""
        if not self.keyframe_interval_s:
            return None
        return 1.0 / self.keyframe_interval_s


class GopMeter:
    """Measures the key-frame interval and frame rate from packets in demux order.

    Example:
        >>> m = GopMeter()
        >>> for i in range(60):
        ...     m.add(i / 25, i % 25 == 0)
        >>> m.probe()
        StreamProbe(fps=25.0, keyframe_interval_s=1.0)
    """

    def __init__(self, fallback_fps: float | None = None) -> None:
        self.fallback_fps = fallback_fps
        self._last_key: float | None = None
        self._since_key = 0
        self._gaps: deque[tuple[float, int]] = deque(maxlen=RECENT_GOPS)

    def add(self, pts_s: float | None, key: bool) -> None:
        """Count one packet (``pts_s`` in stream seconds, None when it has no timestamp)."""
        if key and pts_s is not None:
            if self._last_key is not None and pts_s > self._last_key:
                self._gaps.append((pts_s - self._last_key, self._since_key))
            self._last_key = pts_s
            self._since_key = 0
        self._since_key += 1

    def break_run(self) -> None:
        """Forget the last key frame (a file loops: the gap across the loop point is no GOP)."""
        self._last_key = None
        self._since_key = 0

    def probe(self) -> StreamProbe:
        """The measurement so far."""
        if not self._gaps:
            return StreamProbe(self.fallback_fps, None)
        seconds = sum(g for g, _ in self._gaps)
        frames = sum(n for _, n in self._gaps)
        return StreamProbe(round(frames / seconds, 3), round(max(g for g, _ in self._gaps), 3))


def hazard_rates(rules: Mapping[Hazard, HazardRule], camera: CameraConfig) -> dict[str, float]:
    """Analysis rate (frames/s) each enabled hazard of ``camera`` needs, for those that need one."""
    out: dict[str, float] = {}
    for hazard in sorted(camera.used_hazards()):
        rule = rules.get(hazard)
        if rule is not None and rule.enabled and rule.min_analysis_fps > 0:
            out[str(hazard)] = rule.min_analysis_fps
    return out


def effective_mode(mode: DecodeMode, required_fps: float, keyframe_interval_s: float | None) -> DecodeMode:
    """The mode a reader decodes in: ``auto`` resolves to key frames only while they are frequent enough."""
    if mode is not DecodeMode.AUTO:
        return mode
    if required_fps <= 0:
        return DecodeMode.KEYFRAMES
    if keyframe_interval_s is None:
        return DecodeMode.INTERVAL  # unknown GOP: decode all until measured, never miss the first seconds
    return (DecodeMode.KEYFRAMES if 1.0 / keyframe_interval_s >= required_fps * RATE_TOLERANCE
            else DecodeMode.INTERVAL)


def interval_fps(camera: CameraConfig, required_fps: float) -> float:
    """Frames/s handed to analysis while decoding every frame: ``max_fps``, raised to the need in ``auto``."""
    if camera.decode is DecodeMode.INTERVAL:
        return camera.max_fps
    return max(camera.max_fps, required_fps)


def handover_fps(camera: CameraConfig, effective: DecodeMode, required_fps: float) -> float | None:
    """The rate cap of frames handed to analysis, or None for one frame per key frame.

    ``interval`` and ``auto`` cap at :func:`interval_fps`, in ``auto`` also while decoding key frames
    (an intra-only stream, e.g. MJPEG, has nothing but key frames); explicit ``keyframes`` hands over
    every key frame.
    """
    if effective is DecodeMode.INTERVAL or camera.decode is DecodeMode.AUTO:
        return interval_fps(camera, required_fps)
    return None


def analysis_fps(camera: CameraConfig, effective: DecodeMode, required_fps: float,
                 probe: StreamProbe) -> float | None:
    """Frames per second the camera's analysis gets in ``effective`` mode, or None while unknown."""
    caps = [1.0 / camera.analysis_interval] if camera.analysis_interval > 0 else []
    cap = handover_fps(camera, effective, required_fps)
    if cap is not None:
        caps.append(cap)
    source = probe.keyframe_fps if effective is DecodeMode.KEYFRAMES else probe.fps
    if source is not None:
        caps.append(source)
    elif effective is DecodeMode.KEYFRAMES:
        return None
    return round(min(caps), 3) if caps else None


def camera_rate_warnings(camera: CameraConfig, rates: Mapping[str, float],
                         probe: StreamProbe | None = None) -> list[str]:
    """Why ``camera`` cannot give each hazard in ``rates`` its frames/s (empty when it can).

    Args:
        camera: the camera's config.
        rates: hazard -> frames/s it needs (:func:`hazard_rates`).
        probe: the stream's measured timing, or None when the stream was not read.
    """
    probe = probe or StreamProbe(None, None)
    out: list[str] = []
    for hazard, need in rates.items():
        low = need * RATE_TOLERANCE
        where = f"camera {camera.id}: "
        if camera.decode is DecodeMode.KEYFRAMES:
            kf = probe.keyframe_fps
            if kf is None:
                out.append(f"{where}`decode: keyframes` analyses one frame per key frame; {hazard} needs "
                           f"{need:g} frames/s, i.e. a key frame every {1 / need:.2f} s or less. "
                           "Use `decode: auto` (or `interval`)")
            elif kf < low:
                out.append(f"{where}`decode: keyframes` analyses {kf:.2f} frames/s (a key frame every "
                           f"{probe.keyframe_interval_s:.2f} s), but {hazard} needs {need:g} frames/s. "
                           "Use `decode: auto` (or `interval`)")
        elif camera.decode is DecodeMode.INTERVAL and camera.max_fps < low:
            out.append(f"{where}max_fps {camera.max_fps:g} is below the {need:g} frames/s {hazard} needs")
        if camera.analysis_interval > 0 and 1.0 / camera.analysis_interval < low:
            out.append(f"{where}analysis_interval {camera.analysis_interval:g} s allows "
                       f"{1 / camera.analysis_interval:.2f} frames/s, but {hazard} needs {need:g}")
        if probe.fps is not None and probe.fps < low:
            out.append(f"{where}the stream itself has only {probe.fps:.2f} frames/s; {hazard} needs {need:g}")
    return out


def rule_rate_warnings(rules: Mapping[Hazard, HazardRule]) -> list[str]:
    """Hazard rules whose own ``analysis_interval_seconds`` defeats their ``min_analysis_fps``."""
    out = []
    for hazard, rule in rules.items():
        every = rule.analysis_interval_seconds
        if rule.enabled and rule.min_analysis_fps > 0 and every > 0 and 1 / every < rule.min_analysis_fps:
            out.append(f"hazards.{hazard}: analysis_interval_seconds {every:g} judges it at most "
                       f"{1 / every:.2f} times/s, below its min_analysis_fps {rule.min_analysis_fps:g}")
    return out


def probe_file(path: str | Path, max_seconds: float = 60.0, gops: int = 3) -> StreamProbe:
    """Measure a video file's frame rate and key-frame interval from its first packets (no decoding).

    Reads until ``gops`` key-frame intervals were seen or ``max_seconds`` of stream time passed.

    Raises:
        av.FFmpegError: the file cannot be opened; ValueError: it has no video stream.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        meter = GopMeter(round(float(rate), 3) if rate else None)
        tb = stream.time_base
        keys = 0
        first: float | None = None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            pts_s = float(stamp * tb) if stamp is not None and tb is not None else None
            meter.add(pts_s, bool(packet.is_keyframe))
            keys += bool(packet.is_keyframe)
            if pts_s is not None:
                first = pts_s if first is None else first
                if keys > gops or pts_s - first > max_seconds:
                    break
        return meter.probe()


def site_rate_warnings(site: SiteConfig, probe_files: bool = True) -> list[str]:
    """Every rate warning of a site: its rules, and each enabled camera (local files probed).

    Args:
        site: the validated site (``base_dir`` set, so relative file paths resolve).
        probe_files: read each readable local video file's first packets for its GOP and frame rate
            (network streams are judged by their config alone).
    """
    out = rule_rate_warnings(site.hazards)
    for camera in site.cameras:
        rates = hazard_rates(site.hazards, camera)
        if not camera.enabled or not rates:
            continue
        probe = None
        if probe_files and not is_stream_url(camera.url):
            path = Path(resolve_source(site, camera.url))
            if path.is_file():
                try:
                    probe = probe_file(path)
                except (av.FFmpegError, ValueError, OSError):
                    probe = None  # an unreadable file is reported as a source problem, not here
        out += camera_rate_warnings(camera, rates, probe)
    return out
