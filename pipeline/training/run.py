"""Run a :class:`~pipeline.training.plan.TrainPlan` with Ultralytics, offline, and register the candidate.

Steps: start weights (an ONNX start model's weights are put back into a trainable ``.pt`` and its folded
BatchNorm re-estimated on training images, docs/detect.md), fine-tune (CUDA device 0 when torch sees one,
else the CPU), export ``best.pt`` to ONNX (opset 17, dynamic axes, class names in the metadata), measure
the candidate and the starting model through gridwatch's own runtime on the set's val split, write the
model card and register ``<hazard>@<version>`` in the manifest as a candidate (the deployed version does not
change: ``gridwatch model evaluate`` / ``promote`` decide that).

The Ultralytics helpers live in ``scripts/_ultralytics_offline.py`` (shared with ``scripts/train.py``): they
keep Ultralytics from downloading anything (fonts, weights) and stand in for a missing torchvision, so this
module runs from a gridwatch checkout with the ``.[train]`` extra installed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console

from pipeline.training.plan import REPO, TrainingError, TrainPlan

IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp"}


def offline_helpers() -> ModuleType:
    """``scripts/_ultralytics_offline.py`` of this checkout, imported.

    Raises:
        TrainingError: not a checkout, or torch / Ultralytics (the ``.[train]`` extra) are not installed.
    """
    scripts = REPO / "scripts"
    if not (scripts / "_ultralytics_offline.py").is_file():
        raise TrainingError(f"{scripts}/_ultralytics_offline.py not found: run training from a gridwatch checkout")
    try:
        importlib.import_module("torch")
        importlib.import_module("ultralytics")
    except ImportError as exc:
        raise TrainingError(f"training needs torch and Ultralytics ({exc}): pip install -e '.[train]'") from None
    if str(scripts) not in sys.path:
        sys.path.insert(0, str(scripts))
    return importlib.import_module("_ultralytics_offline")


def device() -> str | int:
    """CUDA device 0 when torch sees one, else ``cpu``."""
    import torch

    return 0 if torch.cuda.is_available() else "cpu"


def _start_weights(uo: ModuleType, plan: TrainPlan, data_yaml: Path, console: Console) -> Path:
    run = Path(plan.run_dir)
    start = Path(plan.base_file)
    if start.suffix == ".onnx":
        console.print(f"start: {plan.base} ({start.name}) weights into {Path(plan.arch).name}'s architecture")
        start = uo.pt_from_onnx(start, Path(plan.arch), run / "init.pt")
    # A fused/folded BatchNorm wrecks the model in train mode; give it real statistics first (docs/detect.md).
    return Path(uo.prepare_start_weights(start, data_yaml, plan.imgsz, run / "start.pt"))


def _export_onnx(best: Path, out: Path, imgsz: int) -> Path:
    from ultralytics.models.yolo import YOLO

    tmp = Path(tempfile.mkdtemp(prefix="gw-export-")) / best.name
    shutil.copy(best, tmp)  # Ultralytics writes next to the weights
    try:
        f = YOLO(str(tmp), task="detect").export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False,
                                                 opset=17, half=False, nms=False, device="cpu")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, out)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return out


def frame_scores(model: Path, images: list[Path], imgsz: int, threshold: float) -> dict[str, Any]:
    """Frame-level numbers of ``model`` through gridwatch's runtime: positive / negative frames alarmed."""
    import cv2

    from pipeline.detect import YoloDetector

    det = YoloDetector(model, input_size=imgsz, threads=1, min_confidence=threshold)
    pos = neg = pos_hit = neg_hit = 0
    for img_path in images:
        lab = Path(str(img_path.parent).replace("/images", "/labels")) / f"{img_path.stem}.txt"
        positive = lab.is_file() and bool(lab.read_text(encoding="utf-8").strip())
        img = cv2.imread(str(img_path))
        if img is None:
            continue
        hit = len(det.detect(img)) > 0
        pos, pos_hit = pos + positive, pos_hit + (positive and hit)
        neg, neg_hit = neg + (not positive), neg_hit + ((not positive) and hit)
    return {"threshold": threshold, "input_size": imgsz, "positive_frames": pos,
            "positive_frames_alarmed": round(pos_hit / pos, 4) if pos else None, "negative_frames": neg,
            "false_alarm_rate": round(neg_hit / neg, 4) if neg else None}


def val_images(data_yaml: Path) -> list[Path]:
    """The val split's images of a YOLO data.yaml."""
    import yaml

    doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(doc.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    dirs = doc["val"] if isinstance(doc["val"], list) else [doc["val"]]
    return [p for d in dirs for p in sorted((root / d).iterdir()) if p.suffix.lower() in IMG_EXT]


def train(plan: TrainPlan, *, resume: bool = False, console: Console | None = None,
          show_progress: bool = True) -> dict[str, Any]:
    """Train, export, measure, write the card and register the candidate; returns the manifest entry.

    Raises:
        TrainingError: torch / Ultralytics missing, or the run produced no weights.
    """
    from pipeline.training.card import register_candidate
    from pipeline.training.progress import TrainProgress

    console = console or Console(stderr=True)
    os.environ.setdefault("YOLO_VERBOSE", "False")  # the Rich display replaces Ultralytics' own bars
    uo = offline_helpers()
    uo.setup()
    import torch
    from ultralytics.models.yolo import YOLO

    torch.set_flush_denormal(True)  # denormals in fine-tuning's backward pass are ~100x slower on x86 CPUs
    dev = device()
    run = Path(plan.run_dir)
    t0 = time.time()
    if resume:
        model = YOLO(str(run / "weights" / "last.pt"), task="detect")
        kwargs: dict[str, Any] = {"resume": True, "device": dev, "workers": plan.workers}
    else:
        plan.save()
        data = uo.linked_data_yaml(plan.data_yaml, run.parent / f"{run.name}.data")
        start = _start_weights(uo, plan, data, console)
        model = YOLO(str(start), task="detect")
        extra: dict[str, Any] = dict(plan.hyp)
        if plan.lr0 is not None:
            extra["lr0"] = plan.lr0
        if not plan.new_classes:
            # A kept head needs no bias warm-up: lr 0.1 on the biases wiped a kept head out (scripts/train.py).
            extra.setdefault("warmup_bias_lr", 0.0)
        kwargs = {"data": str(data), "imgsz": plan.imgsz, "epochs": plan.epochs, "batch": plan.batch,
                  "workers": plan.workers, "device": dev, "amp": False, "plots": False, "project": str(run.parent),
                  "name": run.name, "exist_ok": True, "patience": plan.patience, "seed": plan.seed,
                  "verbose": False, **extra}
    console.print(f"training {plan.label} from {plan.base} on {plan.data_yaml} ({'resumed, ' if resume else ''}"
                  f"device {'cuda:0' if dev == 0 else 'cpu'}, imgsz {plan.imgsz})", highlight=False)
    progress = TrainProgress(console, plan.label)
    progress.attach(model)
    if show_progress:
        with progress:
            model.train(**kwargs)
    else:
        model.train(**kwargs)
    best = run / "weights" / "best.pt"
    if not best.is_file():
        raise TrainingError(f"{run}: training left no weights/best.pt")
    minutes = (time.time() - t0) / 60
    onnx = _export_onnx(best, Path(plan.onnx), plan.imgsz)
    threshold = plan.base_threshold if plan.base_threshold is not None else 0.25
    imgs = val_images(Path(plan.data_yaml))
    runtime = {"candidate": frame_scores(onnx, imgs, plan.imgsz, threshold)}
    if Path(plan.base_file).suffix == ".onnx":
        # the starting model as deployed: at its own input size
        runtime["start"] = frame_scores(Path(plan.base_file), imgs, plan.base_input_size or plan.imgsz, threshold)
    import ultralytics

    env = {"device": "cuda:0" if dev == 0 else "cpu", "minutes": round(minutes, 2), "torch": str(torch.__version__),
           "ultralytics": str(ultralytics.__version__),
           "gpu": torch.cuda.get_device_name(0) if dev == 0 else None}
    entry = register_candidate(plan, onnx, progress.history, progress.final, runtime, env)
    (run / "done.json").write_text(json.dumps({"entry": entry["version"], "onnx": str(onnx)}), encoding="utf-8")
    return entry
