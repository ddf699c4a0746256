"""``gridwatch model ...``: list, evaluate, promote and roll back versioned detector models.

The commands work on ``models/manifest.yaml`` (see :mod:`pipeline.detect.model_versions` for the
versioned format). Training (``gridwatch model train``) is added to the same sub-app by the training
module. Running workers pick up a promotion or rollback without a restart (docs/retraining.md).
"""

from __future__ import annotations

import typer
from rich.console import Console

model_app = typer.Typer(help="Detector models: list, evaluate, promote, rollback (docs/retraining.md).",
                        no_args_is_help=True)
console = Console()
