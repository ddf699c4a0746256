"""The `gridwatch` CLI: check-config exit codes and messages, schema output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_check_config_ok() -> None:
    result = runner.invoke(app, ["check-config", str(REPO / "configs" / "demo.yaml")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_check_config_prints_each_error_with_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: []\ncameras:\n  - {id: a, url: x, grid: Z, zones: [{id: z, kind: wall, "
                   "polygon: [[0,0],[1,1]]}]}\n")
    result = runner.invoke(app, ["check-config", str(bad)])
    assert result.exit_code == 1
    assert "cameras[0].zones[0].polygon: needs at least 3 points (line 3)" in result.output
    assert "cameras[0].grid: 'Z' is not a level-4 grid cell code" in result.output


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["check-config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2


@pytest.mark.parametrize(("args", "key"), [([], "SiteConfig"), (["--alert"], "AlertV1")])
def test_schema_prints_json_schema(args: list[str], key: str) -> None:
    result = runner.invoke(app, ["schema", *args])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == key and "properties" in schema


def test_worker_refuses_without_broker_url(tmp_path: Path) -> None:
    result = runner.invoke(app, ["worker", "--config", str(REPO / "configs" / "demo.yaml")])
    assert result.exit_code == 2
    assert "mqtt.url is not set" in result.output
