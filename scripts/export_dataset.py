#!/usr/bin/env python3
"""Export operator-verified evidence from the ticket REST API as a YOLO + COCO set (a remote deployment).

A thin wrapper: with the site config at hand use ``gridwatch dataset export`` (docs/retraining.md), which
reads the ticket store directly. This script gets the same data through the API only (tickets, their
verdicts and raw frames), so it works against any deployment, and writes the same layout
(:mod:`pipeline.dataset.layout`): split by camera, false alarms as negatives, ``manifest.json``.

    python scripts/export_dataset.py --api http://127.0.0.1:8080 --hazard fire \\
        --classes fire,smoke --out datasets/verified-fire
    gridwatch model train --hazard fire --from fire@2 --data datasets/verified-fire ...
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.dataset.api_source import ApiClient, api_source  # noqa: E402
from pipeline.dataset.export import export_hazard  # noqa: E402


def export(client: ApiClient, hazard: str, classes: list[str], out: Path,
           val_fraction: float = 0.2) -> dict[str, int]:
    """Write the set of ``hazard`` into ``out``; return positives, negatives and skipped frames."""
    frames, raw = api_source(client, hazard)
    result = export_hazard(frames, lambda f: raw.get(f.ticket_id), hazard, out, classes, val_fraction,
                           sources={"api": str(getattr(client, "base_url", ""))})
    c = result.counts
    return {"positives": c["train"]["positives"] + c["val"]["positives"],
            "negatives": c["train"]["negatives"] + c["val"]["negatives"],
            "skipped": sum(result.skipped.values())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="ticket API base URL")
    ap.add_argument("--hazard", required=True, help="parking, fire, clutter or poster")
    ap.add_argument("--classes", required=True, help="comma-separated class names, in model order")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of cameras in val")
    ap.add_argument("--token", default=os.environ.get("GRIDWATCH_TOKEN"),
                    help="API token of a user that reads the tickets (default: $GRIDWATCH_TOKEN; "
                    "gridwatch user token NAME --name export)")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.api.rstrip("/"), timeout=30, headers=headers) as client:
        counts = export(client, args.hazard, args.classes.split(","), args.out, args.val_fraction)
    print(f"{args.out}: {counts['positives']} positives, {counts['negatives']} negatives, "
          f"{counts['skipped']} skipped (see manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
