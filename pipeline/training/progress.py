"""A Rich progress display fed by Ultralytics trainer callbacks (epochs, batches, losses, val mAP)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    """Two bars (epochs, batches of the current epoch) and a line of the last epoch's numbers.

    Use as a context manager and :meth:`attach` it to the Ultralytics model before ``train``.
    """

    def __init__(self, console: Console | None = None, label: str = "training") -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True),
                                 transient=False)
        self.label = label
        self.epoch_task = self.progress.add_task(f"{label}: epochs", total=None)
        self.batch_task = self.progress.add_task("batches", total=None)
        self.history: list[dict[str, float]] = []
        """Per epoch: epoch, losses and val metrics (what the card reports)."""
        self.final: dict[str, float] = {}
        """Validation of best.pt after the last epoch."""
        self._in_epoch = False

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def attach(self, model: Any) -> None:
        """Register the callbacks on an ``ultralytics.YOLO`` model."""
        model.add_callback("on_train_start", self.on_train_start)
        model.add_callback("on_train_epoch_start", self.on_epoch_start)
        model.add_callback("on_train_batch_end", self.on_batch_end)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def on_train_start(self, trainer: Any) -> None:
        """Set the epoch total (a resumed run starts at its saved epoch)."""
        self.progress.update(self.epoch_task, total=trainer.epochs, completed=trainer.start_epoch)

    def on_epoch_start(self, trainer: Any) -> None:
        """Reset the batch bar."""
        self._in_epoch = True
        self.progress.update(self.batch_task, total=len(trainer.train_loader), completed=0,
                             description=f"epoch {trainer.epoch + 1}/{trainer.epochs}")

    def on_batch_end(self, trainer: Any) -> None:
        """Advance the batch bar, showing the running losses."""
        losses = ""
        tloss = getattr(trainer, "tloss", None)
        if isinstance(tloss, dict):  # Ultralytics >= 8.4: name -> running mean
            losses = " ".join(f"{k} {float(v):.3f}" for k, v in tloss.items())
        elif tloss is not None and hasattr(tloss, "tolist"):  # older: a tensor in loss_names order
            values = tloss.tolist()
            values = values if isinstance(values, list) else [values]
            losses = " ".join(f"{n} {v:.3f}" for n, v in zip(getattr(trainer, "loss_names", ()), values,
                                                            strict=False))
        self.progress.update(self.batch_task, advance=1,
                             description=f"epoch {trainer.epoch + 1}/{trainer.epochs} {losses}")

    def on_fit_epoch_end(self, trainer: Any) -> None:
        """Record the epoch's numbers (or, after the last epoch, the final validation of best.pt)."""
        metrics = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, int | float)}
        ep = trainer.epoch + 1
        if not self._in_epoch:
            self.final = metrics  # Ultralytics' final_eval calls this once more, outside any epoch
            return
        self._in_epoch = False
        self.history.append({"epoch": ep, **metrics})
        m50 = metrics.get("metrics/mAP50(B)", math.nan)
        self.progress.update(self.epoch_task, completed=ep,
                             description=f"{self.label}: epoch {ep}/{trainer.epochs} val mAP50 {m50:.3f}")
