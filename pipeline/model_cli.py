"""``gridwatch model ...``: list, add, evaluate, promote and roll back versioned detector models.

The commands work on ``models/manifest.yaml`` (:mod:`pipeline.detect.model_versions` describes the versioned
format). ``evaluate`` and ``promote`` run the candidate and the deployed model on a site's frozen benchmark
(:mod:`pipeline.evaluation.benchmark`); ``promote`` refuses a candidate that is worse beyond the tolerance
unless ``--force --reason``. Running workers pick up a promotion, canary or rollback without a restart
(:mod:`pipeline.detect.hot_swap`). Walk-through: docs/retraining.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the evaluation stack (cv2, replay) loads only when a command needs it
    from pipeline.evaluation.benchmark import ModelScore, Tolerance

model_app = typer.Typer(help="Detector models: list, add, evaluate, promote, rollback (docs/retraining.md).",
                        no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ManifestOpt = Annotated[Path, typer.Option("--manifest", "-m", help="The model manifest.")]
DEFAULT_MANIFEST = Path("models/manifest.yaml")
BenchOpt = Annotated[Path | None, typer.Option("--benchmark", "-b", help="Benchmark YAML or folder (frozen "
                                               "labelled frames + event clips; pipeline/evaluation/benchmark.py).")]
TolOp = Annotated[float | None, typer.Option("--tolerance-op", help="Allowed drop of the operating point "
                                             "(share of positive frames; default: the benchmark's gate, 0.02).")]
TolMissed = Annotated[int | None, typer.Option("--tolerance-missed", help="Allowed extra missed events "
                                               "(default: the benchmark's gate, 0).")]
TolFph = Annotated[float | None, typer.Option("--tolerance-false-per-hour", help="Allowed extra false events "
                                              "per hour (default: the benchmark's gate, 0).")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(message, style="red", markup=False, highlight=False)
    return typer.Exit(code)


@model_app.command("list")
def list_models(manifest: ManifestOpt = DEFAULT_MANIFEST) -> None:
    """Every model version in the manifest: deployed, canary, file present and hash OK."""
    from pipeline.detect.model_versions import deployed_version, deployment_of, label, read_doc, same_version, verify

    doc = read_doc(manifest)
    table = Table(title=str(manifest))
    for col in ("model", "state", "file", "sha256", "check"):
        table.add_column(col)
    for e in doc["models"]:
        name, version = str(e.get("name")), e.get("version")
        dep = deployment_of(doc, name)
        state = []
        if same_version(deployed_version(doc, name), None if version is None else str(version)):
            state.append("deployed")
        if dep.canary_version is not None and same_version(dep.canary_version, str(version)):
            state.append(f"canary on {', '.join(dep.canary_cameras)}")
        try:
            verify(manifest, e)
            check = "ok"
        except (OSError, ValueError) as exc:
            check = f"[red]{type(exc).__name__}[/]"
        table.add_row(label(name, version), "; ".join(state), str(e.get("file")), str(e.get("sha256", ""))[:12],
                      check)
    console.print(table)


@model_app.command("add")
def add(ref: Annotated[str, typer.Argument(help="NAME@VERSION to register, e.g. fire@v3.")],
        file: Annotated[Path, typer.Argument(help="The ONNX file (kept where it is; the manifest records its path "
                                             "relative to itself and its sha256).")],
        input_size: Annotated[int | None, typer.Option(help="Letterbox input size (default: the deployed "
                                                       "version's).")] = None,
        card: Annotated[str | None, typer.Option(help="Model card, e.g. fire.md.")] = None,
        note: Annotated[str | None, typer.Option(help="Free text stored as training.note.")] = None,
        manifest: ManifestOpt = DEFAULT_MANIFEST) -> None:
    """Register a model file as a new version (not deployed: see `promote`)."""
    from pipeline.detect.model_versions import ModelRef, ModelVersionError, add_version

    try:
        r = ModelRef.parse(ref)
        if r.version is None:
            raise ModelVersionError(f"{ref}: add needs NAME@VERSION")
        entry = add_version(manifest, r.name, r.version, file, input_size=input_size, card=card,
                            training={"note": note} if note else None)
    except (ModelVersionError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    # The input size is shown because, left out, it is the deployed version's (one fine-tuned at another size?).
    console.print(f"added {r} ({entry['file']}, sha256 {entry['sha256'][:12]}, input {entry.get('input_size')})")


def _compare(manifest: Path, candidate: str, hazard: str | None, benchmark: Path, tol_op: float | None,
             tol_missed: int | None, tol_fph: float | None) -> tuple[ModelScore, ModelScore, list[str]]:
    """Score the deployed model and ``candidate`` on ``benchmark``; print the table; (deployed, cand, reasons)."""
    from pipeline.detect.model_versions import ModelRef, ModelVersionError, find_entry, read_doc, verify
    from pipeline.evaluation.benchmark import BenchmarkError, gate, load_benchmark, score_model

    try:
        bench = load_benchmark(benchmark, hazard)
        doc = read_doc(manifest)
        deployed_entry = find_entry(doc, ModelRef(bench.model))
        deployed_path = verify(manifest, deployed_entry)
        path = Path(candidate)
        if path.suffix == ".onnx" and path.is_file():
            cand_label, cand_path, cand_size = path.name, path, deployed_entry.get("input_size")
        else:
            ref = ModelRef.parse(candidate)
            if ref.name != bench.model:
                raise ModelVersionError(f"candidate {ref} is not a version of {bench.model!r} (the benchmark's model)")
            entry = find_entry(doc, ref)
            cand_path = verify(manifest, entry)
            cand_label, cand_size = f"{ref.name}@{entry.get('version')}", entry.get("input_size")
    except (BenchmarkError, ModelVersionError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    if tol_op is not None:
        bench.tolerance.operating_point = tol_op
    if tol_missed is not None:
        bench.tolerance.missed_events = tol_missed
    if tol_fph is not None:
        bench.tolerance.false_per_hour = tol_fph
    dep_label = f"{bench.model}@{deployed_entry.get('version')}"
    err.print(f"benchmark {bench.source}: {dep_label} (deployed) vs {cand_label} ...")
    try:
        dep = score_model(bench, dep_label, deployed_path, deployed_entry.get("input_size"))
        cand = score_model(bench, cand_label, cand_path, cand_size)
    except BenchmarkError as exc:
        raise _fail(str(exc)) from None
    reasons = gate(cand, dep, bench.tolerance)
    console.print(comparison_table(dep, cand, bench.tolerance, reasons))
    for r in reasons:
        console.print(f"[red]refused:[/] {r}", highlight=False)
    return dep, cand, reasons


def comparison_table(dep: ModelScore, cand: ModelScore, tol: Tolerance, reasons: list[str]) -> Table:
    """The side-by-side Rich table of two :class:`~pipeline.evaluation.benchmark.ModelScore`."""

    def pct(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.1%}"

    def num(v: float | int | None, fmt: str = "{:.0f}") -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    table = Table(title="deployed vs candidate" + (" — REFUSED" if reasons else " — passes the gate"),
                  caption=f"operating point: share of {cand.positive_frames} positive frames alarmed at the threshold "
                  f"(@) where 1 % of {cand.negative_frames} negative frames alarm; events: {cand.expected_events} "
                  f"expected in {cand.video_s:.0f} s of clips")
    for col in ("metric", f"{dep.label} (deployed)", f"{cand.label} (candidate)", "gate"):
        table.add_column(col)
    table.add_row("AP50", num(dep.ap50, "{:.3f}"), num(cand.ap50, "{:.3f}"), "reported")
    table.add_row("operating point", f"{pct(dep.operating_point)} @ {num(dep.threshold_1pct, '{:.2f}')}",
                  f"{pct(cand.operating_point)} @ {num(cand.threshold_1pct, '{:.2f}')}",
                  f"≥ deployed − {tol.operating_point:.1%}")
    table.add_row("missed events", num(dep.missed_events), num(cand.missed_events), f"≤ deployed + {tol.missed_events}")
    table.add_row("false events / h", num(dep.false_per_hour, "{:.1f}"), num(cand.false_per_hour, "{:.1f}"),
                  f"≤ deployed + {tol.false_per_hour:.1f}")
    return table


@model_app.command()
def evaluate(candidate: Annotated[str, typer.Option(help="FILE.onnx or NAME@VERSION from the manifest.")],
             benchmark: BenchOpt = None,
             hazard: Annotated[str | None, typer.Option(help="Hazard (checked against the benchmark).")] = None,
             json_out: Annotated[Path | None, typer.Option("--json", help="Write both scores here.")] = None,
             tolerance_op: TolOp = None, tolerance_missed: TolMissed = None, tolerance_fph: TolFph = None,
             manifest: ManifestOpt = DEFAULT_MANIFEST) -> None:
    """Run the candidate and the deployed model on the frozen benchmark; print them side by side."""
    if benchmark is None:
        raise _fail("evaluate needs --benchmark (a YAML or folder: see docs/retraining.md)")
    dep, cand, reasons = _compare(manifest, candidate, hazard, benchmark, tolerance_op, tolerance_missed,
                                  tolerance_fph)
    if json_out is not None:
        json_out.write_text(json.dumps({"deployed": dep.to_dict(), "candidate": cand.to_dict(),
                                        "refused": reasons}, indent=1))


@model_app.command()
def promote(ref: Annotated[str, typer.Argument(help="NAME@VERSION to deploy, e.g. fire@v3.")],
            benchmark: BenchOpt = None,
            canary: Annotated[str | None, typer.Option(help="Comma-separated camera ids: run it there only "
                                                       "first (promote again without --canary for all).")] = None,
            force: Annotated[bool, typer.Option(help="Deploy even if the gate refuses (needs --reason).")] = False,
            reason: Annotated[str | None, typer.Option(help="Why (recorded in the manifest history).")] = None,
            tolerance_op: TolOp = None, tolerance_missed: TolMissed = None, tolerance_fph: TolFph = None,
            manifest: ManifestOpt = DEFAULT_MANIFEST) -> None:
    """Deploy a version if it is not worse than the deployed one on the benchmark (exit 1 and the table if it is)."""
    from pipeline.detect.model_versions import ModelRef, ModelVersionError
    from pipeline.detect.model_versions import promote as do_promote

    if force and not reason:
        raise _fail("--force needs --reason (it is recorded in the manifest history)")
    gate_record: dict[str, object] = {}
    if benchmark is None:
        if not force:
            raise _fail("promote needs --benchmark to compare against the deployed model (or --force --reason)")
    else:
        dep, cand, reasons = _compare(manifest, ref, None, benchmark, tolerance_op, tolerance_missed,
                                      tolerance_fph)
        gate_record = {"benchmark": str(benchmark), "deployed": dep.to_dict(),
                       "candidate": cand.to_dict(), "refused": reasons}
        if reasons and not force:
            err.print(f"[red]not promoted:[/] {ref} is worse than the deployed model beyond the tolerance")
            raise typer.Exit(1)
    cameras = [c.strip() for c in canary.split(",") if c.strip()] if canary else None
    try:
        dep_rec = do_promote(manifest, ModelRef.parse(ref), canary=cameras, reason=reason, forced=force,
                             gate=gate_record or None)
    except (ModelVersionError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    where = f"on cameras {', '.join(cameras)} (canary)" if cameras else "on every camera"
    console.print(f"promoted {ref} {where}" + (" [yellow](forced)[/]" if force else "")
                  + f"; deployed {dep_rec.deployed}. Workers swap it in within their poll interval.")


@model_app.command()
def rollback(name: Annotated[str, typer.Argument(help="Model name, e.g. fire.")],
             reason: Annotated[str | None, typer.Option(help="Why (recorded in the manifest history).")] = None,
             manifest: ManifestOpt = DEFAULT_MANIFEST) -> None:
    """End the model's canary, or else return to the version deployed before the current one."""
    from pipeline.detect.model_versions import ModelVersionError
    from pipeline.detect.model_versions import rollback as do_rollback

    try:
        dep = do_rollback(manifest, name, reason=reason)
    except (ModelVersionError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"{name}: deployed {dep.deployed}" + (f", canary {dep.canary_version}" if dep.canary_version
                                                        else ", no canary"))


def _add_train_command() -> None:
    # The command's logic (and its heavy imports) live in pipeline/training.
    from pipeline.training.cli import train

    model_app.command("train")(train)


_add_train_command()
