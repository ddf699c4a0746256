#!/usr/bin/env python3
"""Export operator-verified evidence from the ticket API as a YOLO detection data set, for retraining.

Tickets a person has confirmed (``verified`` and every later step of the case life cycle) become
positives: the unannotated frame (``frame.jpg``) with the alert's boxes as labels. Tickets marked
``false_alarm`` become negatives (an empty label file), which is exactly the data that teaches a detector
its site's false alarms. Images are split into train/val by a hash of the incident id, so re-exporting
never moves an image between splits.

    python scripts/export_dataset.py --api http://127.0.0.1:8080 --hazard fire \\
        --classes fire,smoke --out datasets/verified-fire
    python scripts/train.py --data datasets/verified-fire/data.yaml --name fire ...

Only the REST API is used (no database access), so it works against any deployment.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

POSITIVE = ("verified", "dispatched", "in_progress", "resolved", "checked", "closed")
NEGATIVE = ("false_alarm",)


def _tickets(client: httpx.Client, hazard: str, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.get("/tickets", params={"hazard": hazard, "status": list(statuses), "limit": 500,
                                              "offset": len(out)}).raise_for_status().json()
        out += page["items"]
        if not page["items"] or len(out) >= page["total"]:
            return out


def _labels(detail: dict[str, Any], classes: list[str]) -> list[str]:
    """YOLO label lines from the ticket's first alert event that carries boxes."""
    for event in detail["events"]:
        boxes = (event.get("payload") or {}).get("boxes") or []
        if event["kind"].startswith("alert_") and boxes:
            lines = []
            for b in boxes:
                if b["label"] not in classes:
                    continue
                cx, cy = (b["x1"] + b["x2"]) / 2, (b["y1"] + b["y2"]) / 2
                w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
                lines.append(f"{classes.index(b['label'])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            return lines
    return []


def export(client: httpx.Client, hazard: str, classes: list[str], out: Path,
           val_fraction: float = 0.15) -> dict[str, int]:
    """Write ``out/images/{train,val}``, ``out/labels/{train,val}`` and ``out/data.yaml``; return counts.

    ``client`` has the API as its base URL (an ``httpx.Client``, or FastAPI's ``TestClient``).
    """
    counts = {"positives": 0, "negatives": 0, "skipped": 0}
    for split in ("train", "val"):
        for sub in ("images", "labels"):
            (out / sub / split).mkdir(parents=True, exist_ok=True)
    for statuses, kind in ((POSITIVE, "positives"), (NEGATIVE, "negatives")):
        for ticket in _tickets(client, hazard, statuses):
            frame = client.get(f"/tickets/{ticket['id']}/evidence/frame")
            detail = client.get(f"/tickets/{ticket['id']}").raise_for_status().json()
            lines = _labels(detail, classes) if kind == "positives" else []
            if frame.status_code != 200 or (kind == "positives" and not lines):
                counts["skipped"] += 1  # evidence expired, or no box of the wanted classes
                continue
            digest = hashlib.sha256(ticket["incident_id"].encode()).digest()
            split = "val" if digest[0] / 255 < val_fraction else "train"
            stem = f"{ticket['camera_id']}__{ticket['id']}"
            (out / "images" / split / f"{stem}.jpg").write_bytes(frame.content)
            (out / "labels" / split / f"{stem}.txt").write_text("".join(f"{x}\n" for x in lines))
            counts[kind] += 1
    (out / "data.yaml").write_text(yaml.safe_dump({
        "path": str(out.resolve()), "train": "images/train", "val": "images/val", "nc": len(classes),
        "names": classes}, sort_keys=False))
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", default="http://127.0.0.1:8080", help="ticket API base URL")
    ap.add_argument("--hazard", required=True, help="parking, fire, clutter or poster")
    ap.add_argument("--classes", required=True, help="comma-separated class names, in model order")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--token", default=os.environ.get("GRIDWATCH_TOKEN"),
                    help="API token of a user that reads the tickets (default: $GRIDWATCH_TOKEN; "
                    "gridwatch user token NAME --name export)")
    args = ap.parse_args()
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.api.rstrip("/"), timeout=30, headers=headers) as client:
        counts = export(client, args.hazard, args.classes.split(","), args.out, args.val_fraction)
    print(f"{args.out}: {counts['positives']} positives, {counts['negatives']} negatives, "
          f"{counts['skipped']} skipped (no frame or no matching box)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
