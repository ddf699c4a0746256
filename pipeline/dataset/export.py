"""Operators' verdicts -> one YOLO + COCO training set per hazard, split by camera (docs/retraining.md).

Each judged ticket (:func:`pipeline.tickets.verdicts.labelled_frames`) contributes its raw frame: a
confirmed alert with its boxes (corrected ones when a person gave them, else the alert's), a false alarm as
a negative (an empty label file: exactly what teaches a detector its site's false alarms).

The split is **by camera**: a camera's frames are all in train or all in val, so the val numbers say how
the model does on a camera it was not trained on. A camera goes to val when the hash of its id falls under
``val_fraction`` (stable: re-exporting never moves a camera), with at least one camera in each split when
there are two or more; ``val_cameras`` names them instead.

Frames that cannot be used are counted by reason in the manifest (``skipped``), never silently lost:
``no_frame`` (no raw frame stored, or it expired), ``frame_changed`` (the stored frame is not the one the
verdict was given on), ``unreadable_frame``, ``no_box_of_classes`` (a confirmed alert none of whose boxes is
of the set's classes; ``dropped_boxes`` counts those boxes by label).
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from pipeline.dataset.layout import ANNOTATIONS, IMAGES, LABELS, SPLITS, write_set_files
from pipeline.tickets.verdicts import RAW_FRAME, LabelledFrame, Verdict, labelled_frames

FrameLoader = Callable[[LabelledFrame], bytes | None]
"""Returns the raw frame (JPEG bytes) of a labelled ticket, None when it is not stored."""


@dataclass
class HazardExport:
    """What an export wrote for one hazard."""

    hazard: str
    folder: Path
    manifest: dict[str, Any]
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def counts(self) -> dict[str, Any]:
        """Per split: images, positives, negatives, boxes per class, cameras."""
        counts: dict[str, Any] = self.manifest["counts"]
        return counts


def camera_fraction(camera_id: str) -> float:
    """A stable number in [0, 1) for a camera id (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(camera_id.encode()).digest()[:8], "big") / 2**64


def split_by_camera(cameras: Iterable[str], val_fraction: float,
                    val_cameras: Iterable[str] | None = None) -> dict[str, str]:
    """Camera id -> ``train`` or ``val``.

    Args:
        cameras: the cameras of the set.
        val_fraction: share of cameras (by hash) that go to val.
        val_cameras: these cameras and no others go to val (overrides ``val_fraction``).

    Raises:
        ValueError: a camera of ``val_cameras`` has no frame in the set.
    """
    cams = sorted(set(cameras), key=camera_fraction)
    if val_cameras is not None:
        wanted = set(val_cameras)
        if unknown := sorted(wanted - set(cams)):
            raise ValueError(f"--val-camera {', '.join(unknown)}: no frame of that camera in the set")
        return {c: "val" if c in wanted else "train" for c in cams}
    split = {c: "val" if camera_fraction(c) < val_fraction else "train" for c in cams}
    if len(cams) >= 2 and val_fraction > 0:
        if "val" not in split.values():
            split[cams[0]] = "val"  # the camera with the lowest hash: the next one to fall under the fraction
        if "train" not in split.values():
            split[cams[-1]] = "train"
    return split


def db_source(sessions: sessionmaker[Session], evidence_dir: Path,
              hazards: list[str] | None) -> tuple[list[LabelledFrame], FrameLoader]:
    """The judged tickets of a ticket store and a loader of their raw frames from ``evidence_dir``."""
    with sessions() as session:
        frames = labelled_frames(session, hazards)

    def load(frame: LabelledFrame) -> bytes | None:
        path = evidence_dir / frame.incident_id / RAW_FRAME
        return path.read_bytes() if path.is_file() else None

    return frames, load


def _image_size(data: bytes) -> tuple[int, int] | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if img is None else (int(img.shape[1]), int(img.shape[0]))


def _fresh_set_dir(folder: Path) -> None:
    """Remove what an earlier export wrote (only the set's own files and folders)."""
    for sub in (IMAGES, LABELS, ANNOTATIONS):
        if (folder / sub).is_dir():
            shutil.rmtree(folder / sub)
    for name in ("data.yaml", "manifest.json"):
        (folder / name).unlink(missing_ok=True)


def export_hazard(frames: list[LabelledFrame], load: FrameLoader, hazard: str, folder: Path,
                  classes: list[str] | None = None, val_fraction: float = 0.2,
                  val_cameras: Iterable[str] | None = None, sources: dict[str, Any] | None = None) -> HazardExport:
    """Write the set of one hazard into ``folder`` (replacing an earlier export there).

    Args:
        frames: labelled tickets (other hazards are ignored).
        load: raw frame loader.
        hazard: the hazard.
        folder: output folder of this hazard's set.
        classes: class names in model order; default: the labels of the confirmed boxes, sorted.
        val_fraction: share of cameras in val (see :func:`split_by_camera`).
        val_cameras: explicit val cameras.
        sources: where the frames came from (recorded in the manifest).
    """
    own = [f for f in frames if f.hazard == hazard]
    if classes is None:
        classes = sorted({b.label for f in own for b in f.boxes})
    split = split_by_camera((f.camera_id for f in own), val_fraction, val_cameras)
    _fresh_set_dir(folder)
    skipped: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    entries: list[dict[str, Any]] = []
    for f in own:
        boxes = [b.as_json() for b in f.boxes if b.label in classes]
        dropped.update(b.label for b in f.boxes if b.label not in classes)
        if f.verdict is Verdict.CONFIRMED and not boxes:
            skipped["no_box_of_classes"] += 1
            continue
        data = load(f)
        if data is None:
            skipped["no_frame"] += 1
            continue
        if f.frame_sha256 is not None and hashlib.sha256(data).hexdigest() != f.frame_sha256:
            skipped["frame_changed"] += 1
            continue
        size = _image_size(data)
        if size is None:
            skipped["unreadable_frame"] += 1
            continue
        name = f"{f.camera_id}__{f.ticket_id}.jpg"
        s = split[f.camera_id]
        (folder / IMAGES / s).mkdir(parents=True, exist_ok=True)
        (folder / IMAGES / s / name).write_bytes(data)
        entries.append({"file": name, "split": s, "width": size[0], "height": size[1], "boxes": boxes,
                        "ticket_id": f.ticket_id, "incident_id": f.incident_id, "camera_id": f.camera_id,
                        "verdict": f.verdict.value, "corrected": f.corrected, "source": f.source})
    warnings = []
    if len(split) < 2:
        warnings.append(f"only {len(split)} camera(s): no camera-held-out val split")
    manifest: dict[str, Any] = {
        "format": "gridwatch-dataset/1", "hazard": hazard, "classes": classes,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "split": {"by": "camera", "val_fraction": val_fraction,
                  "val_cameras": sorted(c for c, v in split.items() if v == "val")},
        "sources": sources or {}, "skipped": dict(skipped), "dropped_boxes": dict(dropped),
        "warnings": warnings, "imports": [], "frames": entries}
    return HazardExport(hazard, folder, write_set_files(folder, manifest), skipped)


def export_sets(frames: list[LabelledFrame], load: FrameLoader, out: Path, hazards: list[str] | None = None,
                classes: dict[str, list[str]] | None = None, val_fraction: float = 0.2,
                val_cameras: Iterable[str] | None = None,
                sources: dict[str, Any] | None = None) -> list[HazardExport]:
    """One set per hazard under ``out/<hazard>/`` (every hazard with a judged ticket unless ``hazards``)."""
    chosen = hazards or sorted({f.hazard for f in frames})
    cams = None if val_cameras is None else list(val_cameras)
    if cams is not None and (unknown := sorted(set(cams) - {f.camera_id for f in frames if f.hazard in chosen})):
        raise ValueError(f"--val-camera {', '.join(unknown)}: no frame of that camera in the export")
    results = []
    for h in chosen:
        own_cams = None if cams is None else [c for c in cams if any(f.camera_id == c and f.hazard == h
                                                                      for f in frames)]
        results.append(export_hazard(frames, load, h, out / h, (classes or {}).get(h), val_fraction,
                                     own_cams, sources))
    return results


__all__ = ["SPLITS", "HazardExport", "camera_fraction", "db_source", "export_hazard", "export_sets",
           "split_by_camera"]
