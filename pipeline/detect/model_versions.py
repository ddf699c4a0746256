"""Versioned entries of ``models/manifest.yaml``: which version of a model is deployed, canary, history.

The manifest stays a ``models:`` list (the format :mod:`pipeline.detect.registry` always read); an entry's
``version`` now lets a name appear several times, each addressable as ``name@version`` (``fire@v3``; a
leading ``v`` is optional, ``fire@2`` and ``fire@v2`` are the same). A top-level ``deployments:`` mapping says
which one a plain ``name`` means::

    models:
      - {name: fire, version: '2', file: fire.onnx, sha256: 8d23...}
      - {name: fire, version: v3, file: fire-v3.onnx, sha256: 41c0...}
    deployments:
      fire:
        deployed: '2'                          # what `model: fire` in a site config runs
        previous: []                           # versions to go back to, latest last (rollback pops)
        canary: {version: v3, cameras: [cam-7]}  # optional: the candidate runs on these cameras only
        history:                               # every promote / rollback, newest last
          - {action: canary, version: v3, from: '2', ts: 1796000000.0, by: ana, forced: false, gate: {...}}

A name without a ``deployments`` entry means its first listed entry (manifests from before versions, with
one entry per name, read as they always did). Writes are atomic (a temporary file renamed over the
manifest), so a worker polling the file never reads half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HEADER = ("# gridwatch detector manifest, read by pipeline.detect.registry (name, version, file, sha256, classes,\n"
          "# input_size) and pipeline.detect.model_versions (deployments: deployed version, canary, history);\n"
          "# the other keys document the model. Metrics are written by scripts/evaluate.py; `gridwatch model\n"
          "# promote|rollback` writes deployments (docs/retraining.md).\n")


class ModelVersionError(ValueError):
    """A model reference or version that the manifest cannot satisfy (the message says why)."""


@dataclass(frozen=True)
class ModelRef:
    """``name`` or ``name@version``."""

    name: str
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``"fire@v3"`` -> ModelRef("fire", "v3"); ``"fire"`` -> ModelRef("fire", None)."""
        name, sep, version = text.partition("@")
        if not name or (sep and not version):
            raise ModelVersionError(f"{text!r}: want NAME or NAME@VERSION (e.g. fire@v3)")
        return cls(name, version or None)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


def same_version(a: str | None, b: str | None) -> bool:
    """Versions compare as text with an optional leading ``v`` (``'2'`` == ``'v2'``)."""
    if a is None or b is None:
        return a is b
    return str(a).removeprefix("v") == str(b).removeprefix("v")


def label(name: str, version: Any) -> str:
    """``name@version`` (``name`` alone for an unversioned entry)."""
    return f"{name}@{version}" if version not in (None, "") else name


@dataclass
class Deployment:
    """The ``deployments.<name>`` record of one model (see the module docstring)."""

    deployed: str | None = None
    previous: list[str] = field(default_factory=list)
    canary_version: str | None = None
    canary_cameras: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, raw: Any) -> Deployment:
        """From the YAML mapping (None: an empty record)."""
        if not isinstance(raw, dict):
            return cls()
        got = raw.get("canary")
        canary: dict[str, Any] = got if isinstance(got, dict) else {}
        return cls(str(raw["deployed"]) if raw.get("deployed") is not None else None,
                   [str(v) for v in raw.get("previous") or []],
                   str(canary["version"]) if canary.get("version") is not None else None,
                   [str(c) for c in canary.get("cameras") or []], list(raw.get("history") or []))

    def to_yaml(self) -> dict[str, Any]:
        """The YAML mapping (``canary`` only while one runs)."""
        out: dict[str, Any] = {"deployed": self.deployed, "previous": list(self.previous)}
        if self.canary_version is not None:
            out["canary"] = {"version": self.canary_version, "cameras": list(self.canary_cameras)}
        out["history"] = list(self.history)
        return out


# -- reading -----------------------------------------------------------------------------------------

def read_doc(path: Path) -> dict[str, Any]:
    """The manifest as a mapping with a ``models`` list (a bare list is accepted, as the registry does)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if isinstance(doc, list):
        doc = {"models": doc}
    doc = doc or {}
    if not isinstance(doc, dict):
        raise ModelVersionError(f"{path}: want a mapping with a `models:` list")
    doc.setdefault("models", [])
    return doc


def entries_of(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every entry called ``name``, in file order."""
    return [e for e in doc.get("models") or [] if isinstance(e, dict) and str(e.get("name")) == name]


def deployment_of(doc: dict[str, Any], name: str) -> Deployment:
    """The ``deployments.<name>`` record (empty when the manifest has none)."""
    return Deployment.of((doc.get("deployments") or {}).get(name))


def find_entry(doc: dict[str, Any], ref: ModelRef) -> dict[str, Any]:
    """The entry ``ref`` names: its version, or the deployed one for a bare name.

    Raises:
        ModelVersionError: no such name or version.
    """
    found = entries_of(doc, ref.name)
    if not found:
        raise ModelVersionError(f"no model {ref.name!r} in the manifest")
    version = ref.version if ref.version is not None else deployed_version(doc, ref.name)
    if version is None:
        return found[0]
    hit = next((e for e in found if same_version(e.get("version"), version)), None)
    if hit is None:
        have = ", ".join(label(ref.name, e.get("version")) for e in found)
        raise ModelVersionError(f"no version {version!r} of {ref.name!r} in the manifest (have: {have})")
    return hit


def deployed_version(doc: dict[str, Any], name: str) -> str | None:
    """The version a bare ``name`` means: ``deployments.<name>.deployed``, else the first entry's."""
    dep = deployment_of(doc, name)
    if dep.deployed is not None:
        return dep.deployed
    found = entries_of(doc, name)
    return str(found[0]["version"]) if found and found[0].get("version") is not None else None


def resolve_file(manifest: Path, entry: dict[str, Any]) -> Path:
    """The entry's file (relative paths resolve against the manifest's folder)."""
    f = Path(str(entry["file"])).expanduser()
    return f if f.is_absolute() else manifest.parent / f


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(manifest: Path, entry: dict[str, Any]) -> Path:
    """The entry's file, after checking that it exists and matches the recorded sha256.

    Raises:
        FileNotFoundError: the file is missing.
        ModelVersionError: the sha256 differs (a swapped, truncated or corrupt file).
    """
    path = resolve_file(manifest, entry)
    if not path.is_file():
        raise FileNotFoundError(f"{label(str(entry['name']), entry.get('version'))}: no such file {path}")
    want = str(entry.get("sha256") or "").lower()
    if want:
        got = sha256_of(path)
        if got != want:
            raise ModelVersionError(f"{label(str(entry['name']), entry.get('version'))}: {path} has sha256 {got}, "
                                    f"the manifest expects {want}")
    return path


# -- writing -----------------------------------------------------------------------------------------

def write_doc(path: Path, doc: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file in the same folder, then rename)."""
    text = HEADER + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(manifest: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``manifest``: two engineers promoting at once both
    land in the history instead of one overwriting the other. The lock is ``flock`` on the manifest's folder
    (the file itself is replaced by each write, and a lock file would litter models/)."""
    fd = os.open(manifest.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _record(dep: Deployment, action: str, version: str | None, was: str | None, by: str | None,
            reason: str | None, forced: bool, extra: dict[str, Any] | None) -> None:
    rec: dict[str, Any] = {"action": action, "version": version, "from": was, "ts": round(time.time(), 3),
                           "by": by or getpass.getuser(), "forced": forced}
    if reason:
        rec["reason"] = reason
    if extra:
        rec.update(extra)
    dep.history.append(rec)


def add_version(manifest: Path, name: str, version: str, file: Path, **fields: Any) -> dict[str, Any]:
    """Register ``file`` as ``name@version`` (sha256 computed now); the deployed version does not change.

    ``fields`` (input_size, classes, class_names, threshold, card, training, ...) are stored on the entry; a
    field left out is copied from the deployed entry of ``name`` where there is one.

    Raises:
        ModelVersionError: ``name@version`` exists already.
        FileNotFoundError: no such file.
    """
    with locked(manifest):
        doc = read_doc(manifest)
        if any(same_version(e.get("version"), version) for e in entries_of(doc, name)):
            raise ModelVersionError(f"{name}@{version} is in the manifest already")
        if not file.is_file():
            raise FileNotFoundError(f"no such model file: {file}")
        rel = os.path.relpath(file.resolve(), manifest.parent.resolve())
        entry: dict[str, Any] = {"name": name, "version": str(version), "file": rel, "sha256": sha256_of(file),
                                 "size_mb": round(file.stat().st_size / 1e6, 2)}
        base = find_entry(doc, ModelRef(name)) if entries_of(doc, name) else {}
        for key in ("kind", "classes", "input_size", "threshold", "class_names"):
            if key in base:
                entry[key] = base[key]
        entry.update({k: v for k, v in fields.items() if v is not None})
        doc["models"].append(entry)
        if base and name not in (doc.get("deployments") or {}):
            # Pin what runs now: the new entry must not become "the first one" a bare name means.
            doc.setdefault("deployments", {})[name] = Deployment(deployed=str(base.get("version"))).to_yaml()
        write_doc(manifest, doc)
        return entry


def promote(manifest: Path, ref: ModelRef, *, canary: list[str] | None = None, by: str | None = None,
            reason: str | None = None, forced: bool = False, gate: dict[str, Any] | None = None) -> Deployment:
    """Deploy ``ref`` (``name@version``), or with ``canary`` run it on those cameras only; returns the record.

    Raises:
        ModelVersionError: no such version, or ``ref`` has none.
        FileNotFoundError: the version's file is missing (its hash is checked too).
    """
    with locked(manifest):
        if ref.version is None:
            raise ModelVersionError(f"{ref}: promote needs NAME@VERSION")
        doc = read_doc(manifest)
        entry = find_entry(doc, ref)
        verify(manifest, entry)
        version = str(entry.get("version"))
        dep = deployment_of(doc, ref.name)
        was = dep.deployed if dep.deployed is not None else deployed_version(doc, ref.name)
        extra = {"gate": gate} if gate else None
        if canary:
            dep.deployed = was
            dep.canary_version, dep.canary_cameras = version, list(canary)
            _record(dep, "canary", version, was, by, reason, forced, {**(extra or {}), "cameras": list(canary)})
        else:
            if was is not None and not same_version(was, version):
                dep.previous.append(was)
            dep.deployed = version
            dep.canary_version, dep.canary_cameras = None, []
            _record(dep, "promote", version, was, by, reason, forced, extra)
        doc.setdefault("deployments", {})[ref.name] = dep.to_yaml()
        write_doc(manifest, doc)
        return dep


def rollback(manifest: Path, name: str, *, by: str | None = None, reason: str | None = None) -> Deployment:
    """End a running canary of ``name``, or else go back to the version deployed before the current one.

    Raises:
        ModelVersionError: nothing to roll back to.
    """
    with locked(manifest):
        doc = read_doc(manifest)
        dep = deployment_of(doc, name)
        was = dep.deployed
        if dep.canary_version is not None:
            _record(dep, "rollback", was, dep.canary_version, by, reason, False, {"canary_ended": True})
            dep.canary_version, dep.canary_cameras = None, []
        elif dep.previous:
            back = dep.previous.pop()
            verify(manifest, find_entry(doc, ModelRef(name, back)))
            dep.deployed = back
            _record(dep, "rollback", back, was, by, reason, False, None)
        else:
            raise ModelVersionError(f"{name}: no earlier version to roll back to (deployed: {was})")
        doc.setdefault("deployments", {})[name] = dep.to_yaml()
        write_doc(manifest, doc)
        return dep
