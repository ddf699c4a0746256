#!/usr/bin/python3
"""Serve H.264 MP4 files as looping RTSP streams, without re-encoding (test and demo camera).

Run with the system Python, which has GStreamer's introspection bindings::

    /usr/bin/python3 scripts/rtsp_server.py --port 8554 \\
        --stream cam1=clips/a.mp4 --stream cam2=clips/b.mp4

Each ``--stream name=path`` is served at ``rtsp://127.0.0.1:<port>/<name>``. Prints ``READY`` (and
flushes) once listening, so a test can wait for that line.

Each client gets its own pipeline (like a camera that starts streaming when asked): a shared pipeline would
be seeked back by every new client's PLAY range and broke for everyone once it had looped. A client's
stream therefore starts at the beginning of the file, which also makes test timing deterministic.

How the loop works: one pipeline per client (``filesrc ! qtdemux ! h264parse ! rtph264pay``)
is started with a *segment* seek; at the end of the file qtdemux posts SEGMENT_DONE instead of EOS,
and a non-flushing segment seek back to 0 continues the same running time, so RTP timestamps keep
increasing and clients never notice the wrap. Clients that PLAY with a range make the media do a
plain seek; if that ever leads to EOS, a flushing segment seek restarts the loop. The file must
have key frames regularly (every ~2 s) so a client joining mid-loop starts decoding quickly;
``config-interval=-1`` repeats SPS/PPS before every key frame for the same reason.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Before subclassing RTSPMedia: its signals refer to GstMessage, a type registered by Gst.init.
Gst.init(None)
_SEGMENT_FLAGS = Gst.SeekFlags.SEGMENT | Gst.SeekFlags.KEY_UNIT


class LoopingMedia(GstRtspServer.RTSPMedia):
    """RTSPMedia that rewinds its file at the end instead of ending the stream."""

    def _seek_start(self, flags: Gst.SeekFlags) -> None:
        demux = self.get_element().get_by_name("demux")
        target = demux if demux is not None else self.get_element()
        ok = target.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        if not ok:
            print(f"loop seek failed ({flags})", file=sys.stderr, flush=True)

    def do_prepared(self) -> None:  # noqa: D102 - GObject vfunc
        # Segment seek once, so the end of the file produces SEGMENT_DONE rather than EOS. Done
        # synchronously while the media is being prepared, before any client can PLAY: the same
        # seek from an idle callback can race a client's PLAY and abort the server in
        # gst_rtsp_media_get_rates.
        self._seek_start(Gst.SeekFlags.FLUSH | _SEGMENT_FLAGS)
        self._wait_for_segments()

    def _wait_for_segments(self, timeout: float = 10.0) -> None:
        """Block until every stream carries a segment again after the flushing seek.

        The flush clears the SEGMENT event that the RTSP server reads a stream's rate from. A PLAY that
        arrives before the new segment has reached the end of the stream (a busy machine: the demuxer thread
        has not run yet) makes gst_rtsp_media_get_rates hit ``g_assert (FALSE)`` and abort the process.
        """
        deadline = time.monotonic() + timeout
        for i in range(self.n_streams()):
            stream = self.get_stream(i)
            while not stream.get_rates()[0]:
                if time.monotonic() > deadline:
                    print(f"stream {i}: no segment {timeout:.0f} s after the loop seek", file=sys.stderr,
                          flush=True)
                    return
                time.sleep(0.005)

    def do_handle_message(self, message: Gst.Message) -> bool:  # noqa: D102 - GObject vfunc
        if message.type == Gst.MessageType.SEGMENT_DONE:
            # Non-flushing: keeps running time (and so RTP timestamps) increasing across the wrap.
            self._seek_start(_SEGMENT_FLAGS)
            return True
        if message.type == Gst.MessageType.EOS:
            self._seek_start(Gst.SeekFlags.FLUSH | _SEGMENT_FLAGS)
            return True
        return bool(GstRtspServer.RTSPMedia.do_handle_message(self, message))


def make_factory(path: Path) -> GstRtspServer.RTSPMediaFactory:
    """A factory serving ``path`` (H.264 in MP4/MOV) looped, without re-encoding, one pipeline per client."""
    loc = str(path.resolve()).replace("\\", "\\\\").replace('"', '\\"')
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{loc}" ! qtdemux name=demux demux.video_0 ! queue ! '
        "h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    # One pipeline for all clients: a real camera has one live feed, and new clients join it.
    factory.set_shared(False)
    factory.set_media_gtype(LoopingMedia)
    # Keep the loop running while no client is connected, so a reconnecting client resumes "live".
    factory.set_suspend_mode(GstRtspServer.RTSPSuspendMode.NONE)
    factory.set_stop_on_disconnect(False)
    return factory


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, mount the streams and run until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8554, help="RTSP port (default 8554)")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--stream", action="append", required=True, metavar="NAME=PATH",
                    help="mount point name and H.264 MP4 file; repeatable")
    args = ap.parse_args(argv)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for spec in args.stream:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            ap.error(f"--stream wants NAME=PATH, got {spec!r}")
        path = Path(file)
        if not path.is_file():
            ap.error(f"--stream {name}: no such file {file}")
        mounts.add_factory("/" + name.strip("/"), make_factory(path))

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"cannot listen on {args.host}:{args.port}", file=sys.stderr, flush=True)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda *_: loop.quit() or False)
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
