"""Shared pytest set-up: fixture plugins and the location of ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.auth import TEST_ADMIN_PASSWORD

# Every app a test starts creates its first admin with this password (GRIDWATCH_ADMIN_PASSWORD), so tests
# log in with tests.fixtures.auth.login(); subprocesses (`gridwatch run`) inherit it.
os.environ.setdefault("GRIDWATCH_ADMIN_PASSWORD", TEST_ADMIN_PASSWORD)

pytest_plugins = ["tests.fixtures.media", "tests.fixtures.rtsp", "tests.fixtures.mqtt", "tests.fixtures.hazard_media"]

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRIDWATCH_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder (models, datasets, clips). In CI it must exist; elsewhere tests skip."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            raise RuntimeError(f"shared data not found at {SHARED}")
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
