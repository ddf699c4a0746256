"""One valid example of every message (docs, tests and the generated JSON Schemas' ``examples``).

Example:
    >>> example_alert().grid.path
    ['T1', 'D1', 'C1', 'G1']
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel

from pipeline.contract.camera_config import CameraConfigV1, CameraIndexV1
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1, NotificationV1
from pipeline.contract.enums import Hazard, IncidentEvent
from pipeline.contract.messages import (
    AlertBox,
    AlertV1,
    CameraHealthV1,
    CameraRef,
    DebugRequestV1,
    Evidence,
    GridRef,
    OccupancyV1,
    WorkerStatusV1,
    ZoneRef,
)
from pipeline.contract.resend import ResendRequestV1, SeqRange
from pipeline.contract.webhook import WebhookEventV1, WebhookTicketV1

_T0 = 1714550400.0  # 2024-05-01T08:00:00Z


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def example_alert() -> AlertV1:
    """A valid sample alert (docs and tests)."""
    return AlertV1(
        schema_version=1, event=IncidentEvent.OPENED, incident_id="cam1-z1-parking-1714550400-1",
        hazard=Hazard.PARKING,
        severity=2, ts=_utc(_T0 + 120), started_at=_utc(_T0),
        camera=CameraRef(id="cam1", name="North gate"),
        grid=GridRef(path=["T1", "D1", "C1", "G1"], names=["Town", "District", "Community", "Cell 1"],
                     patrol="Li Wei"),
        zone=ZoneRef(id="z1", kind="fire_lane", name="Fire lane A"), confidence=0.87,
        boxes=[AlertBox(x1=0.1, y1=0.2, x2=0.3, y2=0.4, label="car", confidence=0.87)],
        details={"dwell_seconds": 120.0},
        evidence=Evidence(snapshot_url="http://127.0.0.1:8080/evidence/cam1-z1-parking-1714550400-1/snapshot.jpg"),
    )


def example_messages() -> dict[str, BaseModel]:
    """Name (as in ``docs/messages/<name>.schema.json``) -> a valid example of that message."""
    return {
        "alert": example_alert(),
        "health": CameraHealthV1(camera_id="cam1", state="streaming", last_frame_ts=_T0 + 119.9,
                                 frames_decoded=240, decode_mode="auto", decode_mode_effective="keyframes",
                                 fps=25.0, keyframe_interval_s=2.0, analysis_fps=0.5, frames_analysed=60,
                                 worker_id="w1", url="rtsp://***@10.0.0.7:554/ch1", ts=_T0 + 120),
        "occupancy": OccupancyV1(used=12, free=28, capacity=40, ts=_T0 + 119.9, camera_id="lot", zone_id="bays",
                                 grid_path=["T1", "D1", "C1", "G1"]),
        "worker-status": WorkerStatusV1(state="online", ts=_utc(_T0), last_seq=42),
        "debug-request": DebugRequestV1(reply_to="gridwatch/debug/reply/cam1/5f0c2a9e4b7d4e0f9a1b2c3d4e5f6a7b"),
        "camera-check-request": CameraCheckRequestV1(
            schema_version=1, check_id="chk-42-1", ticket_id=42, incident_id="cam1-z1-parking-1714550400-1",
            camera_id="cam1", zone_id="z1", hazard=Hazard.PARKING, window_seconds=60.0,
            requested_at=_utc(_T0 + 3600)),
        "camera-check-result": CameraCheckResultV1(
            schema_version=1, check_id="chk-42-1", ticket_id=42, camera_id="cam1", outcome="passed",
            checked_at=_utc(_T0 + 3660), snapshot_url="http://127.0.0.1:8080/evidence/chk-42-1/snapshot.jpg",
            worker_id="w1"),
        "notification": NotificationV1(
            schema_version=1, kind="escalated", ticket_id=42, grid_path=["T1", "D1", "C1"], hazard=Hazard.FIRE,
            severity=5, title="Fire at North gate", status="dispatched",
            reason="not resolved within 30 min (cell G1)", deadline=_utc(_T0 + 5400), ts=_utc(_T0 + 3600),
            escalation_level=2, stage="resolve"),
        "resend-request": ResendRequestV1(
            schema_version=1, request_id="rs-w1-4-1", worker_id="w1",
            ranges=[SeqRange(first=4, last=6), SeqRange(first=9, last=9)], requested_at=_utc(_T0 + 130)),
        "webhook-event": WebhookEventV1(
            schema_version=1, delivery_id="4f0c2a9e4b7d4e0f9a1b2c3d4e5f6a7b", event="ticket_escalated",
            site="demo", ts=_utc(_T0 + 3600), reason="resolve deadline passed; notified: community T1/D1/C1",
            ticket=WebhookTicketV1(
                id=42, incident_id="cam1-z1-fire-1714550400-1", hazard=Hazard.FIRE, severity=5, status="dispatched",
                title="Fire at North gate / Stairwell", camera_id="cam1", camera_name="North gate",
                grid_path=["T1", "D1", "C1", "G1"], zone_id="z1", opened_at=_utc(_T0),
                url="https://tickets.example.org/tickets/42")),
        "camera-config": CameraConfigV1(
            schema_version=1, camera_id="cam1", revision=7, ts=_utc(_T0 + 60), camera={
                "id": "cam1", "name": "North gate", "url": "rtsp://viewer:secret@10.0.0.7:554/ch1", "grid": "G1",
                "zones": [{"id": "z1", "kind": "fire_lane", "name": "Fire lane A",
                           "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]}],
                "hazards": ["fire"]}),
        "camera-index": CameraIndexV1(schema_version=1, revision=7, ts=_utc(_T0 + 60), camera_ids=["cam1", "cam2"]),
    }
