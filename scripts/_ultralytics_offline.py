"""Run Ultralytics fully offline and without a working torchvision (shared by train.py / export.py).

Call :func:`setup` before ``import ultralytics``. It reuses ``offline_ultralytics_env`` and
``torchvision_stub`` from ``record_yolo_reference.py`` (font in ``YOLO_CONFIG_DIR``, ``YOLO_OFFLINE=1``,
fake ``torchvision`` whose ``ops.nms`` is Ultralytics' pure-torch NMS) and adds the members that
*training* touches beyond predict: ``torchvision.ops.boxes`` / ``box_iou``, ``torchvision.transforms``
(only used by classification augmentations, never by detection) and ``torchvision.datasets`` — as empty
modules so ``import`` succeeds. A real torchvision, when it imports, is used unchanged.
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

import yaml

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
SHARED = REPO.parent / "shared"
BASE_PT = SHARED / "models" / "yolo11n-coco.pt"


def setup() -> None:
    sys.path.insert(0, str(SCRIPTS))
    from record_yolo_reference import offline_ultralytics_env, torchvision_stub

    offline_ultralytics_env()
    torchvision_stub()
    tv = sys.modules.get("torchvision")
    if tv is None or getattr(tv, "__file__", None):  # real torchvision in use
        return
    ops = sys.modules["torchvision.ops"]

    def box_iou(a, b):  # type: ignore[no-untyped-def]
        from ultralytics.utils.metrics import box_iou as _iou

        return _iou(a, b)

    ops.box_iou = box_iou  # type: ignore[attr-defined]
    boxes = types.ModuleType("torchvision.ops.boxes")
    boxes.nms = ops.nms  # type: ignore[attr-defined]
    boxes.box_iou = box_iou  # type: ignore[attr-defined]
    ops.boxes = boxes  # type: ignore[attr-defined]
    sys.modules["torchvision.ops.boxes"] = boxes
    for sub in ("transforms", "transforms.functional", "datasets", "models", "utils", "io"):
        name = "torchvision." + sub
        if name not in sys.modules:
            m = types.ModuleType(name)
            sys.modules[name] = m
            parent, _, leaf = name.rpartition(".")
            setattr(sys.modules[parent], leaf, m)


def absolute_data_yaml(data: str | Path, out: Path | None = None) -> Path:
    """Copy a YOLO data yaml with relative paths to ``out`` (default: a temp file) with an absolute ``path:``.

    train.py keeps it next to the run (``runs/train/<name>.data.yaml``) so that ``--resume`` still finds it.
    """
    data = Path(data).resolve()
    doc = yaml.safe_load(data.read_text(encoding="utf-8"))
    root = Path(doc.get("path") or data.parent)
    if not root.is_absolute():
        root = (data.parent / root).resolve()
    doc["path"] = str(root)
    out = out or Path(tempfile.mkdtemp(prefix="gw-data-")) / data.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def device() -> str | int:
    import torch

    return 0 if torch.cuda.is_available() else "cpu"
