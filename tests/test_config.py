"""Site config: validation errors with paths and lines, defaults, overrides, JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.analyze.incident import Hazard
from pipeline.config import HazardRule, RuleOverride, SiteConfig, load_config
from pipeline.config_errors import ConfigError, validate_text

REPO = Path(__file__).resolve().parents[1]
GRID = """grid:
  - code: T1
    name: Town
    children:
      - code: D1
        name: District
        children:
          - code: C1
            name: Community
            children:
              - {code: G1, name: Cell}
"""


def _cfg(extra: str) -> tuple[SiteConfig | None, list[str]]:
    return validate_text(GRID + extra)


def test_demo_config_is_valid() -> None:
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.grid_path(cfg.cameras[0].grid) == ["T01", "D01", "C01", "G001"]
    assert cfg.hazards[Hazard.PARKING].dwell_seconds == 8
    # Other hazards keep their defaults when one is tuned.
    assert cfg.hazards[Hazard.FIRE].severity == 5


@pytest.mark.parametrize(("extra", "expected"), [
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G1, zones: [{id: z, kind: no_parking, polygon: [[0,0],[1,1]]}]}\n",
     "cameras[0].zones[0].polygon: needs at least 3 points (line 13)"),
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G9}\n",
     "cameras[0].grid: 'G9' is not a level-4 grid cell code (known: G1) (line 13)"),
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G1}\n  - {id: c1, url: y.mp4, grid: G1}\n",
     "cameras[1].id: duplicate camera id 'c1' (line 14)"),
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G1, zones: [{id: z, kind: roof, polygon: [[0,0],[1,0],[1,1]]}]}\n",
     "cameras[0].zones[0].kind: Input should be"),
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G1, fps: 3}\n", "cameras[0].fps: Extra inputs are not permitted"),
    ("cameras:\n  - {id: c1, url: x.mp4, grid: G1, zones: [{id: z, kind: wall, polygon: [[0,0],[1,0],[1,1.5]]}]}\n",
     "point [1.0, 1.5] is outside 0..1"),
    ("hazards:\n  parking: {confirm_k: 4, confirm_n: 2}\n", "hazards.parking: confirm_k (4) must be <= confirm_n (2)"),
    ("detectors:\n  coco: {model: m.onnx, input_size: 500}\n", "detectors.coco.input_size: must be a multiple of 32"),
    ("cameras: [\n", "not valid YAML"),
])
def test_errors_name_their_path(extra: str, expected: str) -> None:
    cfg, errors = _cfg(extra)
    assert cfg is None
    assert any(expected in e for e in errors), errors


def test_every_error_is_reported_at_once() -> None:
    _, errors = _cfg("cameras:\n"
                     "  - {id: c1, url: x.mp4, grid: G9, zones: [{id: z, kind: wall, polygon: [[0,0],[1,1]]}]}\n"
                     "  - {id: c2, url: x.mp4, grid: G1, decode: sometimes}\n")
    assert len(errors) == 3, errors
    assert {e.split(":")[0] for e in errors} == {"cameras[0].zones[0].polygon", "cameras[0].grid",
                                                 "cameras[1].decode"}


def test_missing_detector_for_a_used_hazard() -> None:
    _, errors = _cfg("cameras:\n  - {id: c1, url: x.mp4, grid: G1, hazards: [fire]}\n")
    assert any(e.startswith("hazards.fire.detector: 'fire' is not in detectors") for e in errors), errors


def test_zone_override_merges_over_site_rule() -> None:
    rule = HazardRule(dwell_seconds=60, clear_seconds=30)
    merged = rule.merged(RuleOverride(dwell_seconds=5))
    assert (merged.dwell_seconds, merged.clear_seconds) == (5, 30)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    data: dict[str, Any] = yaml.safe_load(GRID)
    data["api"] = {"database_url": "sqlite:///data/t.db", "evidence_dir": "ev"}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(data))
    cfg = load_config(tmp_path / "site.yaml")
    assert cfg.database_url() == f"sqlite:///{tmp_path}/data/t.db"
    assert cfg.resolve_path(cfg.api.evidence_dir) == tmp_path / "ev"


def test_load_config_raises_with_all_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(GRID + "cameras:\n  - {id: c1, url: x, grid: NOPE}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "bad.yaml")
    assert exc.value.errors == ["cameras[0].grid: 'NOPE' is not a level-4 grid cell code (known: G1) (line 13)"]


def test_every_option_is_described_in_the_schema() -> None:
    schema = SiteConfig.model_json_schema()
    missing = [f"{name}.{field}" for name, d in schema["$defs"].items() for field, p in
               d.get("properties", {}).items() if "description" not in p]
    missing += [f for f, p in schema["properties"].items() if "description" not in p]
    assert not missing, missing


def test_config_reference_doc_is_current() -> None:
    from pipeline.config_docs import render

    committed = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed.strip() == render().strip(), "run: python -m pipeline.config_docs > docs/config.md"
