"""The shipped front-end build (pipeline/web/static/app) was made from the sources in web/: ``npm run build``
records a sha256 of the sources in ``source-hash.txt`` (web/scripts/stamp.mjs); this test recomputes it.
A failure means: run ``cd web && npm ci && npm run build`` and commit pipeline/web/static/app."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
APP = ROOT / "pipeline" / "web" / "static" / "app"
SOURCES = ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"]
"""Keep in step with SOURCES in web/scripts/stamp.mjs."""


def source_hash(web: Path) -> str:
    """sha256 over ``<relative path>\\0<bytes>\\0`` of every source file, sorted by path (as stamp.mjs)."""
    files: list[Path] = []
    for name in SOURCES:
        p = web / name
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    h = hashlib.sha256()
    for rel in sorted(f.relative_to(web).as_posix() for f in files):
        h.update(rel.encode() + b"\0")
        h.update((web / rel).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def test_shipped_build_matches_the_sources() -> None:
    recorded = (APP / "source-hash.txt").read_text().strip()
    assert recorded == source_hash(WEB), "pipeline/web/static/app is stale: cd web && npm ci && npm run build"


def test_the_hash_sees_a_source_change(tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "web"
    copy.mkdir()
    for name in SOURCES:
        if (WEB / name).is_dir():
            shutil.copytree(WEB / name, copy / name)
        else:
            shutil.copy(WEB / name, copy / name)
    before = source_hash(copy)
    assert before == source_hash(WEB)
    (copy / "src" / "messages.ts").write_text((copy / "src" / "messages.ts").read_text() + "\n// edit\n")
    assert source_hash(copy) != before


def test_index_references_built_assets_that_ship() -> None:
    index = (APP / "index.html").read_text()
    assets = re.findall(r'(?:src|href)="/static/app/(assets/[^"]+)"', index)
    assert assets, index
    for a in assets:
        assert (APP / a).is_file(), a
    scripts = sorted((APP / "assets").glob("*.js"))
    total = sum(p.stat().st_size for p in scripts)
    print(f"front-end JS: {total / 1024:.0f} KiB in {len(scripts)} files")
    assert total < 1_000_000, "bundle grew past 1 MB: import only the ECharts parts used"


@pytest.mark.parametrize("glob", ["web/static/app/*", "web/static/app/assets/*"])
def test_package_data_ships_the_build(glob: str) -> None:
    assert f'"{glob}"' in (ROOT / "pyproject.toml").read_text()
