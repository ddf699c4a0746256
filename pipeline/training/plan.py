"""What a ``gridwatch model train`` run will do, checked before torch is imported (fast, clear errors).

A :class:`TrainPlan` names the starting model (``--from fire@2``: a manifest version, or a ``.onnx`` /
``.pt`` file), the data set (a folder written by ``gridwatch dataset export``, or any YOLO ``data.yaml``),
the new version (default: one above the highest version of the hazard's model in the manifest) and where
everything goes::

    runs/train/<hazard>-<version>/      Ultralytics run (weights/last.pt for --resume), plan.json
    <manifest dir>/<hazard>-<version>.onnx, <hazard>-<version>.md   the candidate and its card

The plan is saved as ``plan.json`` in the run folder, so ``--resume`` continues with the same settings.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.detect.model_versions import (
    ModelRef,
    ModelVersionError,
    entries_of,
    find_entry,
    label,
    read_doc,
    same_version,
    verify,
)

REPO = Path(__file__).resolve().parents[2]
BASE_ARCH = REPO.parent / "shared" / "models" / "yolo11n-coco.pt"
"""The architecture an ONNX start model's weights are put back into (YOLO11n; ``--arch`` to change)."""


class TrainingError(ValueError):
    """A train request that cannot run as given (the message says why and what to do)."""


@dataclass
class TrainPlan:
    """Everything a run needs; JSON-serialisable (``plan.json``)."""

    hazard: str
    base: str
    """``name@version`` of the starting model, or the file given."""
    base_file: str
    base_sha256: str | None
    base_threshold: float | None
    base_input_size: int | None
    data_yaml: str
    classes: list[str]
    version: str
    manifest: str
    run_dir: str
    onnx: str
    card: str
    epochs: int
    imgsz: int
    batch: int
    workers: int
    seed: int
    patience: int
    lr0: float | None
    arch: str
    new_classes: bool = False
    hyp: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``hazard@version`` of the candidate."""
        return label(self.hazard, self.version)

    def save(self) -> Path:
        """Write ``plan.json`` into the run folder."""
        path = Path(self.run_dir) / "plan.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, run_dir: Path) -> TrainPlan:
        """The plan saved in ``run_dir``."""
        return cls(**json.loads((run_dir / "plan.json").read_text(encoding="utf-8")))


def data_yaml_of(data: Path) -> Path:
    """``data`` itself when it is a YAML file, else ``data/data.yaml``.

    Raises:
        TrainingError: no data.yaml there.
    """
    path = data if data.suffix in (".yaml", ".yml") else data / "data.yaml"
    if not path.is_file():
        raise TrainingError(f"--data {data}: no {path.name} (want a folder from `gridwatch dataset export` "
                            "or a YOLO data.yaml)")
    return path


def data_classes(data_yaml: Path) -> list[str]:
    """Class names of a YOLO data.yaml, in id order.

    Raises:
        TrainingError: no ``names``, or a split folder is missing.
    """
    doc = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    names = doc.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not names:
        raise TrainingError(f"{data_yaml}: no class names (`names:`)")
    root = Path(doc.get("path") or data_yaml.parent)
    root = root if root.is_absolute() else data_yaml.parent / root
    for split in ("train", "val"):
        rel = doc.get(split)
        if not rel or not (root / str(rel)).is_dir():
            raise TrainingError(f"{data_yaml}: the {split} split folder {root / str(rel or '')} is missing")
    return [str(n) for n in names]


def next_version(doc: dict[str, Any], name: str) -> str:
    """``v<N+1>`` for the highest numeric version ``N`` of ``name`` in the manifest (``v1`` for none)."""
    nums = [int(m.group(1)) for e in entries_of(doc, name)
            if (m := re.fullmatch(r"v?(\d+)", str(e.get("version") or "")))]
    return f"v{max(nums, default=0) + 1}"


def _base(manifest: Path, ref_or_file: str) -> tuple[str, Path, str | None, dict[str, Any]]:
    """(label, file, sha256, manifest entry or {}) of the starting model."""
    path = Path(ref_or_file)
    if path.suffix in (".onnx", ".pt"):
        if not path.is_file():
            raise TrainingError(f"--from {ref_or_file}: no such file")
        return path.name, path.resolve(), None, {}
    try:
        ref = ModelRef.parse(ref_or_file)
        doc = read_doc(manifest)
        entry = find_entry(doc, ref)
        file = verify(manifest, entry)
    except (ModelVersionError, FileNotFoundError) as exc:
        raise TrainingError(f"--from {ref_or_file}: {exc}") from None
    return label(ref.name, entry.get("version")), file.resolve(), entry.get("sha256"), entry


def plan_training(hazard: str, base: str, data: Path, *, manifest: Path, epochs: int, imgsz: int,
                  batch: int = 16, workers: int = 2, seed: int = 0, patience: int = 50, lr0: float | None = None,
                  version: str | None = None, runs: Path = REPO / "runs" / "train", arch: Path = BASE_ARCH,
                  new_classes: bool = False, hyp: dict[str, Any] | None = None) -> TrainPlan:
    """Check a train request and say where everything goes.

    Raises:
        TrainingError: bad numbers, unknown starting model, a missing or mismatching data set, or a version
            that exists already.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", hazard):
        raise TrainingError(f"--hazard {hazard!r}: want a lower-case name such as fire")
    if epochs < 1:
        raise TrainingError("--epochs must be at least 1")
    if imgsz < 32 or imgsz % 32:
        raise TrainingError(f"--imgsz {imgsz}: want a multiple of 32 (the model's stride), at least 32")
    if batch < 1 or workers < 0:
        raise TrainingError("--batch must be at least 1 and --workers at least 0")
    if not manifest.is_file():
        raise TrainingError(f"--manifest {manifest}: no such file")
    base_label, base_file, base_sha, entry = _base(manifest, base)
    if base_file.suffix == ".onnx" and not arch.is_file():
        raise TrainingError(f"--arch {arch}: no such file (the YOLO .pt whose architecture the ONNX weights go into)")
    data_yaml = data_yaml_of(data)
    classes = data_classes(data_yaml)
    base_classes = [str(n) for n in entry.get("class_names") or []]
    if base_classes and base_classes != classes and not new_classes:
        raise TrainingError(f"{data_yaml}: classes {classes} differ from {base_label}'s {base_classes}; export "
                            f"with --classes {hazard}={','.join(base_classes)}, or pass --new-classes to train a "
                            "new head")
    doc = read_doc(manifest)
    version = version or next_version(doc, hazard)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", version):
        raise TrainingError(f"--version {version!r}: letters, digits, '.', '_' and '-' only")
    if any(same_version(e.get("version"), version) for e in entries_of(doc, hazard)):
        raise TrainingError(f"{hazard}@{version} is in {manifest} already; pick another --version")
    stem = f"{hazard}-{version}"
    return TrainPlan(
        hazard=hazard, base=base_label, base_file=str(base_file), base_sha256=base_sha,
        base_threshold=float(entry["threshold"]) if entry.get("threshold") is not None else None,
        base_input_size=int(entry["input_size"]) if entry.get("input_size") else None,
        data_yaml=str(data_yaml.resolve()), classes=classes, version=version, manifest=str(manifest.resolve()),
        run_dir=str((runs / stem).resolve()), onnx=str((manifest.parent / f"{stem}.onnx").resolve()),
        card=str((manifest.parent / f"{stem}.md").resolve()), epochs=epochs, imgsz=imgsz, batch=batch,
        workers=workers, seed=seed, patience=patience, lr0=lr0, arch=str(arch), new_classes=new_classes,
        hyp=dict(hyp or {}))


def resume_plan(hazard: str, version: str | None, runs: Path = REPO / "runs" / "train") -> TrainPlan:
    """The saved plan of an interrupted run (``version``, else the newest unfinished run of ``hazard``).

    Raises:
        TrainingError: no such run, it has no ``last.pt`` yet, or it finished already.
    """
    if version is not None:
        candidates = [runs / f"{hazard}-{version}"]
    else:
        candidates = sorted((p for p in runs.glob(f"{hazard}-*") if (p / "plan.json").is_file()
                             and not (p / "done.json").is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in candidates:
        if (run / "done.json").is_file():
            raise TrainingError(f"{run}: this run finished already (nothing to resume)")
        if (run / "plan.json").is_file() and (run / "weights" / "last.pt").is_file():
            return TrainPlan.load(run)
    raise TrainingError(f"nothing to resume for {hazard}{'@' + version if version else ''} in {runs} "
                        "(no unfinished run with weights/last.pt)")
