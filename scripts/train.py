#!/usr/bin/env python3
"""Fine-tune YOLO (Ultralytics) on a YOLO-format data yaml, fully offline.

Run with the Ultralytics venv (docs/detect.md), under ``nice`` on a shared machine::

    nice -n 19 /tmp/ultra-venv/bin/python scripts/train.py --data ../shared/datasets/fire/data.yaml \
        --name fire --imgsz 416 --epochs 20
    nice -n 19 /tmp/ultra-venv/bin/python scripts/train.py --name fire --resume   # after an interruption

Several ``--data`` sets with the same classes train together; each keeps its own val split
(``_ultralytics_offline.merged_data_yaml``). ``--init-onnx`` continues from a deployed ONNX model whose
``.pt`` was not kept (``pt_from_onnx``; its fused BatchNorm is re-estimated like the base model's)::

    nice -n 19 python scripts/train.py --data ../shared/datasets/fire/data.yaml \
        ../shared/datasets/fire2/data.yaml --init-onnx models/fire.onnx --name fire3 --imgsz 512 --epochs 12

Starts from ``../shared/models/yolo11n-coco.pt`` (a local file: a bare model name would be downloaded).
Uses CUDA device 0 when torch sees one, else the CPU. ``amp=False`` and ``plots=False`` keep it offline.
Runs go to ``runs/train/<name>`` (ignored by git); the best weights are ``runs/train/<name>/weights/best.pt``.
Progress (epoch, losses, mAP) is printed per epoch.

``--coco-head`` (for sets whose classes are all COCO classes, e.g. vehicles) remaps the labels to COCO ids
so the pretrained 80-class head is fine-tuned instead of replaced::

    nice -n 19 /tmp/ultra-venv/bin/python scripts/train.py --data ../shared/datasets/vehicles/data.yaml \
        --name vehicles --coco-head --imgsz 640 --epochs 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ultralytics_offline as uo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", help="YOLO data yaml(s) (relative paths fine); several are merged")
    ap.add_argument("--name", required=True, help="run name, e.g. fire")
    ap.add_argument("--model", default=str(uo.BASE_PT), help="starting .pt (local file)")
    ap.add_argument("--imgsz", type=int, default=416)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patience", type=int, default=50)
    ap.add_argument("--fraction", type=float, default=1.0, help="fraction of the train set (timing runs)")
    ap.add_argument("--project", default=str(uo.REPO / "runs" / "train"))
    ap.add_argument("--resume", action="store_true", help="continue runs/train/<name>/weights/last.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--coco-head", action="store_true",
                    help="remap labels to the base model's COCO ids and keep its 80-class head "
                         "(every class of the set must be a COCO class, e.g. vehicles)")
    ap.add_argument("--lr0", type=float, default=None, help="initial learning rate (Ultralytics default 0.01)")
    ap.add_argument("--keep-folded-bn", action="store_true",
                    help="train the starting model as is even if its BatchNorm is folded (see "
                         "_ultralytics_offline.bn_is_folded: the shared base model's is, and training it as is "
                         "wrecks it)")
    ap.add_argument("--close-mosaic", type=int, default=10, help="last N epochs without mosaic augmentation")
    ap.add_argument("--freeze", type=int, default=None, help="freeze the first N layers (10 = the backbone)")
    ap.add_argument("--optimizer", default="auto", help="Ultralytics optimizer (auto, SGD, AdamW, ...)")
    ap.add_argument("--init-onnx", type=Path, help="start from this Ultralytics-exported ONNX model's weights "
                    "(architecture from --model)")
    ap.add_argument("--hours", type=float, default=None, help="train for this long instead of --epochs "
                    "(Ultralytics `time`: the epoch count and LR schedule are fitted after the first epoch)")
    ap.add_argument("--no-val", action="store_true", help="validate only after the last epoch (saves ~10 %% "
                    "on CPU; best.pt is then the last epoch, not chosen on the val split)")
    ap.add_argument("--hyp", nargs="*", default=[], metavar="KEY=VALUE",
                    help="further Ultralytics train arguments (augmentation: hsv_v=0.5 mixup=0.1 ...)")
    args = ap.parse_args(argv)

    uo.setup()
    from ultralytics.models.yolo import YOLO

    dev = uo.device()
    import torch

    # Fine-tuning a converged model makes denormal floats in the backward pass; on x86 CPUs they are
    # ~100x slower (a kept-head vehicles epoch took 3x longer than the collapsed run's). Flush them to 0.
    torch.set_flush_denormal(True)
    t0 = time.time()

    def on_epoch_end(trainer) -> None:  # type: ignore[no-untyped-def]
        m = trainer.metrics or {}
        el = time.time() - t0
        ep = trainer.epoch + 1
        if ep > trainer.epochs:  # the final validation of best.pt
            print(f"[train.py] final validation of best.pt: mAP50={m.get('metrics/mAP50(B)', float('nan')):.3f} "
                  f"mAP50-95={m.get('metrics/mAP50-95(B)', float('nan')):.3f}", flush=True)
            return
        print(f"[train.py] epoch {ep}/{trainer.epochs} {el / 60:.1f} min "
              f"(~{el / ep * (trainer.epochs - ep) / 60:.1f} min left) "
              f"mAP50={m.get('metrics/mAP50(B)', float('nan')):.3f} "
              f"mAP50-95={m.get('metrics/mAP50-95(B)', float('nan')):.3f}", flush=True)

    if args.resume:
        last = Path(args.project) / args.name / "weights" / "last.pt"
        if not last.is_file():
            ap.error(f"nothing to resume: {last} missing")
        model = YOLO(str(last), task="detect")
        model.add_callback("on_fit_epoch_end", on_epoch_end)
        model.train(resume=True, device=dev, workers=args.workers)
    else:
        if not args.data:
            ap.error("--data is required unless --resume")
        model_path = Path(args.model).resolve()
        if not model_path.is_file():
            ap.error(f"model {model_path} is not a local file (bare names would be downloaded)")
        data_dir = Path(args.project) / f"{args.name}.data"
        if len(args.data) > 1:
            if args.coco_head:
                ap.error("--coco-head takes one --data")
            data = uo.merged_data_yaml(args.data, data_dir)
        else:
            data = uo.linked_data_yaml(args.data[0], data_dir, coco_head=args.coco_head)
        if args.init_onnx:
            model_path = uo.pt_from_onnx(args.init_onnx, model_path, Path(args.project) / f"{args.name}.init.pt")
        if not args.keep_folded_bn:
            model_path = uo.prepare_start_weights(model_path, data, args.imgsz,
                                                  Path(args.project) / f"{args.name}.start.pt")
        extra: dict[str, object] = {"lr0": args.lr0} if args.lr0 is not None else {}
        for kv in args.hyp:
            key, sep, value = kv.partition("=")
            if not sep:
                ap.error(f"--hyp {kv!r}: expected KEY=VALUE")
            extra[key] = yaml.safe_load(value)
        if args.freeze is not None:
            extra["freeze"] = args.freeze
        if args.hours is not None:
            extra["time"] = args.hours
        if args.coco_head or args.init_onnx:
            # Ultralytics warms the biases up from lr 0.1; with AdamW (its choice for short runs) that moves
            # every pretrained class bias by ~0.1 per step and wiped the kept head out (val mAP50 0.57 -> 0.00
            # after one epoch; a 1-epoch probe from fire v2 via --init-onnx fell from ~0.4 to 0.03).
            # A kept head needs no bias warm-up.
            extra["warmup_bias_lr"] = 0.0
        model = YOLO(str(model_path), task="detect")
        model.add_callback("on_fit_epoch_end", on_epoch_end)
        model.train(data=str(data), imgsz=args.imgsz, epochs=args.epochs, batch=args.batch,
                    workers=args.workers, device=dev, amp=False, plots=False, project=args.project,
                    name=args.name, exist_ok=True, patience=args.patience, seed=args.seed,
                    fraction=args.fraction, verbose=True, val=not args.no_val, optimizer=args.optimizer,
                    close_mosaic=args.close_mosaic, **extra)
    best = Path(args.project) / args.name / "weights" / "best.pt"
    print(f"[train.py] done in {(time.time() - t0) / 60:.1f} min on {dev}; best weights: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
