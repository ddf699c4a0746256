"""Named detectors of a site, created lazily (one onnxruntime session per name) and cached.

A name is looked up in ``site.detectors`` first; its ``model`` is a path (relative to the config file) or
the name of an entry in ``models/manifest.yaml``. A name that is not in ``site.detectors`` but is a
manifest entry is served with default settings. Files reached through the manifest must match its
sha256, so a swapped or truncated model is refused rather than silently run.

Manifest format (file paths relative to the manifest)::

    models:
      - name: coco
        file: ../../shared/models/yolo11n-coco.onnx
        sha256: 1a1e2fcee7ba86c6ab740b061208e65649bbbf8df71e72a0d1818be0c99ee0a2
        classes: 80
        input_size: 640

Entries may carry a ``version`` and a name may appear once per version (:mod:`pipeline.detect.model_versions`:
``deployments`` says which version a bare name means). Every versioned entry is also served as
``name@version``, so a config may pin ``model: fire@v3``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.config import DetectorConfig, SiteConfig
from pipeline.detect.model_versions import deployed_version, label, same_version
from pipeline.detect.yolo import YoloDetector
from pipeline.detector_floor import detector_floor


class ModelHashMismatch(ValueError):
    """A model file's sha256 differs from the one recorded in the manifest."""


@dataclass(frozen=True)
class ManifestEntry:
    """One model in ``models/manifest.yaml``."""

    name: str
    file: Path
    sha256: str | None = None
    classes: int | None = None
    input_size: int | None = None
    version: str | None = None

    @property
    def label(self) -> str:
        """``name@version`` (``name`` for an unversioned entry), the form alerts name a model by."""
        return label(self.name, self.version)


def load_manifest(path: Path) -> dict[str, ManifestEntry]:
    """Read a manifest (``models: [...]`` or a bare list); file paths resolve against its folder.

    Returns ``name`` -> the deployed entry of that name, plus ``name@version`` -> entry for every versioned one.
    """
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = doc.get("models", []) if isinstance(doc, dict) else doc
    by_name: dict[str, list[ManifestEntry]] = {}
    out: dict[str, ManifestEntry] = {}
    for i, it in enumerate(items or []):
        if not isinstance(it, dict) or "name" not in it or "file" not in it:
            raise ValueError(f"{path}: models[{i}] needs at least 'name' and 'file'")
        f = Path(str(it["file"])).expanduser()
        entry = ManifestEntry(
            str(it["name"]), f if f.is_absolute() else path.parent / f,
            str(it["sha256"]).lower() if it.get("sha256") else None,
            int(it["classes"]) if it.get("classes") is not None else None,
            int(it["input_size"]) if it.get("input_size") is not None else None,
            str(it["version"]) if it.get("version") is not None else None)
        by_name.setdefault(entry.name, []).append(entry)
        if entry.version is not None:
            out[entry.label] = entry
    mapping = {"models": [{"name": e.name, "version": e.version} for es in by_name.values() for e in es],
               "deployments": doc.get("deployments") if isinstance(doc, dict) else None}
    for name, entries in by_name.items():
        want = deployed_version(mapping, name)
        out[name] = next((e for e in entries if same_version(e.version, want)), entries[0])
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DetectorRegistry:
    """Lazily created, cached :class:`YoloDetector` per detector name; safe to call from many threads.

    Args:
        site: the site config (``detectors`` and ``base_dir`` are used).
        manifest: path of a model manifest; default: the first existing of ``models/manifest.yaml``
            next to the config file, one folder above it, or under the working directory.

    Example:
        >>> reg = DetectorRegistry(site)  # doctest: +SKIP
        >>> reg.get("coco") is reg.get("coco")  # doctest: +SKIP
        True
    """

    def __init__(self, site: SiteConfig, manifest: str | Path | None = None) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._cache: dict[str, YoloDetector] = {}
        if manifest is not None:
            self.manifest_path: Path | None = Path(manifest)
        else:
            rel = "models/manifest.yaml"
            candidates = [site.resolve_path(rel), site.resolve_path("../" + rel), Path.cwd() / rel]
            self.manifest_path = next((p for p in candidates if p.is_file()), None)
        self.manifest = load_manifest(self.manifest_path) if self.manifest_path else {}

    def get(self, name: str) -> YoloDetector:
        """The detector called ``name``, created on first use.

        Raises:
            KeyError: ``name`` is neither in ``site.detectors`` nor in the manifest.
            FileNotFoundError / ValueError: the model file is missing, corrupt, or fails its hash check.
        """
        with self._lock:
            det = self._cache.get(name)
            if det is None:
                det = self._create(name)
                self._cache[name] = det
            return det

    def loaded(self) -> list[str]:
        """Names whose sessions exist already."""
        with self._lock:
            return sorted(self._cache)

    def reload_manifest(self) -> None:
        """Read the manifest again (a promotion or rollback changed which version a name means)."""
        if self.manifest_path is not None:
            self.manifest = load_manifest(self.manifest_path)

    def replace(self, name: str, detector: YoloDetector) -> None:
        """Serve ``detector`` as ``name`` from now on (the next :meth:`get` returns it; a hot swap)."""
        with self._lock:
            self._cache[name] = detector

    def config(self, name: str) -> DetectorConfig:
        """The settings of detector ``name`` (default ones for a manifest name the site does not define).

        Raises:
            KeyError: ``name`` is neither in ``site.detectors`` nor in the manifest.
        """
        cfg = self.site.detectors.get(name)
        if cfg is None:
            if name not in self.manifest:
                known = sorted({*self.site.detectors, *self.manifest})
                raise KeyError(f"unknown detector {name!r} (known: {', '.join(known) or 'none'})")
            cfg = DetectorConfig(model=name)
        return cfg

    def resolve(self, name: str, model: str | None = None) -> tuple[Path, DetectorConfig]:
        """Model file and settings of ``name`` (verifying the manifest hash where there is one).

        ``model`` (e.g. ``fire@v3``) is used instead of the detector's configured model (hot swap, canary).
        """
        cfg = self.config(name)
        if model is not None:
            cfg = cfg.model_copy(update={"model": model})
        entry = self.manifest.get(cfg.model)
        path = entry.file if entry else self.site.resolve_path(cfg.model)
        if entry is None:  # a plain path may still be a file the manifest vouches for
            entry = next((e for e in self.manifest.values() if _same_file(e.file, path)), None)
        if entry is not None:
            if entry.input_size and "input_size" not in cfg.model_fields_set:
                cfg = cfg.model_copy(update={"input_size": entry.input_size})
            if entry.sha256 and path.is_file():
                actual = sha256_file(path)
                if actual != entry.sha256:
                    raise ModelHashMismatch(
                        f"model {path} for detector {name!r} has sha256 {actual}, but manifest "
                        f"{self.manifest_path} entry {entry.label!r} expects {entry.sha256}")
        return path, cfg

    def _create(self, name: str) -> YoloDetector:
        return self.create(name)

    def create(self, name: str, model: str | None = None) -> YoloDetector:
        """A new (uncached) detector ``name``, optionally with ``model`` instead of its configured one."""
        path, cfg = self.resolve(name, model)
        return YoloDetector(path, input_size=cfg.input_size, providers=cfg.providers, threads=cfg.threads,
                            nms_iou=cfg.nms_iou, min_confidence=detector_floor(self.site, name, cfg))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
