"""What a camera reader decodes and hands over: key frames alone, or every frame at a rate.

The mixin :class:`DecodeLoop` is the decoding half of :class:`~pipeline.ingest.reader.CameraReader`
(the other half opens, paces and reconnects). Key-frame decoding drains the decoder after every key
packet, so a decoder that reorders B-frames can never hold a key frame back; ``decode: auto`` picks the
mode per GOP from the measured key-frame interval (:mod:`pipeline.ingest.decode_plan`); interval mode
hands frames over on a schedule in stream time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from pipeline.config import CameraConfig, DecodeMode
from pipeline.ingest.decode_plan import GopMeter, analysis_fps, camera_rate_warnings, effective_mode, handover_fps
from pipeline.ingest.frame import Frame
from pipeline.ingest.health import CameraHealth, CameraState
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.ring import PacketRing
from pipeline.ingest.source_faults import (
    SourceError,
    StillImageError,
    looks_like_image,
    still_image_message,
    truncation_message,
)
from pipeline.redact import redact_text, redact_url

log = logging.getLogger("pipeline.ingest.reader")

# Consecutive undecodable packets after which the source counts as corrupt rather than glitchy.
MAX_DECODE_ERRORS = 10


class DecodeLoop:
    """Decoding, decode-mode planning and frame handover of one camera (a mixin of ``CameraReader``).

    Attributes:
        required_fps: highest analysis rate the camera's hazards need (0: key frames suffice).
    """

    camera: CameraConfig
    url: str
    mailbox: LatestFrameMailbox
    ring: PacketRing | None
    hazard_rates: dict[str, float]
    required_fps: float
    _lock: threading.Lock
    _health: CameraHealth
    _seq: int

    def _init_decoding(self) -> None:
        self._last_handover = float("-inf")
        self._meter = GopMeter()
        self._logged_plan: str | None = None
        self._prefetched: list[av.Packet[Any]] = []
        self._tb = Fraction(1, 90000)
        self._set_mode(effective_mode(self.camera.decode, self.required_fps, None))

    def _set(self, **fields: Any) -> None:
        raise NotImplementedError

    def _packets(self, container: InputContainer, stream: VideoStream, tb: Fraction,
                 frame_dur: int) -> Iterator[tuple[av.Packet[Any], float | None, float]]:
        raise NotImplementedError

    def _reject_still_image(self, container: InputContainer, stream: VideoStream) -> list[av.Packet[Any]]:
        """Raise :class:`StillImageError` for a one-picture source; return the packets read to tell."""
        if not looks_like_image(container, stream):
            return []
        peeked: list[av.Packet[Any]] = []
        for packet in container.demux(stream):
            if packet.size:
                peeked.append(packet)
                if len(peeked) > 1:
                    return peeked  # a picture stream (e.g. MJPEG over HTTP): a video after all
        raise StillImageError(still_image_message(redact_url(self.url), container, stream))

    def _decode_loop(self, container: InputContainer, stream: VideoStream) -> None:
        ctx = stream.codec_context
        # CCTV frames are one slice each, so decoder threads only idle (and cost ~3 threads per camera).
        ctx.thread_count = 1
        tb = stream.time_base or Fraction(1, 90000)
        self._tb = tb
        frame_dur = frame_duration(stream, tb)
        rate = stream.average_rate or stream.guessed_rate
        self._meter = GopMeter(round(float(rate), 3) if rate else None)
        self._set_mode(effective_mode(self.camera.decode, self.required_fps, None), ctx)
        decode_errors = 0
        for packet, pts_s, ts in self._packets(container, stream, tb, frame_dur):
            if self.ring is not None:
                self.ring.push(packet, ts)
            key = bool(packet.is_keyframe)
            self._meter.add(pts_s, key)
            if key:
                self._replan(ctx, ts)
            keyframes_only = self._mode is DecodeMode.KEYFRAMES
            if keyframes_only and not key:
                continue
            try:
                frames = ctx.decode(packet)
                if keyframes_only:
                    # Drain at once: a decoder that reorders B-frames holds a lone key frame back
                    # until later pictures arrive, which keyframe-only decoding never sends.
                    frames += ctx.decode(None)
            except av.FFmpegError as exc:
                decode_errors += 1
                self._count_decode_error(exc, pts_s)
                if decode_errors >= MAX_DECODE_ERRORS:
                    raise SourceError(f"{decode_errors} undecodable packets in a row: {exc}") from exc
                continue
            finally:
                if keyframes_only:
                    ctx.flush_buffers()  # a drained decoder takes packets again only after a flush
            decode_errors = 0
            self._emit(frames, pts_s, ts)
        self._drain(ctx, time.time())  # pictures still held for reordering when the stream ends

    def _emit(self, frames: list[av.VideoFrame], pts_s: float | None, ts: float) -> None:
        for frame in frames:
            # The frame's own pts (offset like its packet's): decoders may lag behind packets.
            fpts = float(frame.pts * self._tb) if frame.pts is not None else pts_s
            self._on_frame(frame, fpts, ts, bool(frame.key_frame))

    def _drain(self, ctx: Any, ts: float) -> None:
        """Emit what a decoder of every frame still holds (B-frame reordering), then reset it."""
        if self._mode is DecodeMode.INTERVAL:
            try:
                self._emit(ctx.decode(None), None, ts)
            except av.FFmpegError as exc:
                self._count_decode_error(exc, None)
        ctx.flush_buffers()

    def _set_mode(self, mode: DecodeMode, ctx: Any = None) -> None:
        self._mode = mode
        # A rate cap is kept on a schedule in stream time: B-frames leave the decoder in bursts, and a
        # plain "at least 1/fps apart" test would round every gap up to the next frame.
        cap = handover_fps(self.camera, mode, self.required_fps)
        self._period = 1.0 / cap if cap else 0.0
        self._next_due: float | None = None
        if ctx is not None:
            # Belt and braces in keyframes mode: only key packets are fed, and the decoder skips others.
            ctx.skip_frame = "NONKEY" if mode is DecodeMode.KEYFRAMES else "DEFAULT"
        self._set(decode_mode_effective=mode.value)

    def _replan(self, ctx: Any, ts: float) -> None:
        """At a key frame: pick the decode mode for the coming GOP from the measured key-frame interval."""
        probe = self._meter.probe()
        mode = effective_mode(self.camera.decode, self.required_fps, probe.keyframe_interval_s)
        if mode is not self._mode:
            self._drain(ctx, ts)  # the previous GOP's held-back pictures belong to the old mode
            self._set_mode(mode, ctx)
        warnings = camera_rate_warnings(self.camera, self.hazard_rates, probe)
        self._set(fps=probe.fps, keyframe_interval_s=probe.keyframe_interval_s,
                  analysis_fps=analysis_fps(self.camera, mode, self.required_fps, probe),
                  rate_warning="; ".join(warnings) or None)
        if probe.keyframe_interval_s is None or self._logged_plan == mode.value:
            return
        first = self._logged_plan is None
        self._logged_plan = mode.value
        log.info("camera %s: %s frames/s, a key frame every %.2f s; decoding %s (%s analysed frames/s, "
                 "hazards need %s)", self.camera.id, probe.fps, probe.keyframe_interval_s, mode.value,
                 self._health.analysis_fps, self.hazard_rates or "key frames only")
        if first:
            for warning in warnings:
                log.warning("%s", warning)

    def _count_decode_error(self, exc: av.FFmpegError, pts_s: float | None) -> None:
        at = f" at {pts_s:.2f} s" if pts_s is not None else ""
        with self._lock:
            self._health.decode_errors += 1
            self._health.last_error = f"undecodable packet{at}: {_error_text(exc)}"
            first = self._health.decode_errors == 1
        if first:
            log.warning("camera %s: undecodable packet%s: %s", self.camera.id, at, _error_text(exc))

    def _check_pass_length(self, span_s: float, declared_s: float | None) -> None:
        message = truncation_message(span_s, declared_s)
        if message is None:
            return
        with self._lock:
            self._health.truncated_loops += 1
            self._health.last_error = message
            first = self._health.truncated_loops == 1
        if first:
            log.warning("camera %s: %s", self.camera.id, message)

    def _on_frame(self, frame: av.VideoFrame, pts_s: float | None, ts: float, key: bool) -> None:
        self._seq += 1
        seq = self._seq
        with self._lock:
            self._health.frames_decoded = seq
            self._health.last_frame_ts = ts
            if self._health.state != CameraState.STOPPED:
                self._health.state = CameraState.STREAMING.value
        if not self._due(pts_s, ts):
            return  # throttled: skip the (costly) colour conversion too
        self._last_handover = ts
        image = frame.to_ndarray(format="bgr24")
        self.mailbox.put(Frame(self.camera.id, image, ts=ts, pts=pts_s, seq=seq, keyframe=key))

    def _due(self, pts_s: float | None, ts: float) -> bool:
        """Whether a decoded frame goes to analysis (``analysis_interval`` and the mode's rate cap)."""
        gap = self.camera.analysis_interval
        if gap > 0 and ts - self._last_handover < gap:
            return False
        period = self._period
        if period <= 0:
            return True
        t = pts_s if pts_s is not None else ts
        due = self._next_due
        if due is None or t < due - 2 * period or t >= due + period:
            self._next_due = t + period  # first frame, a jump back (new session) or a hole: restart
            return True
        if t < due:
            return False
        self._next_due = due + period  # keep the cadence: the average rate is exactly 1/period
        return True


def frame_duration(stream: VideoStream, tb: Fraction) -> int:
    rate = stream.average_rate or stream.base_rate or Fraction(25)
    return max(1, round(1 / (Fraction(rate) * tb)))


def _error_text(exc: av.FFmpegError) -> str:
    return redact_text(f"{type(exc).__name__}: {exc.strerror or exc}")
