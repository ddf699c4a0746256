#!/usr/bin/env python3
"""Export a trained YOLO ``.pt`` to ONNX for gridwatch, optionally with a static INT8 (QDQ) copy.

    nice -n 19 /tmp/ultra-venv/bin/python scripts/export.py --weights runs/train/fire/weights/best.pt \
        --out models/fire.onnx --imgsz 416 --int8 --calib-data ../shared/datasets/fire/data.yaml

- fp32: Ultralytics ``format="onnx"``, opset 17, dynamic axes (batch and spatial; gridwatch letterboxes to a
  square ``input_size``), class names in the ONNX metadata key ``names``. Output ``[batch, 4 + nc, anchors]``,
  no NMS in the graph — the contract of ``pipeline.detect.YoloDetector``.
- ``--int8``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, uint8
  activations, MinMax calibration) on ``--calib-n`` real training images letterboxed exactly like gridwatch
  (``pipeline.detect.letterbox``). The Detect head's post-processing stays fp32: every non-Conv node of the
  Detect module (per-scale Concat, Reshape, Split, DFL Softmax/Conv, dist2bbox Sub/Add/Mul/Div, Sigmoid,
  final Concat) and the last 1x1 conv of each box/class branch are in ``nodes_to_exclude``; quantizing them
  collapses the class scores. Writes ``<out stem>-int8.onnx`` and prints fp32-vs-INT8 agreement on val images
  (scripts/evaluate.py measures the AP change).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parent.parent


def export_fp32(weights: Path, out: Path, imgsz: int) -> Path:
    import _ultralytics_offline as uo

    uo.setup()
    from ultralytics import YOLO

    tmp = Path(tempfile.mkdtemp(prefix="gw-export-")) / weights.name
    shutil.copy(weights, tmp)  # Ultralytics writes next to the weights
    model = YOLO(str(tmp), task="detect")
    f = model.export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False, opset=17, half=False,
                     nms=False, device="cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(f, out)
    print(f"[export.py] fp32 ONNX: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def head_nodes_to_exclude(model_path: Path) -> list[str]:
    """Nodes of the Detect module that must stay fp32: all but its inner convs."""
    import onnx

    g = onnx.load(str(model_path)).graph
    # The Detect module is the last "/model.<i>/" prefix in the graph.
    idx = max(int(n.name.split("/")[1].split(".")[1]) for n in g.node
              if n.name.startswith("/model.") and n.name.split("/")[1].split(".")[1].isdigit())
    prefix = f"/model.{idx}/"
    names = []
    for n in g.node:
        if not n.name.startswith(prefix) or n.op_type == "Constant":
            continue
        branch = re.match(re.escape(prefix) + r"cv[23]\.\d+/", n.name)
        last_branch_conv = n.op_type == "Conv" and re.search(r"/cv[23]\.\d+\.2/Conv$", n.name)
        if not branch or last_branch_conv:
            names.append(n.name)  # post-processing, DFL, and the convs producing raw box/class logits
    return names


class LetterboxReader:
    """CalibrationDataReader feeding letterboxed real images, one per call."""

    def __init__(self, images: list[Path], imgsz: int, input_name: str) -> None:
        self.images, self.imgsz, self.input_name = list(images), imgsz, input_name
        self._it = iter(self.images)

    def get_next(self):  # type: ignore[no-untyped-def]
        import cv2

        from pipeline.detect.letterbox import letterbox, to_input_tensor

        for p in self._it:
            img = cv2.imread(str(p))
            if img is None:
                continue
            lb, _ = letterbox(img, self.imgsz)
            return {self.input_name: to_input_tensor([lb])}
        return None

    def rewind(self) -> None:
        self._it = iter(self.images)


def split_images(data_yaml: Path, split: str) -> list[Path]:
    import yaml

    data_yaml = data_yaml.resolve()
    doc = yaml.safe_load(data_yaml.read_text())
    root = Path(doc.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    dirs = doc[split] if isinstance(doc[split], list) else [doc[split]]  # a merged set lists several folders
    exts = {".jpg", ".jpeg", ".png", ".bmp"}
    return [p for d in dirs for p in sorted((root / d).iterdir()) if p.suffix.lower() in exts]


def quantize(fp32: Path, out: Path, calib: list[Path], imgsz: int) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(tempfile.mkdtemp(prefix="gw-q-")) / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    exclude = head_nodes_to_exclude(pre)
    inp = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    print(f"[export.py] INT8: calibrating on {len(calib)} images, {len(exclude)} head nodes kept fp32")
    quantize_static(str(pre), str(out), LetterboxReader(calib, imgsz, inp), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude)
    # keep the metadata (class names) of the fp32 model
    import onnx

    src, q = onnx.load(str(fp32)), onnx.load(str(out))
    del q.metadata_props[:]
    q.metadata_props.extend(src.metadata_props)
    onnx.save(q, str(out))
    print(f"[export.py] INT8 ONNX: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out


def agreement(fp32: Path, int8: Path, images: list[Path], imgsz: int, conf: float) -> None:
    import cv2

    from pipeline.detect import YoloDetector
    from pipeline.detect.nms import box_iou

    a = YoloDetector(fp32, input_size=imgsz, threads=1, min_confidence=conf)
    b = YoloDetector(int8, input_size=imgsz, threads=1, min_confidence=conf)
    na = nb = matched = 0
    diffs = []
    for p in images:
        img = cv2.imread(str(p))
        da, db = a.detect(img), b.detect(img)
        na, nb = na + len(da), nb + len(db)
        used = set()
        for box, s, c in da:
            cand = [j for j in range(len(db)) if db.class_id[j] == c and j not in used]
            if not cand:
                continue
            ious = box_iou(box, db.xyxy[cand])
            k = int(np.argmax(ious))
            if ious[k] >= 0.5:
                used.add(cand[k])
                matched += 1
                diffs.append(abs(float(s) - float(db.confidence[cand[k]])))
    print(f"[export.py] agreement on {len(images)} val images at conf {conf}: fp32 {na} boxes, INT8 {nb}, "
          f"matched {matched} (IoU>=0.5, same class), mean |score diff| "
          f"{np.mean(diffs) if diffs else float('nan'):.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, help="trained .pt (omit with --skip-fp32)")
    ap.add_argument("--out", type=Path, required=True, help="fp32 ONNX path, e.g. models/fire.onnx")
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--int8", action="store_true", help="also write <stem>-int8.onnx")
    ap.add_argument("--calib-data", type=Path, help="data yaml whose train images calibrate INT8")
    ap.add_argument("--calib-n", type=int, default=200)
    ap.add_argument("--conf", type=float, default=0.25, help="threshold for the agreement check")
    ap.add_argument("--skip-fp32", action="store_true", help="reuse an existing --out")
    args = ap.parse_args(argv)

    if not args.skip_fp32:
        if not args.weights or not args.weights.is_file():
            ap.error("--weights must be a local .pt file")
        export_fp32(args.weights.resolve(), args.out, args.imgsz)
    if args.int8:
        if not args.calib_data:
            ap.error("--int8 needs --calib-data")
        imgs = split_images(args.calib_data, "train")
        random.Random(0).shuffle(imgs)
        q = args.out.with_name(args.out.stem + "-int8.onnx")
        quantize(args.out, q, imgs[: args.calib_n], args.imgsz)
        agreement(args.out, q, split_images(args.calib_data, "val")[:40], args.imgsz, args.conf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
