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
import types
from pathlib import Path
from typing import Any

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


def device() -> str | int:
    import torch

    return 0 if torch.cuda.is_available() else "cpu"


def coco_names() -> dict[int, str]:
    """The 80 COCO class names of the base model, read from ``yolo11n-coco.onnx``'s metadata."""
    import ast

    import onnxruntime as ort

    meta = ort.InferenceSession(str(SHARED / "models" / "yolo11n-coco.onnx"),
                                providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    names = ast.literal_eval(meta["names"])
    return {int(k): str(v) for k, v in names.items()}


def linked_data_yaml(data: str | Path, out_dir: Path, coco_head: bool = False) -> Path:
    """A linked copy of a data set under ``out_dir`` (images symlinked, labels copied), optionally remapped.

    Training always goes through such a copy so that Ultralytics writes its ``labels/*.cache`` files next to
    the copy, never into the shared data set.

    With ``coco_head`` the labels are remapped to the base model's 80 COCO class ids (every class of the set
    must be a COCO class, e.g. vehicles: car/truck/bus/motorcycle/bicycle), so the model keeps its full
    pretrained head and training starts exactly from the COCO model (vehicles val mAP50 0.53) instead of a
    fresh few-class head (a 4-epoch 5-class vehicles run scored 0.13). The exported model then has 80
    classes; gridwatch maps them by name.

    Images are linked, not copied: ``out_dir/images/<split>`` hold one symlink per image of the set and
    ``out_dir/labels/<split>`` the (remapped) label files; Ultralytics finds a label by replacing
    ``/images/`` with ``/labels/`` in the image path as listed.

    Raises:
        ValueError: a class of the set has no COCO class of the same name.
    """
    src_yaml = Path(data).resolve()
    doc = yaml.safe_load(src_yaml.read_text(encoding="utf-8"))
    root = Path(doc.get("path") or src_yaml.parent)
    if not root.is_absolute():
        root = (src_yaml.parent / root).resolve()
    names = doc["names"]
    own = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    if coco_head:
        coco = coco_names()
        by_name = {v: k for k, v in coco.items()}
        missing = sorted(n for n in own.values() if n not in by_name)
        if missing:
            raise ValueError(f"classes {missing} are not COCO classes; --coco-head needs every class in COCO")
        remap = {i: by_name[n] for i, n in own.items()}
        out_names = coco
    else:
        remap = {i: i for i in own}
        out_names = own
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split in ("train", "val", "test"):
        rel = doc.get(split)
        if not rel:
            continue
        img_dir = (root / rel).resolve()
        lab_dir = Path(str(img_dir).replace("/images/", "/labels/").replace("/images", "/labels"))
        # One symlink per image in a real folder: Ultralytics resolve()s the split folder, so a symlinked
        # folder would lead it back to the original labels (and it would write its cache into the set).
        link = out_dir / "images" / split
        if link.is_symlink():
            link.unlink()
        link.mkdir(parents=True, exist_ok=True)
        for old in link.iterdir():
            old.unlink()
        for img in sorted(img_dir.iterdir()):
            (link / img.name).symlink_to(img)
        out_lab = out_dir / "labels" / split
        out_lab.mkdir(parents=True, exist_ok=True)
        for old in out_lab.glob("*.txt"):
            old.unlink()
        for f in lab_dir.glob("*.txt"):
            rows = []
            for line in f.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if parts:
                    rows.append(" ".join([str(remap[int(parts[0])]), *parts[1:]]))
            (out_lab / f.name).write_text("\n".join(rows) + ("\n" if rows else ""), encoding="utf-8")
        splits[split] = f"images/{split}"
    for cache in out_dir.glob("labels/*.cache"):
        cache.unlink()
    out = out_dir / "data.yaml"
    out.write_text(yaml.safe_dump({"path": str(out_dir), **splits, "nc": len(out_names), "names": out_names},
                                  sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def bn_is_folded(model) -> bool:  # type: ignore[no-untyped-def]
    """True when every BatchNorm of ``model`` is a placeholder (mean 0, var ~1, weight 1).

    ``../shared/models/yolo11n-coco.pt`` was recovered from an inference export in which BatchNorm is folded
    into the convolutions: its BN layers hold only the folded bias. Such a model is exact in eval mode, but in
    train mode BatchNorm normalises by the batch statistics instead, which changes the network completely:
    one epoch of fine-tuning at learning rate 0 (BN statistics updates only) took vehicles val mAP50 from 0.57
    to 0.15, and real fine-tuning to 0.00.
    """
    import torch

    bns: list[Any] = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        return bool(bns) and all(
            float(m.running_mean.abs().max()) == 0.0 and float((m.running_var - 1).abs().max()) < 0.01
            and float((m.weight - 1).abs().max()) == 0.0 for m in bns)


def unfold_batchnorm(model, images: list[Path], imgsz: int, batch: int = 8) -> int:  # type: ignore[no-untyped-def]
    """Give placeholder BatchNorm layers real statistics without changing what the model computes.

    Runs ``images`` (letterboxed to ``imgsz``, RGB 0..1) through the model in eval mode, records the mean
    and variance of every BatchNorm input per channel, sets ``running_mean = mu``, ``running_var = var`` and
    rescales ``weight`` / shifts ``bias`` so that the eval-mode output is unchanged (for the shared model's
    placeholders: ``weight = sqrt(var + eps)``, ``bias = bias + mu``); in train mode the batch statistics
    now match the running ones, so fine-tuning starts from the pretrained function. Returns the number of
    BatchNorm layers changed.
    """
    import cv2
    import numpy as np
    import torch

    model = model.float().eval()
    bns: list[Any] = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    stats: dict[int, list] = {i: [0.0, 0.0, 0] for i in range(len(bns))}  # type: ignore[type-arg]

    def hook(i: int):  # type: ignore[no-untyped-def]
        def fn(_mod, inp) -> None:  # type: ignore[no-untyped-def]
            x = inp[0].detach().double()
            s = stats[i]
            s[0] = s[0] + x.sum(dim=(0, 2, 3))
            s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
            s[2] += x.numel() // x.shape[1]
        return fn

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(bns)]
    try:
        for start in range(0, len(images), batch):
            arrs = []
            for p in images[start:start + batch]:
                img = cv2.imread(str(p))
                if img is None:
                    continue
                h, w = img.shape[:2]
                r = imgsz / max(h, w)
                img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_LINEAR)
                canvas = np.full((imgsz, imgsz, 3), 114, np.uint8)
                y0, x0 = (imgsz - img.shape[0]) // 2, (imgsz - img.shape[1]) // 2
                canvas[y0:y0 + img.shape[0], x0:x0 + img.shape[1]] = img
                arrs.append(canvas[:, :, ::-1].transpose(2, 0, 1))
            if arrs:
                with torch.no_grad():
                    model(torch.from_numpy(np.ascontiguousarray(np.stack(arrs))).float() / 255)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for i, m in enumerate(bns):
            total, sq, n = stats[i]
            mu = total / max(n, 1)
            var = (sq / max(n, 1) - mu * mu).clamp_min(1e-6)
            # keep y = (x - m0) / s0 * w0 + b0 while moving the statistics to (mu, var)
            gain = m.weight.double() / (m.running_var.double() + m.eps).sqrt()
            m.bias.add_(((mu - m.running_mean.double()) * gain).float())
            m.weight.copy_((gain * (var + m.eps).sqrt()).float())
            m.running_mean.copy_(mu.float())
            m.running_var.copy_(var.float())
    return len(bns)


def prepare_start_weights(model_path: Path, data_yaml: Path, imgsz: int, out: Path, n_images: int = 128) -> Path:
    """``model_path`` itself, or (when its BatchNorm is folded) a copy with real BN statistics at ``out``.

    Statistics come from ``n_images`` training images of ``data_yaml`` (spread evenly over the split).
    """
    import torch

    ck = torch.load(str(model_path), map_location="cpu", weights_only=False)
    model = ck.get("ema") or ck["model"]
    if not bn_is_folded(model):
        return model_path
    doc = yaml.safe_load(Path(data_yaml).read_text(encoding="utf-8"))
    root = Path(doc["path"])
    train = doc["train"] if isinstance(doc["train"], list) else [doc["train"]]  # a merged set lists several
    imgs = sorted(p for t in train for p in (root / t).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    step = max(1, len(imgs) // n_images)
    n = unfold_batchnorm(model, imgs[::step][:n_images], imgsz)
    ck["model"], ck["ema"] = model, None  # float32: the shifted biases need the precision
    ck["note"] = (str(ck.get("note", "")) + f" | BatchNorm statistics re-estimated on {min(len(imgs), n_images)} "
                  f"images of {data_yaml} by scripts/train.py (the BN layers were folded placeholders)").strip(" |")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, str(out))
    print(f"[train.py] {model_path.name}: BatchNorm folded into the convolutions; re-estimated {n} BN layers "
          f"on {min(len(imgs), n_images)} training images -> {out}", flush=True)
    return out


def pt_from_onnx(onnx_path: Path, base_pt: Path, out: Path) -> Path:
    """A trainable checkpoint with the weights of an Ultralytics-exported ONNX detector (e.g. fire v2).

    Ultralytics exports with BatchNorm fused into each convolution and keeps the parameter names
    (``model.0.conv.weight`` / ``model.0.conv.bias``). The architecture comes from ``base_pt``'s yaml with the
    class count and names of the ONNX metadata; every ``Conv`` gets the fused weight and a placeholder
    BatchNorm (mean 0, var ``1 - eps``, weight 1, bias = fused bias), exact in eval mode and recognised by
    :func:`bn_is_folded`, so :func:`prepare_start_weights` re-estimates real statistics before training.
    Lets a new run continue from a deployed model whose ``.pt`` was not kept.

    Raises:
        ValueError: an ONNX initializer has no parameter of that name and shape, or a parameter stays unset.
    """
    import ast
    import copy

    import onnx
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import DetectionModel

    proto = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    ck: dict[str, Any] = torch.load(str(base_pt), map_location="cpu", weights_only=False)
    base = ck.get("ema") or ck["model"]
    model: Any = DetectionModel(copy.deepcopy(base.yaml), nc=len(names), verbose=False)  # type: ignore[no-untyped-call]
    model = model.float()
    # Ultralytics trains the class branch at the base model's width (80 for COCO, not 64 for 2 classes):
    # DetectionModel.load rebuilds it at the source width, as the trainer did for the ONNX's model.
    model.load(copy.deepcopy(base).float(), verbose=False)
    params = dict(model.named_parameters())
    bufs = dict(model.named_buffers())
    unset = {k for k in params}
    with torch.no_grad():
        for name, w in weights.items():
            if name in params and params[name].shape == w.shape:
                params[name].copy_(w)
                unset.discard(name)
                continue
            stem, _, kind = name.rpartition(".")  # model.i.<...>.conv + weight|bias
            if kind == "bias" and stem.endswith(".conv"):
                bn = stem[: -len("conv")] + "bn"
                if f"{bn}.bias" in params and params[f"{bn}.bias"].shape == w.shape:
                    params[f"{bn}.bias"].copy_(w)
                    params[f"{bn}.weight"].fill_(1.0)
                    eps = dict(model.named_modules())[bn].eps
                    bufs[f"{bn}.running_mean"].zero_()
                    bufs[f"{bn}.running_var"].fill_(1.0 - eps)
                    unset -= {f"{bn}.bias", f"{bn}.weight"}
                    continue
            if name.endswith("dfl.conv.weight"):  # fixed, not a parameter
                continue
            raise ValueError(f"{onnx_path}: initializer {name} {tuple(w.shape)} has no matching parameter")
    if unset:
        raise ValueError(f"{onnx_path}: parameters without an ONNX weight: {sorted(unset)[:5]} ...")
    model.names = names
    model.args = dict(ck.get("train_args") or {})
    ck.update(model=model, ema=None, updates=None, optimizer=None,
              note=f"weights of {Path(onnx_path).name} (BatchNorm fused, placeholders) on {Path(base_pt).name}'s "
                   f"architecture, rebuilt by scripts/_ultralytics_offline.pt_from_onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ck, str(out))
    return out


def merged_data_yaml(datas: list[str | Path], out_dir: Path) -> Path:
    """Several YOLO data sets with the same class names as one: each linked under ``out_dir/<set>``.

    ``train`` and ``val`` become lists of the sets' own split folders, so every set keeps its own val split
    (held out by source) and nothing of one set's val enters the train split.

    Raises:
        ValueError: the sets' class names differ, or two sets have the same folder name.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    names = None
    splits: dict[str, list[str]] = {}
    seen: set[str] = set()
    for data in datas:
        set_name = Path(data).resolve().parent.name
        if set_name in seen:
            raise ValueError(f"two data sets named {set_name}")
        seen.add(set_name)
        sub = yaml.safe_load(linked_data_yaml(data, out_dir / set_name).read_text(encoding="utf-8"))
        if names is not None and sub["names"] != names:
            raise ValueError(f"{data}: classes {sub['names']} differ from {names}")
        names = sub["names"]
        for split in ("train", "val", "test"):
            if split in sub:
                splits.setdefault(split, []).append(f"{set_name}/{sub[split]}")
    out = out_dir / "data.yaml"
    out.write_text(yaml.safe_dump({"path": str(out_dir), **splits, "nc": len(names or {}), "names": names},
                                  sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out
