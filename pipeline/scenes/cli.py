"""``gridwatch scene ...``: list scenes, collect crops from a video, train a scene model (docs/scenes.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from pipeline.config import SiteConfig

scene_app = typer.Typer(help="State-classification scenes: collect crops, train, list (docs/scenes.md).",
                        no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site YAML file.")]
DEFAULT_CONFIG = Path("configs/demo.yaml")


def _site(path: Path) -> SiteConfig:
    from pipeline.cli import _load

    return _load(path)


@scene_app.command("list")
def list_scenes(config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Scenes of the config: camera, states, crops collected and labelled, model and its held-out accuracy."""
    from pipeline.scenes.jobs import scene_store

    site = _site(config)
    table = Table("scene", "name", "camera", "states (bad)", "crops", "labelled", "model", "held-out acc.")
    for s in site.scenes:
        store = scene_store(site, s)
        crops = store.crops()
        card = store.card() or {}
        ev = card.get("evaluation") if isinstance(card.get("evaluation"), dict) else {}
        acc = ev.get("accuracy") if isinstance(ev, dict) else None
        model = site.resolve_path(s.model_path())
        table.add_row(s.id, s.name or "", s.camera, ", ".join(f"{x}*" if x in s.bad_states else x for x in s.states),
                      str(len(crops)), str(sum(1 for c in crops if c.state)), "yes" if model.is_file() else "no",
                      f"{acc:.3f}" if isinstance(acc, float) else "-")
    console.print(table)


@scene_app.command("collect")
def collect(video: Annotated[Path, typer.Option("--video", help="Video file of the camera (a recording).")],
            scene: Annotated[str | None, typer.Argument(help="Scene id; omit with --camera for all its scenes.")]
            = None,
            camera: Annotated[str | None, typer.Option("--camera", help="Collect every scene of this camera.")]
            = None,
            every: Annotated[float, typer.Option("--every", help="Seconds of video between crops.")] = 2.0,
            start: Annotated[float | None, typer.Option("--start", help="Unix time of the video's first frame "
                                                         "(names the crops); default: now.")] = None,
            limit: Annotated[int | None, typer.Option("--limit", help="Stop after this many frames.")] = None,
            config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Cut the scene crops out of a recording into each scene's `crops/` folder, for labelling."""
    from pipeline.scenes.jobs import collect_video, find_scene

    site = _site(config)
    try:
        if scene is not None:
            scenes = [find_scene(site, scene)]
        elif camera is not None:
            scenes = [s for s in site.scenes if s.camera == camera]
            if not scenes:
                raise KeyError(f"camera {camera!r} has no scenes")
        else:
            raise KeyError("give a scene id or --camera")
        saved = collect_video(site, scenes, video, every, start if start is not None else round(time.time(), 3),
                              limit)
    except (KeyError, ValueError) as e:
        err.print(f"[red]{e.args[0] if e.args else e}[/]")
        raise typer.Exit(2) from None
    for sid, n in saved.items():
        console.print(f"{sid}: {n} crops -> label them at /scenes/{sid}/label")


@scene_app.command("train")
def train(scene: Annotated[str, typer.Argument(help="Scene id.")],
          backbone: Annotated[Path | None, typer.Option("--backbone", help="YOLO11 ONNX whose first stages are "
                                                         "the features; default: the `coco` model.")] = None,
          augment: Annotated[int, typer.Option("--augment", min=0, max=50, help="Jittered copies per crop.")] = 6,
          holdout: Annotated[float, typer.Option("--holdout", min=0.0, max=0.5, help="Share of each state's "
                                                 "latest crops held out to measure accuracy.")] = 0.25,
          config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Train the scene's classifier on its labelled crops (CPU, no torch) and write model.onnx + card.json."""
    from pipeline.scenes.jobs import find_scene, train_stored

    site = _site(config)
    try:
        card = train_stored(site, find_scene(site, scene), backbone, augment_copies=augment, holdout=holdout)
    except (KeyError, ValueError, FileNotFoundError) as e:
        err.print(f"[red]{e.args[0] if e.args else e}[/]")
        raise typer.Exit(2) from None
    except ImportError as e:
        err.print(f"[red]{e}[/]: training needs the onnx package (pip install -e '.[train]')")
        raise typer.Exit(2) from None
    ev = card.get("evaluation")
    console.print(f"model {card['model']}  crops {card['crops']}  train {card['train_seconds']} s")
    if isinstance(ev, dict) and ev.get("held_out"):
        console.print(f"held-out accuracy {ev['accuracy']:.3f} on {ev['held_out']} crops ({ev['split']}); "
                      f"per state {ev['per_state_accuracy']}")
    else:
        console.print("[yellow]no held-out crops (too few per state): accuracy not measured[/]")


__all__ = ["scene_app"]
