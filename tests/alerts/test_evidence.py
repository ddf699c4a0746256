"""Evidence snapshots (annotated JPEG) and clips (via a fake packet ring)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.alerts.evidence import EvidenceWriter, check_incident_id
from pipeline.analyze.incident import Hazard, Incident, IncidentBox, IncidentEvent
from pipeline.ingest.frame import Frame

W, H = 320, 240


def make_incident(**kw: object) -> Incident:
    base: dict[str, object] = dict(
        id="cam1-lane-parking-1700000000-1", event=IncidentEvent.OPENED, hazard=Hazard.PARKING,
        camera_id="cam1", zone_id="lane", started_at=1700000000.0, ts=1700000120.0, confidence=0.9,
        boxes=(IncidentBox(0.55, 0.55, 0.85, 0.9, "car", 0.9),), frame_ts=1700000119.0)
    base.update(kw)
    return Incident(**base)  # type: ignore[arg-type]


def gray_frame() -> Frame:
    return Frame("cam1", np.full((H, W, 3), 128, np.uint8), ts=1700000119.0, pts=None, seq=1, keyframe=True)


# left half, lower 2/3: the incident's zone; a second zone in the top-right corner
LANE = np.array([[[0, 80]], [[150, 80]], [[150, 239]], [[0, 239]]], np.int32)
OTHER = np.array([[200, 40], [300, 40], [300, 70]], np.int32)  # (N, 2) form is accepted too


def test_snapshot_decodes_and_draws_zone_and_boxes(tmp_path: Path) -> None:
    w = EvidenceWriter(tmp_path)
    inc = make_incident()
    path = w.snapshot(gray_frame(), inc, {"lane": LANE, "other": OTHER})
    assert path == tmp_path / inc.id / "snapshot.jpg"
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (H, W, 3)
    diff = np.abs(img.astype(int) - 128).sum(axis=2)
    # zone interior (away from edges/boxes) is tinted by the semi-transparent fill
    assert diff[120:230, 10:140].mean() > 20
    # but not opaque: the gray frame still shows through
    interior = img[150:200, 40:100].reshape(-1, 3).mean(axis=0)
    assert 40 < interior.mean() < 220
    # outside every zone and box, the frame is untouched (allow JPEG noise)
    assert diff[78:100, 180:310].mean() < 8
    # box outline drawn around (0.55..0.85, 0.55..0.9)
    x1, y1 = round(0.55 * (W - 1)), round(0.9 * (H - 1))
    assert diff[y1 - 2:y1 + 3, x1 + 5:x1 + 40].mean() > 40
    # header bar darkens the top rows
    assert img[:8].mean() < 100
    # outline of the other zone
    assert diff[38:43, 220:280].mean() > 20
    # the source frame was not modified
    assert int(gray_frame().image.mean()) == 128


def test_snapshot_without_zone_or_boxes(tmp_path: Path) -> None:
    inc = make_incident(zone_id=None, hazard=Hazard.FIRE, boxes=(), id="cam1-fire-1")
    path = EvidenceWriter(tmp_path).snapshot(gray_frame(), inc, {})
    assert cv2.imread(str(path)) is not None


def test_snapshot_is_atomic_overwrite(tmp_path: Path) -> None:
    w = EvidenceWriter(tmp_path)
    inc = make_incident()
    p1 = w.snapshot(gray_frame(), inc, {"lane": LANE})
    p2 = w.snapshot(gray_frame(), inc, {})
    assert p1 == p2
    assert sorted(x.name for x in p1.parent.iterdir()) == ["frame.jpg", "snapshot.jpg"], "no temp files left"
    raw = cv2.imread(str(p1.parent / "frame.jpg"))
    assert raw is not None and float(raw.std()) < 2.0, "frame.jpg is the unannotated frame"


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".", "..", ".hidden", "a\x00b", "x" * 300])
def test_unsafe_incident_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        check_incident_id(bad)
    with pytest.raises(ValueError):
        EvidenceWriter(tmp_path).snapshot(gray_frame(), make_incident(id=bad), {})
    assert not any(tmp_path.iterdir())


class FakeRing:
    """Same ``write_clip`` signature as ``PacketRing``; records the requested range."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data
        self.calls: list[tuple[Path, float, float]] = []

    def write_clip(self, path: str | Path, start_ts: float, end_ts: float) -> Path | None:
        self.calls.append((Path(path), start_ts, end_ts))
        if self.data is None:
            return None
        Path(path).write_bytes(self.data)
        return Path(path)


def test_clip_written_atomically(tmp_path: Path) -> None:
    w = EvidenceWriter(tmp_path)
    inc = make_incident()
    ring = FakeRing(b"\x00\x00\x00\x18ftypmp42fake")
    out = w.clip(ring, inc, pre_s=5, post_s=3)
    assert out == w.paths(inc.id).clip == tmp_path / inc.id / "clip.mp4"
    assert out.read_bytes() == ring.data
    (tmp, start, end) = ring.calls[0]
    assert tmp.suffix == ".mp4" and tmp != out and tmp.parent == out.parent
    assert (start, end) == (inc.frame_ts - 5, inc.frame_ts + 3)  # type: ignore[operator]
    assert sorted(x.name for x in out.parent.iterdir()) == ["clip.mp4"]


def test_clip_uses_ts_without_frame_ts(tmp_path: Path) -> None:
    ring = FakeRing(b"data")
    EvidenceWriter(tmp_path).clip(ring, make_incident(frame_ts=None), 2, 2)
    assert ring.calls[0][1:] == (1700000118.0, 1700000122.0)


def test_clip_none_when_ring_has_nothing(tmp_path: Path) -> None:
    w = EvidenceWriter(tmp_path)
    inc = make_incident()
    assert w.clip(FakeRing(None), inc, 5, 5) is None
    assert not w.paths(inc.id).clip.exists()
    assert list(w.paths(inc.id).folder.iterdir()) == []
