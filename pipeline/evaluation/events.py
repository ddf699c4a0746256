"""Replay labelled clips and score the alerts: time to alert, missed events, false events per hour.

Moved here from ``scripts/evaluate_events.py`` (its docstring describes the events YAML; the script
re-exports every name) so ``gridwatch model evaluate`` scores a candidate model on the same clips: pass
``models={manifest name: ModelOverride(path)}`` to :func:`run_clip` to replay with another model file.

* an expected event ``{hazard, window: [start, end], zone?}`` is *found* by the first unmatched incident of
  that hazard (and zone, if given) that opens within ``[start, end]`` (``end: null`` = the clip's end);
  its time to alert is ``opened - start``. Otherwise it is *missed*.
* every incident that matches no event is a *false event* (on a control clip, ``events: none``, all are).
* false events per hour = false events / hours of video replayed.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import DetectorConfig, SiteConfig, load_config
from pipeline.replay import Replay, ReplaySummary
from pipeline.replay_cmd import ReplayArgs, choose


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
        """False events per hour of video replayed."""
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


@dataclass(frozen=True)
class ModelOverride:
    """Run detectors of one manifest model with this file instead (``input_size`` None: keep the detector's)."""

    path: Path
    input_size: int | None = None


def with_models(site: SiteConfig, models: Mapping[str, ModelOverride] | None) -> SiteConfig:
    """``site`` with every detector whose model is manifest name ``name`` (or ``name@version``) running
    ``models[name]`` instead; a detector called ``name`` is added when the site has none (it was served from
    the manifest by name with default settings)."""
    if not models:
        return site
    detectors = dict(site.detectors)
    for name, override in models.items():
        users = [d for d, cfg in detectors.items() if cfg.model.partition("@")[0] == name]
        if name not in detectors:
            detectors[name] = DetectorConfig(model=name)
            users.append(name)
        for d in users:
            update: dict[str, Any] = {"model": str(override.path.resolve())}
            if override.input_size and "input_size" not in detectors[d].model_fields_set:
                update["input_size"] = override.input_size
            detectors[d] = detectors[d].model_copy(update=update)
    return site.model_copy(update={"detectors": detectors})


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


def run_clip(entry: dict[str, Any], base: Path, defaults: dict[str, Any],
             models: Mapping[str, ModelOverride] | None = None) -> ClipResult:
    """Replay and score one clip entry of the YAML (``base``: the YAML's folder).

    Args:
        entry: the clip entry.
        base: folder the entry's paths are relative to.
        defaults: the YAML's ``defaults``.
        models: manifest model name -> the file to replay its detectors with (:func:`with_models`).
    """
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
    site_used = with_models(site_used, models)
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
