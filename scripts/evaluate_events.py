#!/usr/bin/env python3
"""Replay labelled clips and score the alerts: time to alert, missed events, false events per hour.

Each clip of an events YAML (see configs/events.yaml) is run through ``gridwatch replay``'s engine
(:class:`pipeline.replay.Replay`: the camera's live analysis path at stream time) and its opened incidents
are matched to the clip's expected events:

* an expected event ``{hazard, window: [start, end], zone?}`` is *found* by the first unmatched incident of
  that hazard (and zone, if given) that opens within ``[start, end]`` (``end: null`` = the clip's end);
  its time to alert is ``opened - start``. Otherwise it is *missed*.
* every incident that matches no event is a *false event* (on a control clip, ``events: none``, all are).
* false events per hour = false events / hours of video replayed.

Events YAML::

    defaults: {config: demo.yaml, start_ts: 1800000000}    # optional; paths relative to the YAML
    clips:
      - name: parking-held-car
        clip: ../var/demo/car-parks.mp4
        make: python scripts/make_demo_media.py              # how to produce a missing clip (printed)
        camera: lot-1                                        # a camera of `config` ...
        events: [{hazard: parking, window: [27.6, 47.6]}]
      - name: highway-control
        clip: ../../shared/clips/street-highway-01.mp4
        spec: {hazards: [fire, clutter], zones: ["0,0.5 1,0.5 1,1 0,1"], fps: 2}   # ... or a camera spec
                                                             # (fps or decode: auto|keyframes|interval)
        hazards: {clutter: {dwell_seconds: 20}}              # optional rule overrides for this clip
        events: none

    python scripts/evaluate_events.py configs/events.yaml               # table on stdout
    python scripts/evaluate_events.py configs/events.yaml --markdown    # the table of docs/detectors.md
    python scripts/evaluate_events.py configs/events.yaml --only highway-control --json

Exit status: 0 when every clip ran (missing clips are reported and skipped unless ``--strict``), 1 on a
bad YAML or a clip that failed to replay.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pipeline.config import SiteConfig, load_config  # noqa: E402
from pipeline.replay import Replay, ReplaySummary  # noqa: E402
from pipeline.replay_cmd import ReplayArgs, choose  # noqa: E402


@dataclass
class ExpectedEvent:
    """One labelled event: ``hazard`` visible from ``start`` to ``end`` s (None: the clip's end)."""

    hazard: str
    start: float
    end: float | None = None
    zone: str | None = None


@dataclass
class ClipResult:
    """The score of one clip (times in seconds since the clip start)."""

    name: str
    hazards: list[str]
    video_s: float = 0.0
    expected: int = 0
    alerts: int = 0
    found: int = 0
    missed: int = 0
    false: int = 0
    time_to_alert: list[float] = field(default_factory=list)
    false_events: list[str] = field(default_factory=list)
    status: str = "ok"
    wall_s: float = 0.0

    @property
    def false_per_hour(self) -> float:
        return self.false / (self.video_s / 3600) if self.video_s else 0.0


def parse_events(raw: Any, where: str) -> list[ExpectedEvent]:
    """``none`` / ``[]`` / a list of ``{hazard, window: [start, end], zone?}``; ValueError names ``where``."""
    if raw is None or raw == "none" or raw == []:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{where}.events: want `none` or a list of {{hazard, window}}, got {raw!r}")
    out = []
    for i, ev in enumerate(raw):
        if not isinstance(ev, dict) or "hazard" not in ev or "window" not in ev:
            raise ValueError(f"{where}.events[{i}]: want {{hazard, window: [start, end]}}, got {ev!r}")
        win = ev["window"]
        if not isinstance(win, list) or len(win) != 2:
            raise ValueError(f"{where}.events[{i}].window: want [start, end] seconds, got {win!r}")
        start, end = float(win[0]), (None if win[1] is None else float(win[1]))
        if end is not None and end < start:
            raise ValueError(f"{where}.events[{i}].window: end {end} is before start {start}")
        out.append(ExpectedEvent(str(ev["hazard"]), start, end, ev.get("zone")))
    return out


def with_overrides(site: SiteConfig, overrides: dict[str, dict[str, Any]] | None) -> SiteConfig:
    """``site`` with per-hazard rule fields replaced (e.g. ``{clutter: {dwell_seconds: 20}}``)."""
    if not overrides:
        return site
    data = site.model_dump(mode="json", exclude={"base_dir"})
    for hazard, fields in overrides.items():
        data["hazards"][str(hazard)] = {**data["hazards"].get(str(hazard), {}), **fields}
    out = SiteConfig.model_validate(data)
    out.base_dir = site.base_dir
    return out


def score(events: list[ExpectedEvent], summary: ReplaySummary, result: ClipResult) -> None:
    """Match ``summary``'s incidents to ``events`` into ``result`` (see the module docstring)."""
    unmatched = list(summary.incidents)
    result.video_s = summary.duration_s
    result.alerts = len(summary.incidents)
    result.expected = len(events)
    for ev in events:
        end = ev.end if ev.end is not None else float("inf")
        hit = next((s for s in unmatched if s.hazard == ev.hazard and (ev.zone is None or s.zone == ev.zone)
                    and ev.start <= s.opened_t <= end), None)
        if hit is None:
            result.missed += 1
            continue
        unmatched.remove(hit)
        result.found += 1
        result.time_to_alert.append(round(hit.opened_t - ev.start, 2))
    result.false = len(unmatched)
    result.false_events = [f"{s.hazard}@{s.zone or 'frame'} {s.opened_t:.1f}s" for s in unmatched]


def run_clip(entry: dict[str, Any], base: Path, defaults: dict[str, Any]) -> ClipResult:
    """Replay and score one clip entry of the YAML (``base``: the YAML's folder)."""
    name = str(entry.get("name") or entry.get("clip"))
    spec = entry.get("spec") or {}
    config = entry.get("config", defaults.get("config"))
    site = load_config(base / config) if config else None
    clip = base / str(entry["clip"])
    events = parse_events(entry.get("events", "none"), name)
    hazards = sorted({*(str(h) for h in spec.get("hazards", [])), *(e.hazard for e in events)})
    result = ClipResult(name, hazards)
    if not clip.is_file():
        result.status = f"missing ({entry['make']})" if entry.get("make") else "missing"
        return result
    fps = spec.get("fps", entry.get("fps"))
    args = ReplayArgs(clip, site, entry.get("camera"), [str(h) for h in spec.get("hazards", [])],
                      [str(z) for z in spec.get("zones", [])], spec.get("zone_kind"),
                      float(fps) if fps is not None else None, spec.get("decode", entry.get("decode")))
    site_used, camera, video = choose(args)
    if entry.get("hazards"):
        site_used = with_overrides(site_used, entry["hazards"])
        camera = site_used.camera(camera.id).model_copy(update={"decode": camera.decode, "max_fps": camera.max_fps})
    if not hazards:
        result.hazards = sorted(str(h) for h in camera.used_hazards())
    start_ts = float(entry.get("start_ts", defaults.get("start_ts", 1_800_000_000.0)))
    summary = Replay(site_used, camera).run(video, start_ts)
    result.wall_s = round(summary.wall_s, 1)
    score(events, summary, result)
    return result


def total(results: list[ClipResult]) -> ClipResult:
    """One row over every clip that ran."""
    ran = [r for r in results if r.status == "ok"]
    t = ClipResult("**all**", sorted({h for r in ran for h in r.hazards}))
    for r in ran:
        t.video_s += r.video_s
        t.expected += r.expected
        t.alerts += r.alerts
        t.found += r.found
        t.missed += r.missed
        t.false += r.false
        t.time_to_alert += r.time_to_alert
        t.wall_s += r.wall_s
    return t


def table(results: list[ClipResult], markdown: bool) -> str:
    """The results as a markdown (or plain, aligned) table with a total row."""
    head = ["clip", "hazards", "video s", "expected", "alerts", "time to alert s", "missed", "false", "false/h",
            "note"]
    rows = []
    for r in [*results, total(results)]:
        tta = ", ".join(f"{t:.1f}" for t in r.time_to_alert) if r.name != "**all**" else (
            f"median {statistics.median(r.time_to_alert):.1f}" if r.time_to_alert else "-")
        ran = r.status == "ok"
        note = r.status if not ran else "; ".join(r.false_events)[:80]
        rows.append([r.name, " ".join(r.hazards), f"{r.video_s:.0f}" if ran else "-", str(r.expected),
                     str(r.alerts) if ran else "-", tta or "-", str(r.missed) if ran else "-",
                     str(r.false) if ran else "-", f"{r.false_per_hour:.0f}" if ran else "-", note])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("events", type=Path, help="Events YAML (e.g. configs/events.yaml).")
    ap.add_argument("--markdown", action="store_true", help="Markdown table (for docs/detectors.md).")
    ap.add_argument("--json", action="store_true", help="One JSON object per clip instead of a table.")
    ap.add_argument("--only", action="append", help="Only the clip(s) with this name (repeatable).")
    ap.add_argument("--strict", action="store_true", help="A missing clip is an error.")
    args = ap.parse_args(argv)
    try:
        doc = yaml.safe_load(args.events.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"{args.events}: {exc}", file=sys.stderr)
        return 1
    clips = doc.get("clips") if isinstance(doc, dict) else None
    if not isinstance(clips, list):
        print(f"{args.events}: want a mapping with a `clips:` list", file=sys.stderr)
        return 1
    defaults = doc.get("defaults") or {}
    results: list[ClipResult] = []
    failed = False
    for i, entry in enumerate(clips):
        if not isinstance(entry, dict) or "clip" not in entry:
            print(f"{args.events}: clips[{i}] needs at least `clip`", file=sys.stderr)
            return 1
        if args.only and entry.get("name") not in args.only:
            continue
        try:
            r = run_clip(entry, args.events.resolve().parent, defaults)
        except Exception as exc:  # noqa: BLE001 - one bad clip is reported, the others still run
            r = ClipResult(str(entry.get("name") or entry["clip"]), [], status=f"error: {exc}")
            failed = True
        if r.status.startswith("missing") and args.strict:
            failed = True
        results.append(r)
        print(f"{r.name}: {r.status}, {r.alerts} alerts, {r.missed} missed, {r.false} false "
              f"({r.wall_s:.0f} s)", file=sys.stderr)
    if args.json:
        for r in results:
            print(json.dumps({**asdict(r), "false_per_hour": round(r.false_per_hour, 1)}, ensure_ascii=False))
    else:
        print(table(results, args.markdown))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
