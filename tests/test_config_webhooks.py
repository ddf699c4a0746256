"""The webhook config: validation, and secrets of the targets masked in logs once a site file is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import load_config
from pipeline.config_webhooks import WebhooksConfig
from pipeline.redact import redact_text
from tests.tickets.conftest import CAMERAS, GRID

SECRET = "hook-secret-0123456789abcdef"


@pytest.mark.parametrize("bad", [
    {"targets": [{"name": "a", "url": "ftp://x.example/hook"}]},
    {"targets": [{"name": "a", "url": "http://x.example"}, {"name": "a", "url": "http://y.example"}]},
    {"targets": [{"name": "a", "url": "http://x.example", "timeout_seconds": 100}], "lease_seconds": 150},
    {"targets": [{"name": "a", "url": "http://x.example", "secret": "short"}]},
    {"targets": [{"name": "a", "url": "http://x.example", "grid": ["T1/D1/C1/G1/X"]}]},
    {"targets": [{"name": "a", "url": "http://x.example", "format": "slack"}]},
])
def test_bad_webhook_config_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        WebhooksConfig.model_validate(bad)


def test_loaded_config_masks_webhook_secrets_in_logs(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"grid": GRID, "cameras": CAMERAS, "api": {"webhooks": {"targets": [
        {"name": "bot", "url": "https://qyapi.example/send?key=wecom-key-5b8e21f0", "secret": SECRET},
        {"name": "cases", "url": "https://hook:basic-pw-77Qx@cases.example/in"}]}}}), encoding="utf-8")
    load_config(path)
    line = redact_text(f"POST failed: wecom-key-5b8e21f0 secret {SECRET} password basic-pw-77Qx")
    assert "wecom-key-5b8e21f0" not in line and SECRET not in line and "basic-pw-77Qx" not in line


def test_target_filter_and_backoff_schedule() -> None:
    target = WebhooksConfig.model_validate({"targets": [
        {"name": "a", "url": "http://x.example", "grid": ["/T1/D1/"], "hazards": ["fire"],
         "backoff_base_seconds": 10, "backoff_max_seconds": 100}]}).targets[0]
    assert target.grid == ["T1/D1"]
    assert target.matches("T1/D1", "fire") and target.matches("T1/D1/C1/G1", "fire")
    assert not target.matches("T1/D10/C1/G1", "fire") and not target.matches("T1/D1/C1/G1", "parking")
    assert [target.backoff_seconds(n) for n in (1, 2, 3, 4, 5, 1000)] == [10, 20, 40, 80, 100, 100]
