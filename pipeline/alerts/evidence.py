"""Evidence for alerts: an annotated JPEG snapshot and a short MP4 clip per incident.

Layout (served by the ticket API under ``/evidence/<incident_id>/...``)::

    <evidence_dir>/<incident_id>/snapshot.jpg
    <evidence_dir>/<incident_id>/clip.mp4
    <evidence_dir>/<incident_id>/check-<check_id>.jpg   (camera checks, pipeline/camera_check.py)

Both files are written to a temporary name in the same folder and renamed into place, so a reader
never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.analyze.incident import Hazard, Incident
from pipeline.contract.ids import is_safe_id
from pipeline.ingest.frame import Frame

# BGR colours per hazard (boxes, incident zone).
HAZARD_COLORS: dict[str, tuple[int, int, int]] = {
    Hazard.PARKING.value: (0, 140, 255),   # orange
    Hazard.FIRE.value: (0, 0, 255),        # red
    Hazard.CLUTTER.value: (0, 215, 255),   # yellow
    Hazard.POSTER.value: (255, 0, 255),    # magenta
}
_OTHER_ZONE = (200, 200, 200)


class ClipSource(Protocol):
    """What :meth:`EvidenceWriter.clip` needs from :class:`pipeline.ingest.ring.PacketRing`."""

    def write_clip(self, path: str | Path, start_ts: float, end_ts: float) -> Path | None: ...


def check_incident_id(incident_id: str) -> str:
    """Return the id if it is a safe single path component, else raise ValueError.

    Example:
        >>> check_incident_id("cam1-z1-parking-1700000000-3")
        'cam1-z1-parking-1700000000-3'
        >>> check_incident_id("../etc")
        Traceback (most recent call last):
        ...
        ValueError: unsafe incident id '../etc'
    """
    if not is_safe_id(incident_id):  # the pattern also excludes "." and ".."
        raise ValueError(f"unsafe incident id {incident_id!r}")
    return incident_id


class EvidencePaths:
    """Where one incident's evidence lives."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.snapshot = folder / "snapshot.jpg"
        self.frame = folder / "frame.jpg"  # unannotated: training data once a person verifies the ticket
        self.clip = folder / "clip.mp4"


class EvidenceWriter:
    """Writes annotated snapshots and clips under ``evidence_dir``.

    Args:
        evidence_dir: root folder (created on demand).
        jpeg_quality: 0..100.

    Example:
        >>> import numpy as np, tempfile
        >>> from pipeline.analyze.incident import Hazard, Incident, IncidentBox, IncidentEvent
        >>> from pipeline.ingest.frame import Frame
        >>> inc = Incident("cam1-z1-parking-1", IncidentEvent.OPENED, Hazard.PARKING, "cam1", "z1",
        ...                started_at=0.0, ts=60.0, confidence=0.9,
        ...                boxes=(IncidentBox(0.1, 0.1, 0.5, 0.5, "car", 0.9),))
        >>> frame = Frame("cam1", np.zeros((120, 160, 3), np.uint8), ts=60.0, pts=None, seq=0, keyframe=True)
        >>> zone = np.array([[[0, 40]], [[159, 40]], [[159, 119]], [[0, 119]]], np.int32)
        >>> w = EvidenceWriter(tempfile.mkdtemp())
        >>> w.snapshot(frame, inc, {"z1": zone}).name
        'snapshot.jpg'
    """

    def __init__(self, evidence_dir: str | Path, jpeg_quality: int = 85) -> None:
        self.root = Path(evidence_dir)
        self.jpeg_quality = int(jpeg_quality)

    def paths(self, incident_id: str) -> EvidencePaths:
        """Snapshot and clip paths of an incident (nothing is created)."""
        return EvidencePaths(self.root / check_incident_id(incident_id))

    # -- snapshot --------------------------------------------------------------------------------

    def snapshot(self, frame: Frame, incident: Incident,
                 zone_polygons_px: Mapping[str, np.ndarray] | None = None) -> Path:
        """Save the frame as JPEG twice: annotated (zones, boxes, header) and as captured (``frame.jpg``).

        Args:
            frame: the frame the event is based on.
            incident: the event (boxes in normalised coordinates).
            zone_polygons_px: zone id -> pixel polygon ((N, 2) or (N, 1, 2)); the incident's zone is
                filled in the hazard colour, other zones are outlined in grey.

        Returns:
            ``<evidence_dir>/<incident_id>/snapshot.jpg``.
        """
        paths = self.paths(incident.id)
        for path, img in ((paths.frame, frame.image),
                          (paths.snapshot, annotate(frame.image, incident, zone_polygons_px or {}))):
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            _atomic_write(path, buf.tobytes())
        return paths.snapshot

    def check_snapshot(self, frame: Frame, incident: Incident, check_id: str, title: str,
                       zone_polygons_px: Mapping[str, np.ndarray] | None = None) -> Path:
        """Save the annotated frame of a camera check as ``check-<check_id>.jpg`` in the incident's folder.

        Args:
            frame: the frame the check ended on.
            incident: the checked incident as drawn (its zone is filled; boxes: what the check still saw).
            check_id: the check's id (a safe id; hashed when the file name would get too long).
            title: the header text, e.g. ``CHECK FAILED parking lot-1 / np1``.
            zone_polygons_px: zone id -> pixel polygon, as for :meth:`snapshot`.

        Returns:
            The JPEG's path.
        """
        name = f"check-{check_id}.jpg"
        if not is_safe_id(name):  # too long: a stable short name instead
            name = f"check-{hashlib.sha256(check_id.encode()).hexdigest()[:16]}.jpg"
        path = self.paths(incident.id).folder / name
        img = annotate(frame.image, incident, zone_polygons_px or {}, header=title)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        _atomic_write(path, buf.tobytes())
        return path

    # -- clip ------------------------------------------------------------------------------------

    def clip(self, ring: ClipSource, incident: Incident, pre_s: float, post_s: float) -> Path | None:
        """Remux ``[t - pre_s, t + post_s]`` from the packet ring into ``clip.mp4``.

        ``t`` is the incident's ``frame_ts`` (else ``ts``). Call it once ``post_s`` has elapsed.
        Returns None when the ring has no packets in the range.
        """
        paths = self.paths(incident.id)
        t = incident.frame_ts if incident.frame_ts is not None else incident.ts
        paths.folder.mkdir(parents=True, exist_ok=True)
        # Keep the .mp4 suffix: the muxer picks the container format from the file name.
        fd, tmp_name = tempfile.mkstemp(prefix=".clip-", suffix=".mp4", dir=paths.folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            written = ring.write_clip(tmp, t - pre_s, t + post_s)
            if written is None:
                return None
            src = Path(written)
            if not src.exists() or src.stat().st_size == 0:
                return None
            _fsync_file(src)
            os.replace(src, paths.clip)
            return paths.clip
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def annotate(image: np.ndarray, incident: Incident, zone_polygons_px: Mapping[str, np.ndarray],
             header: str | None = None) -> np.ndarray:
    """A copy of ``image`` (BGR) with zones, boxes and a header bar (``header``, or the event) drawn on it."""
    img = np.ascontiguousarray(image.copy())
    h, w = img.shape[:2]
    color = HAZARD_COLORS.get(str(incident.hazard), (0, 0, 255))
    thick = max(1, round(min(w, h) / 300))
    font_scale = max(0.4, min(w, h) / 900)

    overlay = img.copy()
    polys: list[tuple[np.ndarray, tuple[int, int, int], bool]] = []
    for zone_id, poly in zone_polygons_px.items():
        pts = np.asarray(poly, dtype=np.int32).reshape(-1, 1, 2)
        own = zone_id == incident.zone_id
        polys.append((pts, color if own else _OTHER_ZONE, own))
        if own:
            cv2.fillPoly(overlay, [pts], color)
    img = cv2.addWeighted(overlay, 0.3, img, 0.7, 0)
    for pts, c, own in polys:
        cv2.polylines(img, [pts], isClosed=True, color=c, thickness=thick * (2 if own else 1),
                      lineType=cv2.LINE_AA)

    for b in incident.boxes:
        x1, y1 = int(round(b.x1 * (w - 1))), int(round(b.y1 * (h - 1)))
        x2, y2 = int(round(b.x2 * (w - 1))), int(round(b.y2 * (h - 1)))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thick * 2)
        _label(img, f"{b.label} {b.confidence:.2f}", (x1, y1), color, font_scale, thick)

    when = datetime.fromtimestamp(incident.ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    zone = f" / {incident.zone_id}" if incident.zone_id else ""
    title = header or f"{str(incident.hazard).upper()} {incident.event}"
    header = f"{title}  {incident.camera_id}{zone}  {when}"
    (_, th), base = cv2.getTextSize(header, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    bar_h = min(h, th + base + 8)
    img[:bar_h] = (img[:bar_h].astype(np.float32) * 0.3).astype(np.uint8)
    cv2.rectangle(img, (0, 0), (max(4, bar_h // 3), bar_h - 1), color, -1)
    cv2.putText(img, header, (bar_h // 3 + 6, bar_h - base - 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                (255, 255, 255), thick, cv2.LINE_AA)
    return img


def _label(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int],
           scale: float, thick: int) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    top = y - th - base - 4
    if top < 0:  # no room above the box: put the label inside it
        top = y
    cv2.rectangle(img, (x, top), (x + tw + 4, top + th + base + 4), color, -1)
    cv2.putText(img, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                cv2.LINE_AA)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
