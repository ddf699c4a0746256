"""The body of ``gridwatch replay``: pick the camera, replay, print the timeline or JSON, write the video."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from pipeline.annotate import AnnotatedVideo, draw_debug
from pipeline.config import CameraConfig, DecodeMode, SiteConfig
from pipeline.replay import FrameRecord, Replay, ReplaySummary, file_start_ts, with_fps
from pipeline.replay_report import (
    dumps,
    frame_record,
    incident_line,
    incident_record,
    site_from_spec,
    start_record,
    summary_record,
    timeline_line,
)


class ReplayUsageError(ValueError):
    """The command line does not name a usable camera or video (message says what to pass)."""


@dataclass
class ReplayArgs:
    """Parsed ``gridwatch replay`` options (see ``gridwatch replay --help``)."""

    video: Path | None
    site: SiteConfig | None
    camera_id: str | None = None
    hazards: list[str] = field(default_factory=list)
    zones: list[str] = field(default_factory=list)
    zone_kind: str | None = None
    fps: float | None = None
    decode: str | None = None
    start_ts: float | None = None
    annotate: Path | None = None
    as_json: bool = False
    quiet: bool = False


def choose(args: ReplayArgs) -> tuple[SiteConfig, CameraConfig, Path]:
    """(site, camera, video) the options name; raises :class:`ReplayUsageError` when they do not."""
    if args.hazards or args.zones:
        if not args.hazards:
            raise ReplayUsageError("--zone needs --hazard (e.g. --hazard clutter --zone '0,0.6 1,0.6 1,1 0,1')")
        if args.video is None:
            raise ReplayUsageError("a camera spec (--hazard/--zone) needs the VIDEO argument")
        try:
            site = site_from_spec(str(args.video), args.hazards, args.zones, args.site, args.zone_kind)
        except ValueError as exc:
            raise ReplayUsageError(str(exc)) from None
        camera = site.cameras[0]
    else:
        if args.site is None:
            raise ReplayUsageError("pass -c SITE.yaml --camera ID, or a camera spec (--hazard, --zone)")
        site = args.site
        ids = [c.id for c in site.cameras]
        if args.camera_id is None:
            if len(ids) != 1:
                raise ReplayUsageError(f"--camera is required (cameras: {', '.join(ids) or 'none'})")
            camera = site.cameras[0]
        else:
            try:
                camera = site.camera(args.camera_id)
            except KeyError:
                raise ReplayUsageError(f"no camera {args.camera_id!r} (cameras: {', '.join(ids)})") from None
    if args.video is None and "://" in camera.url:
        raise ReplayUsageError(f"camera {camera.id} streams from a URL; pass a recording of it as VIDEO")
    video = args.video if args.video is not None else site.resolve_path(camera.url)
    if not video.is_file():
        raise ReplayUsageError(f"no such video file: {video}")
    if args.decode is not None:
        try:
            camera = camera.model_copy(update={"decode": DecodeMode(args.decode)})
        except ValueError:
            raise ReplayUsageError(f"--decode {args.decode!r}: one of {', '.join(m.value for m in DecodeMode)}") \
                from None
    return site, with_fps(camera, args.fps), video


def run(args: ReplayArgs, out: TextIO | None = None, console: Console | None = None) -> ReplaySummary:
    """Replay as the options say; timeline (or JSON Lines) to ``out``, progress to ``console`` on a TTY."""
    out = out or sys.stdout
    console = console or Console(stderr=True)
    site, camera, video = choose(args)
    start_ts = args.start_ts if args.start_ts is not None else file_start_ts(video)
    replay = Replay(site, camera)
    writer = AnnotatedVideo(args.annotate) if args.annotate is not None else None
    zones_px: dict[str, object] = {}
    header_of = f"{camera.id} {camera.decode.value}" + (f" {camera.max_fps:g} fps" if camera.decode.value ==
                                                          "interval" else "")
    if args.as_json:
        print(dumps(start_record({"video": str(video), "camera": camera.id, "start_ts": start_ts}, camera,
                                 replay.rule_states())), file=out, flush=True)
    else:
        rules = ", ".join(f"{r['hazard']}@{r['zone'] or 'frame'}" for r in replay.rule_states()) or "none"
        print(f"replay {video} as camera {camera.id} ({header_of}), clip start {start_ts:.3f}; "
              f"rules: {rules}", file=out)
    progress = Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
                        TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
    task: TaskID | None = None

    def on_duration(duration: float | None) -> None:
        nonlocal task
        task = progress.add_task("replay", total=duration or None)

    def on_frame(rec: FrameRecord) -> None:
        if args.as_json:
            print(dumps(frame_record(rec)), file=out)
            for inc in rec.incidents:
                print(dumps(incident_record(inc, start_ts)), file=out)
        else:
            if not args.quiet:
                print(timeline_line(rec, start_ts), file=out)
            for inc in rec.incidents:
                print(incident_line(inc, start_ts), file=out)
        if writer is not None:
            if not zones_px:
                zones_px.update(replay.analyzer.zone_polygons_px(rec.frame.width, rec.frame.height))
            header = f"{header_of}  t={rec.t:.2f}s" + ("  key" if rec.frame.keyframe else "")
            writer.write(draw_debug(rec.frame.image, zones_px, rec.detections, rec.rules,  # type: ignore[arg-type]
                                    header, rec.frame.ts, start_ts), rec.t)
        if task is not None:
            progress.update(task, completed=rec.t)

    try:
        with progress:
            summary = replay.run(video, start_ts, on_frame=on_frame, on_duration=on_duration)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if args.as_json:
        print(dumps(summary_record(summary)), file=out, flush=True)
    else:
        print(summary_text(summary, args.annotate), file=out, flush=True)
    return summary


def summary_text(summary: ReplaySummary, annotated: Path | None = None) -> str:
    """The closing lines: frames, speed, and each incident with its open/clear times."""
    speed = summary.duration_s / summary.wall_s if summary.wall_s else 0.0
    lines = [f"{summary.frames_analysed} frames analysed of {summary.frames_decoded} decoded, "
             f"{summary.duration_s:.1f} s of video in {summary.wall_s:.1f} s ({speed:.1f}x real time)"]
    if not summary.incidents:
        lines.append("no incidents")
    for s in summary.incidents:
        cleared = f"cleared {s.cleared_t:.1f}s" if s.cleared_t is not None else "still open at the end"
        lines.append(f"incident {s.hazard} {s.zone or 'frame'}: started {s.started_t:.1f}s, opened "
                     f"{s.opened_t:.1f}s, {s.updates} updates, {cleared}  ({s.id})")
    if annotated is not None:
        lines.append(f"annotated video: {annotated}")
    return "\n".join(lines)
