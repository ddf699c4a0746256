"""A ring of the last seconds of compressed video packets, for evidence clips without re-encoding.

The reader pushes every demuxed packet of the camera's video stream (a copy of its bytes plus
timestamps); the alert stage later calls :meth:`PacketRing.write_clip` to remux the packets around an
incident into an MP4. Keeping compressed packets costs ~1 MB per 10 s of a typical 2 Mbit/s stream,
two orders of magnitude less than decoded frames, and remuxing is cheap.

Writing an MP4 stream needs the codec parameters (size, SPS/PPS ``extradata``...). PyAV only copies
them from a live :class:`av.stream.Stream`, and the input stream dies with its (network) container,
so :meth:`PacketRing.set_stream` captures the parameters once per connection by muxing the first key
frame into a tiny in-memory Matroska file; its stream is the template of every clip.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer
from av.video.stream import VideoStream

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RingPacket:
    """A copied compressed packet.

    Attributes:
        data: the packet payload (AVCC or Annex B, as the demuxer produced it).
        pts: presentation time in ``time_base`` units, or None.
        dts: decoding time in ``time_base`` units, or None.
        duration: duration in ``time_base`` units (0 when unknown).
        is_keyframe: whether decoding can start at this packet.
        ts: wall-clock Unix time when the packet was received.
    """

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    is_keyframe: bool
    ts: float


@dataclass(frozen=True, slots=True)
class _Params:
    """What identifies one set of codec parameters; a change means old packets cannot be muxed."""

    codec: str
    width: int
    height: int
    extradata: bytes
    time_base: Fraction


class PacketRing:
    """Thread-safe buffer of the last ``max_seconds`` of one camera's compressed video.

    The buffer always starts at a key frame, so any clip cut from it decodes from its first packet;
    it may hold up to one GOP more than ``max_seconds`` for that reason.

    Args:
        max_seconds: how much wall-clock history to keep.

    Example:
        >>> ring = PacketRing(10)
        >>> ring.write_clip("/tmp/none.mp4", 0, 1) is None  # nothing buffered yet
        True
    """

    def __init__(self, max_seconds: float) -> None:
        if max_seconds <= 0:
            raise ValueError("max_seconds must be > 0")
        self.max_seconds = float(max_seconds)
        self._lock = threading.Lock()
        self._packets: deque[RingPacket] = deque()
        self._params: _Params | None = None
        self._template: InputContainer | None = None
        self._pending_stream: VideoStream | None = None

    # -- feeding ---------------------------------------------------------------------------------

    def set_stream(self, stream: VideoStream) -> None:
        """Announce the (new) input stream whose packets follow; call on every (re)connect.

        Packets buffered under different codec parameters are discarded, since one MP4 track cannot
        mix them. The clip template is captured from the next key packet passed to :meth:`push`, so
        push packets only while the stream's container is open, and call :meth:`end_stream` before
        closing it (PyAV streams must not be touched after their container is closed).
        """
        ctx = stream.codec_context
        params = _Params(ctx.name, ctx.width, ctx.height, bytes(ctx.extradata or b""),
                         Fraction(stream.time_base or Fraction(1, 90000)))
        with self._lock:
            if params != self._params:
                self._packets.clear()
                self._close_template()
            self._params = params
            self._pending_stream = stream

    def end_stream(self) -> None:
        """Forget the live stream given to :meth:`set_stream` (call before closing its container)."""
        with self._lock:
            self._pending_stream = None

    @property
    def time_base(self) -> Fraction | None:
        """Time base of the buffered packets' pts/dts, or None before :meth:`set_stream`."""
        with self._lock:
            return self._params.time_base if self._params else None

    def push(self, packet: av.Packet[Any], ts: float) -> None:
        """Copy ``packet`` (of the stream given to :meth:`set_stream`) into the ring.

        Args:
            packet: a demuxed video packet; empty flush packets are ignored.
            ts: wall-clock receive time (Unix seconds).
        """
        if packet.size == 0:
            return
        rp = RingPacket(bytes(packet), packet.pts, packet.dts, int(packet.duration or 0),
                        bool(packet.is_keyframe), ts)
        with self._lock:
            if self._params is None:
                return
            if self._pending_stream is not None and rp.is_keyframe:
                self._capture_template(self._pending_stream, rp)
                self._pending_stream = None
            last = self._packets[-1] if self._packets else None
            if last is not None and rp.pts is not None and (rp.pts, rp.dts) == (last.pts, last.dts):
                # One access unit split over packets (RTSP sends SPS/PPS apart from the IDR slice):
                # an MP4 sample must hold the whole picture, so join them (valid for Annex B and AVCC).
                self._packets[-1] = RingPacket(last.data + rp.data, last.pts, last.dts,
                                               max(last.duration, rp.duration),
                                               last.is_keyframe or rp.is_keyframe, last.ts)
                return
            if last is not None and _order(rp) is not None and _order(last) is not None \
                    and _order(rp) < _order(last):  # type: ignore[operator]
                # Timestamps went back (source restarted): old packets cannot precede these in a file.
                self._packets.clear()
            if not self._packets and not rp.is_keyframe:
                return  # a clip must start with a key frame
            self._packets.append(rp)
            self._trim(ts)

    def clear(self) -> None:
        """Drop all buffered packets (codec parameters are kept)."""
        with self._lock:
            self._packets.clear()

    def _trim(self, now: float) -> None:
        cutoff = now - self.max_seconds
        # Find the newest key frame at or before the cutoff; everything before it can go.
        drop = 0
        for i, p in enumerate(self._packets):
            if p.ts > cutoff:
                break
            if p.is_keyframe:
                drop = i
        for _ in range(drop):
            self._packets.popleft()

    def _capture_template(self, stream: VideoStream, first_key: RingPacket) -> None:
        self._close_template()
        try:
            buf = io.BytesIO()
            with av.open(buf, "w", format="matroska") as out:
                ost = out.add_stream_from_template(stream)
                pkt = av.Packet(first_key.data)
                pkt.pts = pkt.dts = 0
                pkt.time_base = stream.time_base or Fraction(1, 90000)
                pkt.is_keyframe = True
                pkt.stream = ost
                out.mux(pkt)
            buf.seek(0)
            self._template = av.open(buf, "r", format="matroska")
        except (av.FFmpegError, ValueError) as exc:
            log.warning("cannot capture clip template: %s", exc)
            self._template = None

    def _close_template(self) -> None:
        if self._template is not None:
            self._template.close()
            self._template = None

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return len(self._packets)

    def packets(self) -> list[RingPacket]:
        """A copy of the buffered packets, oldest first."""
        with self._lock:
            return list(self._packets)

    def span(self) -> tuple[float, float] | None:
        """Wall-clock (first, last) receive times of the buffered packets, or None when empty."""
        with self._lock:
            if not self._packets:
                return None
            return self._packets[0].ts, self._packets[-1].ts

    def select(self, start_ts: float, end_ts: float) -> list[RingPacket]:
        """Packets received in [start_ts, end_ts], extended back to the key frame at/before start_ts."""
        with self._lock:
            pkts = list(self._packets)
        first = None
        for i, p in enumerate(pkts):
            if p.ts > start_ts:
                break
            if p.is_keyframe:
                first = i
        if first is None:
            first = next((i for i, p in enumerate(pkts) if p.is_keyframe and p.ts <= end_ts), None)
        if first is None or not any(start_ts <= p.ts <= end_ts for p in pkts[first:]):
            return []  # nothing was received in the range itself
        return [p for p in pkts[first:] if p.ts <= end_ts]

    def write_clip(self, path: str | Path, start_ts: float, end_ts: float) -> Path | None:
        """Remux the packets of [start_ts, end_ts] (wall clock) into an MP4, without re-encoding.

        The clip begins at the key frame at or before ``start_ts`` and its timestamps are rebased to
        start at 0. H.264 whose container had no extradata (some RTSP cameras) still plays because
        every key frame then carries SPS/PPS in-band, which the decoder picks up.

        Args:
            path: output file; parent folders are created.
            start_ts: wall-clock start (Unix seconds).
            end_ts: wall-clock end (Unix seconds).

        Returns:
            The path written, or None when no packets fall in the range (or the ring has no stream).
        """
        pkts = self.select(start_ts, end_ts)
        with self._lock:
            template, params = self._template, self._params
            if not pkts or template is None or params is None:
                return None
            # Muxing under the lock keeps the template container from being closed underneath us
            # by a concurrent set_stream(); clips are small, so the hold is short.
            return self._mux(Path(path), pkts, template, params)

    @staticmethod
    def _mux(path: Path, pkts: list[RingPacket], template: InputContainer, params: _Params) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        first = pkts[0]
        base = min(v for v in (first.pts, first.dts, 0 if first.pts is None and first.dts is None else None)
                   if v is not None)
        tb = params.time_base
        tmp = path.with_name(path.name + ".part")
        # A default duration lets packets without timestamps (raw H.264 demuxers) be laid out evenly.
        default_dur = next((p.duration for p in pkts if p.duration > 0), 1)
        with av.open(str(tmp), "w", format="mp4") as out:
            ost = out.add_stream_from_template(template.streams.video[0])
            # The template went through Matroska, which stores extradata as avcC; put back the
            # source's own bytes so their framing (Annex B vs length-prefixed) matches the packets'.
            # Empty extradata makes the MP4 muxer build avcC from the first key frame's in-band SPS/PPS.
            ost.codec_context.extradata = params.extradata or None
            ost.time_base = tb
            prev_dts: int | None = None
            for i, p in enumerate(pkts):
                dts = p.dts if p.dts is not None else p.pts
                pts = p.pts if p.pts is not None else dts
                if dts is None or pts is None:
                    dts = pts = base + i * default_dur
                dts -= base
                pts -= base
                # MP4 requires strictly increasing dts; repair jitter instead of failing the clip.
                if prev_dts is not None and dts <= prev_dts:
                    dts = prev_dts + 1
                pts = max(pts, dts)
                prev_dts = dts
                pkt = av.Packet(p.data)
                pkt.dts, pkt.pts = dts, pts
                pkt.duration = p.duration or default_dur
                pkt.time_base = tb
                pkt.is_keyframe = p.is_keyframe
                pkt.stream = ost
                out.mux(pkt)
        tmp.replace(path)
        return path


def _order(p: RingPacket) -> int | None:
    return p.dts if p.dts is not None else p.pts
