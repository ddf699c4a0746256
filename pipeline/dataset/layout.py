"""The on-disk form of one hazard's training set, written from its manifest.

::

    <set>/images/{train,val}/<camera>__<ticket id>.jpg   raw frames (the un-annotated frame of the alert)
    <set>/labels/{train,val}/<same stem>.txt             YOLO: ``class cx cy w h`` (0..1); empty: a negative
    <set>/annotations/instances_{train,val}.json         COCO: the same boxes in pixels (``file_name`` = the
                                                         image's name in ``images/<split>/``)
    <set>/data.yaml                                      Ultralytics data file (absolute ``path``)
    <set>/manifest.json                                  classes, counts, cameras per split, every frame's
                                                         source (ticket, verdict), skips, imports

``manifest.json`` is the source of truth: :func:`write_set_files` regenerates the labels, the COCO files,
``data.yaml`` and the counts from its ``frames``, so an import only edits frames and calls it again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

SPLITS = ("train", "val")
MANIFEST = "manifest.json"
IMAGES, LABELS, ANNOTATIONS = "images", "labels", "annotations"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def yolo_lines(boxes: list[dict[str, Any]], classes: list[str]) -> list[str]:
    """YOLO label lines of ``{"label", "xyxy"}`` boxes (labels must be in ``classes``)."""
    out = []
    for b in boxes:
        x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in b["xyxy"])
        out.append(f"{classes.index(b['label'])} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} "
                   f"{x2 - x1:.6f} {y2 - y1:.6f}")
    return out


def coco_document(frames: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """A COCO detection document of ``frames`` (category ids 1.., image ids 1.. in frame order)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, f in enumerate(frames, start=1):
        w, h = int(f["width"]), int(f["height"])
        images.append({"id": image_id, "file_name": f["file"], "width": w, "height": h})
        for b in f["boxes"]:
            x1, y1, x2, y2 = b["xyxy"]
            bw, bh = (x2 - x1) * w, (y2 - y1) * h
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": classes.index(b["label"]) + 1,
                                "bbox": [round(x1 * w, 2), round(y1 * h, 2), round(bw, 2), round(bh, 2)],
                                "area": round(bw * bh, 2), "iscrowd": 0})
    return {"info": {"description": "gridwatch dataset export (operators' verdicts)"},
            "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "hazard"} for i, n in enumerate(classes)]}


def summarise(frames: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Counts per split: images, positives, negatives, boxes per class, cameras."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        fs = [f for f in frames if f["split"] == split]
        boxes = Counter(b["label"] for f in fs for b in f["boxes"])
        out[split] = {"images": len(fs), "positives": sum(1 for f in fs if f["boxes"]),
                      "negatives": sum(1 for f in fs if not f["boxes"]),
                      "boxes": {c: boxes.get(c, 0) for c in classes},
                      "cameras": sorted({f["camera_id"] for f in fs})}
    return out


def write_set_files(set_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """(Re)write labels, COCO files, ``data.yaml``, the counts and ``manifest.json`` from the manifest's frames.

    Returns:
        The manifest with fresh ``counts``.
    """
    classes: list[str] = manifest["classes"]
    frames: list[dict[str, Any]] = manifest["frames"]
    for split in SPLITS:
        lab_dir = set_dir / LABELS / split
        lab_dir.mkdir(parents=True, exist_ok=True)
        (set_dir / IMAGES / split).mkdir(parents=True, exist_ok=True)
        keep = set()
        for f in (f for f in frames if f["split"] == split):
            name = Path(f["file"]).stem + ".txt"
            keep.add(name)
            atomic_write(lab_dir / name, "".join(f"{line}\n" for line in yolo_lines(f["boxes"], classes)))
        for stale in lab_dir.glob("*.txt"):
            if stale.name not in keep:
                stale.unlink()
        for cache in (set_dir / LABELS).glob("*.cache"):
            cache.unlink()  # Ultralytics' label cache would keep the old labels
        doc = coco_document([f for f in frames if f["split"] == split], classes)
        atomic_write(set_dir / ANNOTATIONS / f"instances_{split}.json", json.dumps(doc, indent=1))
    atomic_write(set_dir / "data.yaml", yaml.safe_dump(
        {"path": str(set_dir.resolve()), "train": f"{IMAGES}/train", "val": f"{IMAGES}/val",
         "nc": len(classes), "names": classes}, sort_keys=False, allow_unicode=True))
    manifest["counts"] = summarise(frames, classes)
    atomic_write(set_dir / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def load_manifest(set_dir: Path) -> dict[str, Any]:
    """The manifest of a set written by ``gridwatch dataset export``.

    Raises:
        FileNotFoundError: ``set_dir`` holds no ``manifest.json``.
    """
    path = set_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a set written by `gridwatch dataset export`")
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc
