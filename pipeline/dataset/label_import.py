"""Labels back from CVAT / Label Studio into an exported set (``gridwatch dataset import``).

Frames that need relabelling go out to a labelling tool (upload ``images/<split>/``, or the COCO file with
its images) and come back as one of its exports, which this module reads:

* **YOLO**: CVAT "YOLO 1.1" (``obj.names``, ``obj_train_data/*.txt``), CVAT / Ultralytics "YOLO" with a
  ``data.yaml`` ``names``, Label Studio "YOLO" (``classes.txt``, ``labels/*.txt``); a zip or a folder.
* **COCO**: CVAT "COCO 1.0" (``annotations/instances_default.json``), Label Studio "COCO" (``result.json``;
  its ``file_name`` keeps the ``<8 hex>-`` prefix of uploaded files, which is ignored); a zip, a folder or the
  JSON file itself.

Labels are matched to the set's frames **by file name** (the stem ``<camera>__<ticket id>``); the export's
class names are mapped to the set's by name. An export entry without a frame of that name, and a frame
whose labels use a class the set does not have, are reported and change nothing. A matched frame gets the
tool's boxes (none: it becomes a negative), and, when a ticket store is given, the change is also recorded as
a verdict (source ``import:<tool>-<format>``) so the next export keeps it.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker

from pipeline.dataset.layout import load_manifest, write_set_files
from pipeline.tickets.models import Ticket
from pipeline.tickets.verdicts import LabelBox, Verdict, record_verdict

MAX_MEMBER_BYTES = 64 * 1024 * 1024
"""Largest label/annotation file read from an export (images in it are never read)."""
_READ_SUFFIXES = {".txt", ".names", ".yaml", ".yml", ".json"}
_NOT_LABELS = {"train.txt", "valid.txt", "val.txt", "test.txt", "classes.txt"}
_LS_PREFIX = re.compile(r"^[0-9a-f]{8}-")
Boxes = list[dict[str, Any]]


class LabelImportError(ValueError):
    """The export cannot be read (not a YOLO or COCO export, or a broken file)."""


@dataclass
class ParsedExport:
    """Boxes per file stem from a labelling tool's export."""

    format: str
    tool: str
    frames: dict[str, Boxes]
    ignored: list[str] = field(default_factory=list)


@dataclass
class ImportReport:
    """What an import changed, and what it could not use."""

    format: str
    tool: str
    matched: int = 0
    changed: int = 0
    to_negative: int = 0
    to_positive: int = 0
    verdicts_recorded: int = 0
    unmatched: list[str] = field(default_factory=list)
    unknown_labels: dict[str, list[str]] = field(default_factory=dict)
    ignored_files: list[str] = field(default_factory=list)


def frame_key(name: str) -> str:
    """The stem a file name is matched by (Label Studio's upload prefix removed)."""
    return PurePosixPath(name.replace("\\", "/")).stem


def _read_files(path: Path) -> dict[str, bytes]:
    """Relative path -> bytes of the export's text files (a zip, a folder or one file)."""
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix.lower() in _READ_SUFFIXES and p.stat().st_size <= MAX_MEMBER_BYTES}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()
                    and PurePosixPath(i.filename).suffix.lower() in _READ_SUFFIXES and i.file_size <= MAX_MEMBER_BYTES}
    if path.is_file():
        return {path.name: path.read_bytes()}
    raise LabelImportError(f"{path}: no such file or folder")


def _coco_doc(files: dict[str, bytes]) -> tuple[str, dict[str, Any]] | None:
    for name, data in files.items():
        if not name.lower().endswith(".json"):
            continue
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise LabelImportError(f"{name}: not JSON ({exc})") from exc
        if isinstance(doc, dict) and {"images", "annotations", "categories"} <= doc.keys():
            return name, doc
    return None


def _parse_coco(name: str, doc: dict[str, Any]) -> ParsedExport:
    info = doc.get("info") or {}
    tool = "label-studio" if "label studio" in json.dumps(info).lower() or name.endswith("result.json") else \
        "cvat" if "instances_" in name else "coco"
    try:
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        images = {int(i["id"]): i for i in doc["images"]}
        frames: dict[str, Boxes] = {}
        sizes: dict[str, tuple[float, float]] = {}
        for img in images.values():
            key = _ls_stem(frame_key(str(img["file_name"]))) if tool == "label-studio" else frame_key(
                str(img["file_name"]))
            frames[key] = []
            sizes[key] = (float(img.get("width") or 0), float(img.get("height") or 0))
        for a in doc["annotations"]:
            img = images[int(a["image_id"])]
            key = _ls_stem(frame_key(str(img["file_name"]))) if tool == "label-studio" else frame_key(
                str(img["file_name"]))
            w, h = sizes[key]
            if w <= 0 or h <= 0:
                raise LabelImportError(f"{name}: image {img['file_name']} has no width/height")
            x, y, bw, bh = (float(v) for v in a["bbox"])
            frames[key].append({"label": cats[int(a["category_id"])],
                                "xyxy": [x / w, y / h, (x + bw) / w, (y + bh) / h]})
    except LabelImportError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelImportError(f"{name}: not a COCO detection file ({type(exc).__name__}: {exc})") from exc
    return ParsedExport("coco", tool, frames)


def _ls_stem(stem: str) -> str:
    return _LS_PREFIX.sub("", stem, count=1)


def _yolo_names(files: dict[str, bytes]) -> tuple[str, list[str]] | None:
    for name, data in sorted(files.items(), key=lambda kv: kv[0].count("/")):
        base = PurePosixPath(name).name
        if base in ("obj.names", "classes.txt") or base.endswith(".names"):
            tool = "label-studio" if base == "classes.txt" else "cvat"
            return tool, [n.strip() for n in data.decode("utf-8").splitlines() if n.strip()]
        if base in ("data.yaml", "data.yml"):
            names = (yaml.safe_load(data) or {}).get("names")
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names)]
            if names:
                return "ultralytics", [str(n) for n in names]
    return None


def _parse_yolo(files: dict[str, bytes], fallback_names: list[str]) -> ParsedExport:
    found = _yolo_names(files)
    tool, names = found if found else ("yolo", fallback_names)
    frames: dict[str, Boxes] = {}
    ignored: list[str] = []
    for name, data in files.items():
        base = PurePosixPath(name).name
        if not base.endswith(".txt") or base in _NOT_LABELS:
            continue
        boxes: Boxes = []
        try:
            for line in data.decode("utf-8").splitlines():
                if not line.strip():
                    continue
                cls, cx, cy, w, h = line.split()
                k = int(cls)
                if not 0 <= k < len(names):
                    raise ValueError(f"class {k} not in the {len(names)} names")
                fx, fy, fw, fh = float(cx), float(cy), float(w), float(h)
                boxes.append({"label": names[k], "xyxy": [fx - fw / 2, fy - fh / 2, fx + fw / 2, fy + fh / 2]})
        except ValueError as exc:
            ignored.append(f"{name} ({exc})")
            continue
        key = frame_key(name)
        frames[_ls_stem(key) if tool == "label-studio" else key] = boxes
    if not frames:
        raise LabelImportError(f"no usable YOLO label file: {'; '.join(ignored[:5])}" if ignored
                               else "no YOLO label files and no COCO JSON in the export")
    return ParsedExport("yolo", tool, frames, ignored)


def read_export(path: Path, fallback_names: list[str]) -> ParsedExport:
    """Parse a labelling tool's export (see the module docstring).

    Args:
        path: zip, folder or COCO JSON file.
        fallback_names: class names of a YOLO export that ships none (the set's own order).

    Raises:
        LabelImportError: neither a COCO nor a YOLO export, or a broken file.
    """
    files = _read_files(path)
    coco = _coco_doc(files)
    return _parse_coco(*coco) if coco else _parse_yolo(files, fallback_names)


def _clip(boxes: Boxes) -> Boxes:
    out = []
    for b in boxes:
        x1, y1, x2, y2 = (round(min(1.0, max(0.0, v)), 6) for v in b["xyxy"])
        if x2 > x1 and y2 > y1:
            out.append({"label": b["label"], "xyxy": [x1, y1, x2, y2]})
    return out


def import_labels(set_dir: Path, export: Path, sessions: sessionmaker[Session] | None = None,
                  evidence_dir: Path | None = None, actor: str = "import") -> ImportReport:
    """Apply a labelling tool's export to the set in ``set_dir`` (and, with ``sessions``, to the verdicts).

    Raises:
        FileNotFoundError: ``set_dir`` is not an exported set.
        LabelImportError: the export cannot be read.
    """
    manifest = load_manifest(set_dir)
    classes: list[str] = manifest["classes"]
    parsed = read_export(export, classes)
    report = ImportReport(parsed.format, parsed.tool, ignored_files=parsed.ignored)
    by_key = {frame_key(f["file"]): f for f in manifest["frames"]}
    source = f"import:{parsed.tool}-{parsed.format}"
    changed: list[dict[str, Any]] = []
    for key, boxes in sorted(parsed.frames.items()):
        frame = by_key.get(key)
        if frame is None:
            report.unmatched.append(key)
            continue
        unknown = sorted({b["label"] for b in boxes} - set(classes))
        if unknown:
            report.unknown_labels[frame["file"]] = unknown
            continue
        report.matched += 1
        new = _clip(boxes)
        if new == frame["boxes"]:
            continue
        report.changed += 1
        report.to_negative += bool(frame["boxes"]) and not new
        report.to_positive += not frame["boxes"] and bool(new)
        frame.update(boxes=new, corrected=True, source=source,
                     verdict=(Verdict.CONFIRMED if new else Verdict.FALSE_ALARM).value)
        changed.append(frame)
    if sessions is not None and evidence_dir is not None and changed:
        with sessions() as session, session.begin():
            for frame in changed:
                ticket = session.get(Ticket, int(frame["ticket_id"]))
                if ticket is None or ticket.camera_id != frame["camera_id"]:
                    continue
                label_boxes = [LabelBox(b["label"], *b["xyxy"]) for b in frame["boxes"]]
                record_verdict(session, ticket, Verdict(frame["verdict"]), label_boxes or None, evidence_dir, actor,
                               source=source, note=f"imported from {export.name}")
                report.verdicts_recorded += 1
    manifest["imports"].append({
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "file": str(export), "format": parsed.format,
        "tool": parsed.tool, "matched": report.matched, "changed": report.changed,
        "unmatched": report.unmatched, "unknown_labels": report.unknown_labels,
        "ignored_files": report.ignored_files, "verdicts_recorded": report.verdicts_recorded})
    write_set_files(set_dir, manifest)
    return report
