"""Judged tickets and their raw frames through the ticket REST API (for a deployment without DB access).

Used by ``scripts/export_dataset.py``; ``gridwatch dataset export --config`` reads the store directly.
"""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.tickets.verdicts import CONFIRMED_STATUSES, LabelledFrame, Verdict, boxes_from_json


class ApiClient(Protocol):
    """What is used of an ``httpx.Client`` (or FastAPI's ``TestClient``) whose base URL is the API."""

    def get(self, url: str, *, params: Any = None) -> Any: ...


def _tickets(client: ApiClient, hazard: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.get("/tickets", params={"hazard": hazard, "limit": 500, "offset": len(out)})
        page.raise_for_status()
        body = page.json()
        out += body["items"]
        if not body["items"] or len(out) >= body["total"]:
            return out


def _alert_boxes(detail: dict[str, Any]) -> list[Any]:
    for event in detail["events"]:
        boxes = (event.get("payload") or {}).get("boxes") or []
        if event["kind"] in ("alert_opened", "alert_updated") and boxes:
            return list(boxes)
    return list(detail.get("boxes") or [])


def api_source(client: ApiClient, hazard: str) -> tuple[list[LabelledFrame], dict[int, bytes | None]]:
    """The judged tickets of ``hazard`` (latest verdict, else the case status) and their raw frames."""
    frames: list[LabelledFrame] = []
    raw: dict[int, bytes | None] = {}
    for t in _tickets(client, hazard):
        verdicts = client.get(f"/tickets/{t['id']}/verdicts")
        verdicts.raise_for_status()
        latest = (verdicts.json() or [None])[-1]
        if latest is not None:
            verdict, source, sha = Verdict(latest["verdict"]), f"verdict:{latest['source']}", latest["frame_sha256"]
            corrected, boxes = latest["boxes"] is not None, boxes_from_json(latest["boxes"])
        elif t["status"] in CONFIRMED_STATUSES or t["status"] == "false_alarm":
            verdict = Verdict.FALSE_ALARM if t["status"] == "false_alarm" else Verdict.CONFIRMED
            source, sha, corrected, boxes = f"status:{t['status']}", None, False, ()
        else:
            continue
        if verdict is Verdict.CONFIRMED and not corrected:
            detail = client.get(f"/tickets/{t['id']}")
            detail.raise_for_status()
            boxes = boxes_from_json(_alert_boxes(detail.json()))
        frame = client.get(f"/tickets/{t['id']}/evidence/frame")
        raw[t["id"]] = frame.content if frame.status_code == 200 else None
        frames.append(LabelledFrame(t["id"], t["incident_id"], t["camera_id"], hazard, verdict,
                                    boxes if verdict is Verdict.CONFIRMED else (), corrected, source, sha))
    return frames, raw
