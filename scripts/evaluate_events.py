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
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The scoring lives in pipeline.evaluation.events (also used by `gridwatch model evaluate`); re-exported here.
from pipeline.evaluation.events import (  # noqa: E402
    ClipResult,
    ExpectedEvent,
    parse_events,
    run_clip,
    score,
    table,
    total,
    with_overrides,
)

__all__ = ["ClipResult", "ExpectedEvent", "main", "parse_events", "run_clip", "score", "table", "total",
           "with_overrides"]


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
