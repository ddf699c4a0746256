"""One thread per camera: open the stream with PyAV, buffer packets, decode frames, reconnect.

Each :class:`CameraReader` owns its thread, container and decoder, so a dead or slow camera never
stalls another: PyAV releases the GIL inside FFmpeg's network reads and decoding. Every demuxed
video packet goes into the camera's :class:`~pipeline.ingest.ring.PacketRing` (evidence clips);
decoded frames are handed over through a :class:`~pipeline.ingest.mailbox.LatestFrameMailbox`.

Example:
    >>> from pipeline.config import CameraConfig, WorkerConfig
    >>> cam = CameraConfig(id="cam1", url="clip.mp4", grid="G1", decode="keyframes")
    >>> reader = CameraReader(cam, "clip.mp4", LatestFrameMailbox(), PacketRing(15), WorkerConfig())
    >>> reader.health().state
    'starting'
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import av.container.core
from av.container import InputContainer
from av.video.stream import VideoStream

from pipeline.config import CameraConfig, DecodeMode, WorkerConfig
from pipeline.ingest.frame import Frame
from pipeline.ingest.health import CameraHealth, CameraState
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.ring import PacketRing

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "srt://", "udp://",
                   "tcp://")
# Consecutive undecodable packets after which the source counts as corrupt rather than glitchy.
MAX_DECODE_ERRORS = 10
# Consecutive failed attempts after a working stream before `reconnecting` turns into `error`.
ERROR_AFTER_FAILURES = 3


class SourceError(RuntimeError):
    """The source opened but cannot be used (no video stream, nothing decodable)."""


class _AbortClock:
    """Stand-in for the ``time`` module inside ``av.container.core`` that can abort blocked I/O.

    PyAV installs an FFmpeg interrupt callback (polled every ~100 ms during network I/O) that only
    compares ``time.monotonic()`` against the container's open/read timeout; it offers no way to
    interrupt on demand. Returning a far-future time to a thread that asked to stop makes that
    callback fire at once, so :meth:`CameraReader.stop` returns promptly even during a blocked
    read. Other threads see the real clock. If a PyAV upgrade stops looking up ``time`` there,
    nothing breaks: stopping then just waits for the socket timeout.
    """

    def __init__(self, real: ModuleType) -> None:
        self._real = real
        self._aborting: set[int] = set()
        self._bump = 0.0

    def monotonic(self) -> float:
        now: float = self._real.monotonic()
        if self._aborting and threading.get_ident() in self._aborting:
            # Strictly increasing, so even a timeout window started after the abort expires.
            self._bump += 1e6
            return now + 1e9 + self._bump
        return now

    def abort(self, ident: int) -> None:
        self._aborting.add(ident)

    def release(self, ident: int) -> None:
        self._aborting.discard(ident)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _install_abort_clock() -> _AbortClock | None:
    current = getattr(av.container.core, "time", None)
    if isinstance(current, _AbortClock):
        return current
    if isinstance(current, ModuleType) and hasattr(current, "monotonic"):
        clock = _AbortClock(current)
        av.container.core.time = clock  # type: ignore[attr-defined]
        return clock
    return None


_ABORT_CLOCK = _install_abort_clock()


def is_network_url(url: str) -> bool:
    """Whether ``url`` is a network stream (as opposed to a local file looped as a camera)."""
    return url.lower().startswith(NETWORK_SCHEMES)


def backoff_delay(failures: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: ~lo, 2lo, 4lo ... capped at hi, each scaled by 0.75..1.25.

    Jitter keeps many cameras behind one failed switch from reconnecting in lock-step.

    Example:
        >>> backoff_delay(1, 1.0, 30.0, random.Random(0)) <= 1.25
        True
        >>> backoff_delay(20, 1.0, 30.0) <= 30.0
        True
    """
    base = min(hi, lo * 2 ** max(0, failures - 1))
    return float(min(hi, base * (rng or random).uniform(0.75, 1.25)))


class CameraReader:
    """Reads one camera in its own thread until :meth:`stop`.

    Args:
        camera: the camera's config (decode mode, ``max_fps``, ``analysis_interval``).
        url: resolved stream URL or local file path (file paths are looped and paced at real time).
        mailbox: where decoded frames go (latest wins).
        ring: packet buffer for clips, or None to skip buffering.
        worker: reconnect delays and socket timeout.
    """

    def __init__(self, camera: CameraConfig, url: str, mailbox: LatestFrameMailbox, ring: PacketRing | None,
                 worker: WorkerConfig | None = None) -> None:
        self.camera = camera
        self.url = url
        self.mailbox = mailbox
        self.ring = ring
        self.worker = worker or WorkerConfig()
        self.is_file = not is_network_url(url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._health = CameraHealth(camera.id)
        self._seq = 0
        self._last_handover = float("-inf")
        if camera.decode is DecodeMode.INTERVAL:
            self._min_gap = max(1.0 / camera.max_fps, camera.analysis_interval)
        else:
            self._min_gap = camera.analysis_interval

    # -- public API ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._thread is not None:
            raise RuntimeError("reader already started")
        self._thread = threading.Thread(target=self._run, name=f"reader-{self.camera.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the thread to stop, abort any blocked read, and wait up to ``timeout`` seconds."""
        self._stop.set()
        th = self._thread
        if th is not None and th is not threading.current_thread():
            if th.ident is not None and _ABORT_CLOCK is not None and th.is_alive():
                _ABORT_CLOCK.abort(th.ident)
            th.join(timeout)
            if th.ident is not None and _ABORT_CLOCK is not None and not th.is_alive():
                _ABORT_CLOCK.release(th.ident)  # idents are reused by later threads
        self._set(state=CameraState.STOPPED)

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> CameraHealth:
        """A copy of the current health (``frames_dropped`` read from the mailbox)."""
        with self._lock:
            h = CameraHealth(**self._health.to_dict())
        h.frames_dropped = self.mailbox.dropped
        return h

    # -- thread ----------------------------------------------------------------------------------

    def _set(self, **fields: Any) -> None:
        with self._lock:
            if self._health.state == CameraState.STOPPED:
                fields.pop("state", None)  # never leave `stopped` once stop() said so
            for k, v in fields.items():
                setattr(self._health, k, v.value if isinstance(v, CameraState) else v)

    def _run(self) -> None:
        failures = 0
        attempts = 0
        ever_streamed = False
        try:
            while not self._stop.is_set():
                if attempts:
                    self._set(reconnects=self._health.reconnects + 1)
                attempts += 1
                decoded_before = self._seq
                try:
                    self._session()
                    error = "stream ended"
                except Exception as exc:  # noqa: BLE001 - any failure must stay in this thread
                    error = _describe(exc)
                if self._stop.is_set():
                    break
                got_frames = self._seq > decoded_before
                ever_streamed = ever_streamed or got_frames
                failures = 1 if got_frames else failures + 1
                state = (CameraState.RECONNECTING if ever_streamed and failures < ERROR_AFTER_FAILURES
                         else CameraState.ERROR)
                self._set(state=state, last_error=error)
                log.warning("camera %s: %s; retry #%d", self.camera.id, error, failures)
                self._stop.wait(backoff_delay(failures, self.worker.reconnect_min_seconds,
                                              self.worker.reconnect_max_seconds))
        finally:
            if _ABORT_CLOCK is not None:
                _ABORT_CLOCK.release(threading.get_ident())
            self._set(state=CameraState.STOPPED)

    def _open(self) -> InputContainer:
        t = self.worker.open_timeout_seconds
        if self.is_file:
            if not Path(self.url).is_file():
                raise FileNotFoundError(f"no such file: {self.url}")
            return av.open(self.url, "r", timeout=(t, t))
        options = {
            # TCP: no packet loss (smeared frames) and it passes NAT/firewalls; FFmpeg >= 5 calls the
            # RTSP socket timeout `timeout` (microseconds); `stimeout` no longer exists.
            "rtsp_transport": "tcp",
            "timeout": str(int(t * 1_000_000)),
            "rw_timeout": str(int(t * 1_000_000)),
            "fflags": "nobuffer",
        }
        if not self.url.lower().startswith(("rtsp://", "rtsps://")):
            options.pop("rtsp_transport")
        # PyAV's read timeout runs a Python callback under the GIL on every socket read (~2,300/s per
        # 4 Mbps RTSP camera, measured); FFmpeg's own `timeout`/`rw_timeout` above bound stalled reads
        # instead, so only opening uses PyAV's (abortable) timeout. A stop() during a stalled read then
        # returns after its join timeout and the daemon thread exits when the socket timeout fires.
        return av.open(self.url, "r", options=options, timeout=(t, None))

    def _session(self) -> None:
        """One connection: open, then demux/decode until EOF/error (files loop inside)."""
        with self._open() as container:
            if not container.streams.video:
                raise SourceError("no video stream in source")
            stream = container.streams.video[0]
            if self.ring is not None:
                self.ring.set_stream(stream)
            try:
                self._decode_loop(container, stream)
            finally:
                if self.ring is not None:
                    self.ring.end_stream()  # the stream dies with the container

    def _decode_loop(self, container: InputContainer, stream: VideoStream) -> None:
        ctx = stream.codec_context
        # CCTV frames are one slice each, so decoder threads only idle (and cost ~3 threads per camera).
        ctx.thread_count = 1
        keyframes_only = self.camera.decode is DecodeMode.KEYFRAMES
        if keyframes_only:
            # Belt and braces: we only feed key packets, and the decoder skips any other.
            ctx.skip_frame = "NONKEY"
        tb = stream.time_base or Fraction(1, 90000)
        frame_dur = _frame_duration(stream, tb)
        decode_errors = 0
        for packet, pts_s, ts in self._packets(container, stream, tb, frame_dur):
            if self.ring is not None:
                self.ring.push(packet, ts)
            if keyframes_only and not packet.is_keyframe:
                continue
            try:
                frames = ctx.decode(packet)
            except av.FFmpegError as exc:
                decode_errors += 1
                if decode_errors >= MAX_DECODE_ERRORS:
                    raise SourceError(f"{decode_errors} undecodable packets in a row: {exc}") from exc
                continue
            decode_errors = 0
            for frame in frames:
                # The frame's own pts (offset like its packet's): decoders may lag behind packets.
                fpts = float(frame.pts * tb) if frame.pts is not None else pts_s
                self._on_frame(frame, fpts, ts, bool(frame.key_frame))

    def _packets(self, container: InputContainer, stream: VideoStream, tb: Fraction,
                 frame_dur: int) -> Iterator[tuple[av.Packet[Any], float | None, float]]:
        """Yield (packet, stream seconds, wall ts); loops and paces files at real time."""
        offset = 0  # added to file timestamps on each loop so they keep increasing
        t0_wall: float | None = None
        t0_pts = 0.0
        while not self._stop.is_set():
            end = offset
            count = 0
            frames_at_start = self._seq
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                if packet.size == 0:
                    continue
                if packet.pts is None and packet.dts is None and self.is_file:
                    packet.pts = packet.dts = count * frame_dur  # raw streams carry no timestamps
                if offset:
                    if packet.pts is not None:
                        packet.pts += offset
                    if packet.dts is not None:
                        packet.dts += offset
                count += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                pts_s = float(stamp * tb) if stamp is not None else None
                if stamp is not None:
                    end = max(end, stamp + int(packet.duration or frame_dur))
                if self.is_file and pts_s is not None:
                    now = time.monotonic()
                    if t0_wall is None or now - (t0_wall + pts_s - t0_pts) > 1.0:
                        t0_wall, t0_pts = now, pts_s  # (re)anchor; after a stall, don't race to catch up
                    delay = t0_wall + (pts_s - t0_pts) - now
                    if delay > 0 and self._stop.wait(delay):
                        return
                yield packet, pts_s, time.time()
            if not self.is_file:
                return  # the server ended the stream
            if count == 0 or self._seq == frames_at_start:
                raise SourceError("no decodable video frames in file")
            offset = end
            container.seek(0, stream=stream)
            stream.codec_context.flush_buffers()

    def _on_frame(self, frame: av.VideoFrame, pts_s: float | None, ts: float, key: bool) -> None:
        self._seq += 1
        seq = self._seq
        with self._lock:
            self._health.frames_decoded = seq
            self._health.last_frame_ts = ts
            if self._health.state != CameraState.STOPPED:
                self._health.state = CameraState.STREAMING.value
        if self._min_gap > 0 and ts - self._last_handover < self._min_gap:
            return  # throttled: skip the (costly) colour conversion too
        self._last_handover = ts
        image = frame.to_ndarray(format="bgr24")
        self.mailbox.put(Frame(self.camera.id, image, ts=ts, pts=pts_s, seq=seq, keyframe=key))


def _frame_duration(stream: VideoStream, tb: Fraction) -> int:
    rate = stream.average_rate or stream.base_rate or Fraction(25)
    return max(1, round(1 / (Fraction(rate) * tb)))


def _describe(exc: BaseException) -> str:
    # PyAV puts the URL, credentials included, into its errors; this text is logged and published.
    from pipeline.redact import redact_text

    if isinstance(exc, av.FFmpegError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact_text(text)
