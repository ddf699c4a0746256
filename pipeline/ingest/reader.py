"""One thread per camera: open the stream with PyAV, buffer packets, decode frames, reconnect.

Each :class:`CameraReader` owns its thread, container and decoder, so a dead or slow camera never
stalls another: PyAV releases the GIL inside FFmpeg's network reads and decoding. Every demuxed
video packet goes into the camera's :class:`~pipeline.ingest.ring.PacketRing` (evidence clips);
decoded frames are handed over through a :class:`~pipeline.ingest.mailbox.LatestFrameMailbox`. What is
decoded and handed over (key frames, every frame, ``decode: auto``) is the
:class:`~pipeline.ingest.decoding.DecodeLoop` half; this module opens, paces, loops and reconnects.

Example:
    >>> from pipeline.config import CameraConfig, WorkerConfig
    >>> cam = CameraConfig(id="cam1", url="clip.mp4", grid="G1", decode="keyframes")
    >>> reader = CameraReader(cam, "clip.mp4", LatestFrameMailbox(), PacketRing(15), WorkerConfig())
    >>> reader.health().state
    'starting'
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from pipeline.config import CameraConfig, WorkerConfig
from pipeline.ingest.abort_clock import ABORT_CLOCK as _ABORT_CLOCK
from pipeline.ingest.decoding import DecodeLoop
from pipeline.ingest.health import CameraHealth, CameraState
from pipeline.ingest.mailbox import LatestFrameMailbox
from pipeline.ingest.ring import PacketRing
from pipeline.ingest.source_faults import SourceError, StillImageError, declared_seconds, still_image_message
from pipeline.redact import redact_url

log = logging.getLogger(__name__)

__all__ = ["CameraReader", "SourceError", "StillImageError", "backoff_delay", "is_network_url"]

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "srt://", "udp://",
                   "tcp://")
# Consecutive failed attempts after a working stream before `reconnecting` turns into `error`.
ERROR_AFTER_FAILURES = 3




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


class CameraReader(DecodeLoop):
    """Reads one camera in its own thread until :meth:`stop`.

    Args:
        camera: the camera's config (decode mode, ``max_fps``, ``analysis_interval``).
        url: resolved stream URL or local file path (file paths are looped and paced at real time).
        mailbox: where decoded frames go (latest wins).
        ring: packet buffer for clips, or None to skip buffering.
        worker: reconnect delays and socket timeout.
        hazard_rates: frames/s each of the camera's hazards needs analysed
            (:func:`~pipeline.ingest.decode_plan.hazard_rates`); ``decode: auto`` follows the highest.
    """

    def __init__(self, camera: CameraConfig, url: str, mailbox: LatestFrameMailbox, ring: PacketRing | None,
                 worker: WorkerConfig | None = None, hazard_rates: Mapping[str, float] | None = None) -> None:
        self.camera = camera
        self.url = url
        self.mailbox = mailbox
        self.ring = ring
        self.worker = worker or WorkerConfig()
        self.hazard_rates = dict(hazard_rates or {})
        self.required_fps = max(self.hazard_rates.values(), default=0.0)
        self.is_file = not is_network_url(url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._health = CameraHealth(camera.id, decode_mode=camera.decode.value, required_fps=self.required_fps)
        self._seq = 0
        self._init_decoding()

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
                still = False
                try:
                    self._session()
                    error = "stream ended"
                except StillImageError as exc:
                    error, still = str(exc), True
                except Exception as exc:  # noqa: BLE001 - any failure must stay in this thread
                    error = _describe(exc)
                if self._stop.is_set():
                    break
                got_frames = not still and self._seq > decoded_before
                ever_streamed = ever_streamed or got_frames
                failures = 1 if got_frames else failures + 1
                state = (CameraState.RECONNECTING if ever_streamed and failures < ERROR_AFTER_FAILURES
                         else CameraState.ERROR)
                self._set(state=state, last_error=error)
                log.warning("camera %s: %s; retry #%d", self.camera.id, error, failures)
                delay = backoff_delay(failures, self.worker.reconnect_min_seconds, self.worker.reconnect_max_seconds)
                if still:  # it will not turn into a video by retrying often
                    delay = max(delay, self.worker.source_error_retry_seconds)
                self._stop.wait(delay)
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
            self._prefetched = self._reject_still_image(container, stream)
            if self.ring is not None:
                self.ring.set_stream(stream)
            try:
                self._decode_loop(container, stream)
            finally:
                if self.ring is not None:
                    self.ring.end_stream()  # the stream dies with the container

    def _packets(self, container: InputContainer, stream: VideoStream, tb: Fraction,
                 frame_dur: int) -> Iterator[tuple[av.Packet[Any], float | None, float]]:
        """Yield (packet, stream seconds, wall ts); loops and paces files at real time."""
        offset = 0  # added to file timestamps on each loop so they keep increasing
        t0_wall: float | None = None
        t0_pts = 0.0
        declared = declared_seconds(container, stream) if self.is_file else None
        while not self._stop.is_set():
            end = offset
            first: int | None = None
            count = 0
            frames_at_start = self._seq
            source, self._prefetched = itertools.chain(self._prefetched, container.demux(stream)), []
            for packet in source:
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
                    first = stamp if first is None else min(first, stamp)
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
            self._drain(stream.codec_context, time.time())  # the last GOP's tail, before seeking away
            if count == 0 or self._seq == frames_at_start:
                raise SourceError("no decodable video frames in file")
            if count == 1 and (declared is None or declared <= 2 * frame_dur * tb):
                raise StillImageError(still_image_message(redact_url(self.url), container, stream))
            if first is not None:
                self._check_pass_length(float((end - first) * tb), declared)
            offset = end
            self._meter.break_run()
            container.seek(0, stream=stream)
            stream.codec_context.flush_buffers()


def _describe(exc: BaseException) -> str:
    # PyAV puts the URL, credentials included, into its errors; this text is logged and published.
    from pipeline.redact import redact_text

    if isinstance(exc, av.FFmpegError):
        text = f"{type(exc).__name__}: {exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact_text(text)
