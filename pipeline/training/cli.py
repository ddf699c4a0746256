"""``gridwatch model train``: fine-tune a candidate from a deployed version on an exported set (docs/retraining.md).

Registered on :data:`pipeline.model_cli.model_app`. Arguments are checked (:func:`~.plan.plan_training`)
before torch is imported, so a wrong call fails in a second with one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def train(hazard: Annotated[str, typer.Option(help="Hazard; the new version is <hazard>@<version>.")],
          base: Annotated[str | None, typer.Option("--from", help="Starting model: NAME@VERSION from the manifest "
                                                   "(e.g. fire@2) or a .onnx / .pt file.")] = None,
          data: Annotated[Path | None, typer.Option(help="Set from `gridwatch dataset export` (OUT/<hazard>) or a "
                                                    "YOLO data.yaml.")] = None,
          epochs: Annotated[int, typer.Option(help="Epochs.")] = 20,
          imgsz: Annotated[int, typer.Option(help="Training and export input size (multiple of 32).")] = 416,
          batch: Annotated[int, typer.Option(help="Batch size.")] = 16,
          workers: Annotated[int, typer.Option(help="Data loader workers.")] = 2,
          seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          patience: Annotated[int, typer.Option(help="Stop after N epochs without val improvement.")] = 50,
          lr0: Annotated[float | None, typer.Option(help="Initial learning rate (default: Ultralytics').")] = None,
          version: Annotated[str | None, typer.Option(help="Version of the candidate (default: next, e.g. v3).")]
          = None,
          resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run of --hazard (and "
                                               "--version) with its saved settings.")] = False,
          new_classes: Annotated[bool, typer.Option("--new-classes", help="Allow classes other than the starting "
                                                    "model's (a new head is trained).")] = False,
          hyp: Annotated[list[str] | None, typer.Option(help="Further Ultralytics train argument KEY=VALUE "
                                                        "(repeatable), e.g. hsv_v=0.5.")] = None,
          runs: Annotated[Path, typer.Option(help="Folder of training runs.")] = Path("runs/train"),
          manifest: Annotated[Path, typer.Option("--manifest", "-m", help="The model manifest.")]
          = Path("models/manifest.yaml"),
          no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress display (logs).")]
          = False) -> None:
    """Fine-tune offline (CUDA when present, else CPU), export ONNX, write a card; register a candidate."""
    from pipeline.training.plan import TrainingError, plan_training, resume_plan

    extra: dict[str, object] = {}
    for kv in hyp or []:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise _fail(f"--hyp {kv!r}: want KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    try:
        if resume:
            if base is not None or data is not None:
                raise TrainingError("--resume continues a run with its saved settings: drop --from and --data")
            plan = resume_plan(hazard, version, runs)
        else:
            if base is None or data is None:
                raise TrainingError("--from and --data are needed (or --resume)")
            plan = plan_training(hazard, base, data, manifest=manifest, epochs=epochs, imgsz=imgsz, batch=batch,
                                 workers=workers, seed=seed, patience=patience, lr0=lr0, version=version, runs=runs,
                                 new_classes=new_classes, hyp=extra)
        from pipeline.training.run import train as run_training

        entry = run_training(plan, resume=resume, console=err, show_progress=not no_progress)
    except (TrainingError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(f"interrupted; continue with: gridwatch model train --hazard {plan.hazard} --version "
                    f"{plan.version} --resume", 130) from None
    metrics = entry.get("metrics") or [{}]
    cand = metrics[0].get("candidate") or {}
    print(f"{plan.label}: {entry['file']} (sha256 {entry['sha256'][:12]}), card {entry.get('card')}; registered as "
          f"a candidate (not deployed). Val: {cand.get('positive_frames_alarmed')} of positive frames alarmed, "
          f"false-alarm rate {cand.get('false_alarm_rate')} at {cand.get('threshold')}. Next: gridwatch model "
          f"evaluate --candidate {plan.label}")
