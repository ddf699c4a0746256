"""``gridwatch dataset ...``: training sets from operators' verdicts, and labels back from labelling tools.

* ``export``: one YOLO + COCO set per hazard from the ticket store's verdicts (:mod:`pipeline.dataset.export`).
* ``import``: labels from a CVAT / Label Studio export (YOLO or COCO) into such a set, and, with ``--config``,
  into the ticket store as verdicts (:mod:`pipeline.dataset.label_import`).

Walk-through: docs/retraining.md.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

dataset_app = typer.Typer(help="Training sets from operators' verdicts (docs/retraining.md).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site YAML file (ticket store, evidence folder).")]
DEFAULT_CONFIG = Path("configs/demo.yaml")


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


def _parse_classes(items: list[str], hazards: list[str] | None) -> dict[str, list[str]]:
    """``--classes fire=fire,smoke`` (or ``--classes fire,smoke`` with one ``--hazard``)."""
    out: dict[str, list[str]] = {}
    for item in items:
        hazard, sep, names = item.partition("=")
        if not sep:
            if not hazards or len(hazards) != 1:
                raise _fail(f"--classes {item!r}: write HAZARD=a,b (or give exactly one --hazard)")
            hazard, names = hazards[0], item
        classes = [n.strip() for n in names.split(",") if n.strip()]
        if not classes or len(set(classes)) != len(classes):
            raise _fail(f"--classes {item!r}: want distinct comma-separated class names")
        out[hazard.strip()] = classes
    return out


def manifest_classes(manifest: Path, hazard: str) -> list[str] | None:
    """The class names of the deployed model called ``hazard`` in the model manifest (None: no such model)."""
    from pipeline.detect.model_versions import ModelRef, ModelVersionError, find_entry, read_doc

    if not manifest.is_file():
        return None
    try:
        entry = find_entry(read_doc(manifest), ModelRef(hazard))
    except ModelVersionError:
        return None
    names = entry.get("class_names")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _counts_table(results: list[Any]) -> Table:
    table = Table(title="dataset export")
    for col in ("hazard", "split", "images", "positives", "negatives", "boxes", "cameras"):
        table.add_column(col)
    for r in results:
        for split, c in r.counts.items():
            table.add_row(r.hazard, split, str(c["images"]), str(c["positives"]), str(c["negatives"]),
                          ", ".join(f"{k} {v}" for k, v in c["boxes"].items()), ", ".join(c["cameras"]))
    return table


@dataset_app.command("export")
def export(out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: one set per hazard in "
                                             "OUT/<hazard>/.")],
           config: ConfigOpt = DEFAULT_CONFIG,
           hazard: Annotated[list[str] | None, typer.Option(help="Hazard (repeatable); default: every hazard "
                                                            "with a judged ticket.")] = None,
           classes: Annotated[list[str] | None, typer.Option(help="Class names in model order: HAZARD=a,b "
                                                             "(repeatable); default: the deployed model's "
                                                             "class_names in --models, else the labels seen.")]
           = None,
           models: Annotated[Path, typer.Option(help="Model manifest (default class names).")]
           = Path("models/manifest.yaml"),
           val_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of cameras in val "
                                                       "(by a hash of the camera id).")] = 0.2,
           val_camera: Annotated[list[str] | None, typer.Option(help="These cameras (repeatable) and no others "
                                                                "in val.")] = None) -> None:
    """Write YOLO and COCO sets per hazard from the verdicts: split by camera, false alarms as negatives."""
    from pipeline.cli import _load
    from pipeline.dataset.export import db_source, export_sets
    from pipeline.tickets.db import init_db, session_factory

    site = _load(config)
    explicit = _parse_classes(classes or [], hazard)
    engine = init_db(site.database_url())
    try:
        evidence_dir = site.resolve_path(site.api.evidence_dir)
        frames, load = db_source(session_factory(engine), evidence_dir, hazard)
    finally:
        engine.dispose()
    chosen = hazard or sorted({f.hazard for f in frames})
    if not chosen:
        raise _fail("no judged tickets (verified, false alarm, or with a verdict) in the ticket store", 1)
    by_hazard = {h: explicit.get(h) or manifest_classes(models, h) for h in chosen}
    sources = {"config": str(config.resolve()), "database": site.database_url().split("://")[0],
               "evidence_dir": str(evidence_dir)}
    try:
        results = export_sets(frames, load, out, chosen, {h: c for h, c in by_hazard.items() if c},
                              val_fraction, val_camera, sources)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    console.print(_counts_table(results))
    for r in results:
        m = r.manifest
        if m["skipped"] or m["dropped_boxes"]:
            console.print(f"{r.hazard}: skipped {m['skipped']}, boxes of other classes dropped {m['dropped_boxes']}",
                          highlight=False)
        for w in m["warnings"]:
            console.print(f"[yellow]{r.hazard}: {w}[/]")
        console.print(f"{r.hazard}: {r.folder / 'data.yaml'} (YOLO), {r.folder / 'annotations'} (COCO), "
                      f"{r.folder / 'manifest.json'}", highlight=False)


@dataset_app.command("import")
def import_(set_dir: Annotated[Path, typer.Argument(help="A set written by `gridwatch dataset export` "
                                                    "(OUT/<hazard>).")],
            export_file: Annotated[Path, typer.Argument(metavar="EXPORT", help="CVAT / Label Studio export: "
                                                        "zip, folder or COCO JSON (YOLO or COCO format).")],
            config: Annotated[Path | None, typer.Option("--config", "-c", help="Also record the new labels as "
                                                        "verdicts in this site's ticket store.")] = None) -> None:
    """Take labels back from a CVAT / Label Studio export (matched by file name; unmatched ones reported)."""
    from pipeline.dataset.label_import import LabelImportError, import_labels

    sessions, evidence_dir, engine = None, None, None
    if config is not None:
        from pipeline.cli import _load
        from pipeline.tickets.db import init_db, session_factory

        site = _load(config)
        engine = init_db(site.database_url())
        sessions, evidence_dir = session_factory(engine), site.resolve_path(site.api.evidence_dir)
    try:
        report = import_labels(set_dir, export_file, sessions, evidence_dir, actor=f"cli:{getpass.getuser()}"[:64])
    except (FileNotFoundError, LabelImportError) as exc:
        raise _fail(str(exc)) from None
    finally:
        if engine is not None:
            engine.dispose()
    console.print(f"{export_file.name}: {report.tool} {report.format}; {report.matched} frames matched, "
                  f"{report.changed} changed ({report.to_positive} negatives -> positives, {report.to_negative} "
                  f"positives -> negatives), {report.verdicts_recorded} verdicts recorded", highlight=False)
    if report.unmatched:
        console.print(f"[yellow]{len(report.unmatched)} not in the set (no frame of that name):[/] "
                      f"{', '.join(report.unmatched[:20])}{' ...' if len(report.unmatched) > 20 else ''}",
                      highlight=False)
    for name, labels in report.unknown_labels.items():
        console.print(f"[yellow]{name}: classes {labels} are not in the set; left unchanged[/]", highlight=False)
    for name in report.ignored_files:
        console.print(f"[yellow]ignored {name}[/]", highlight=False)
    if report.unknown_labels or report.ignored_files or not report.matched:
        raise typer.Exit(1)  # some labels were not taken: the engineer has to look
