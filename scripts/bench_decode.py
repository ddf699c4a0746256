#!/usr/bin/env python3
"""Decode cost per camera: key frames alone (with and without the per-key-frame drain) vs every frame.

What ``decode: auto`` costs: a camera whose hazards need only key frames decodes one picture per GOP; a
fire camera whose key frames come less often than 2/s decodes every frame. This prints, for one file,
the decoder's CPU time per key frame (plain, and drained + flushed as the reader does, so B-frames never
hold a key frame back), the key frames each way yields, and the CPU seconds per second of video of
decoding every frame, all single-threaded as the reader runs its decoders.

Default input: a 1080p25 test pattern encoded like a camera (libx264 veryfast, 4 Mbps, 3 B-frames, a key
frame every 2 s), made once in a temporary folder.

Examples::

    python3 scripts/bench_decode.py
    python3 scripts/bench_decode.py --video ../shared/clips/car-detection.mp4 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import av


def make_camera_like(out: Path, seconds: float) -> Path:
    """1080p25 x264 veryfast 4 Mbps, 3 B-frames, GOP 50 (a key frame every 2 s)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=1920x1080:rate=25", "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                    "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M", "-bf", "3", "-g", "50", "-keyint_min", "50",
                    "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(out)], check=True, timeout=600)
    return out


def keyframes(path: Path, drain: bool) -> tuple[float, int, int]:
    """(CPU ms per key packet, frames out, key packets) decoding key packets only."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        ctx = s.codec_context
        ctx.thread_count = 1
        ctx.skip_frame = "NONKEY"
        packets = [p for p in c.demux(s) if p.size and p.is_keyframe]
        t = time.process_time()
        out = 0
        for p in packets:
            frames = ctx.decode(p)
            if drain:
                frames += ctx.decode(None)
                ctx.flush_buffers()
            out += len(frames)
        return (time.process_time() - t) * 1000 / max(1, len(packets)), out, len(packets)


def every_frame(path: Path) -> tuple[float, float]:
    """(CPU seconds per second of video, video seconds) decoding every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        t = time.process_time()
        last = 0.0
        for fr in c.decode(s):
            if fr.pts is not None and s.time_base is not None:
                last = max(last, float(fr.pts * s.time_base))
        cpu = time.process_time() - t
    seconds = last + 1 / float(s.average_rate or 25)
    return cpu / seconds, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, help="Input file (default: a generated 1080p25 camera-like clip).")
    ap.add_argument("--seconds", type=float, default=20.0, help="Length of the generated clip.")
    ap.add_argument("--repeat", type=int, default=3, help="Runs per measurement (the fastest is kept).")
    ap.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or make_camera_like(Path(tmp) / "cam1080.mp4", args.seconds)
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            desc = f"{s.codec_context.name} {s.width}x{s.height} {float(s.average_rate or 0):g} fps"
        plain = min((keyframes(video, drain=False) for _ in range(args.repeat)), key=lambda r: r[0])
        drained = min((keyframes(video, drain=True) for _ in range(args.repeat)), key=lambda r: r[0])
        full, seconds = min((every_frame(video) for _ in range(args.repeat)), key=lambda r: r[0])
    result: dict[str, Any] = {
        "video": str(args.video or "generated 1080p25 x264 veryfast 4 Mbps bf=3 gop=50"), "stream": desc,
        "seconds": round(seconds, 2), "key_packets": drained[2],
        "keyframe_ms_plain": round(plain[0], 2), "keyframes_out_plain": plain[1],
        "keyframe_ms_drained": round(drained[0], 2), "keyframes_out_drained": drained[1],
        "every_frame_cpu_per_video_s": round(full, 3)}
    print(f"{result['video']} ({desc}, {seconds:.1f} s, {drained[2]} key packets)")
    print(f"  key frames only, plain:    {plain[0]:6.2f} ms CPU per key packet, {plain[1]} frames out")
    print(f"  key frames only, drained:  {drained[0]:6.2f} ms CPU per key packet, {drained[1]} frames out")
    print(f"  every frame:               {full:6.3f} CPU s per s of video (one core = {1 / full:.1f} cameras)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
