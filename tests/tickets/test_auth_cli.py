"""``gridwatch user add/list/disable/enable/reset-password/token`` on a site's real SQLite store, checked
through the API's login."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from pipeline.cli import app as cli
from pipeline.config import load_config
from pipeline.tickets.api import create_app
from tests.fixtures.auth import bearer

from .conftest import CAMERAS, GRID

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"grid": GRID, "cameras": CAMERAS,
                                    "api": {"database_url": "sqlite:///tickets.db", "evidence_dir": "evidence"}}))
    return path


def _cli(config: Path, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(cli, ["user", *args, "--config", str(config)], input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def _login(client: TestClient, user: str, password: str) -> int:
    return client.post("/auth/login", json={"username": user, "password": password}).status_code


def test_user_lifecycle_from_the_command_line(config: Path) -> None:
    _cli(config, "add", "zhang", "--role", "dispatcher", "--scope", "C1", "--scope", "T1/D2",
         "--password-stdin", stdin="zhang-secret-1\n")
    users = json.loads(_cli(config, "list", "--json"))
    zhang = next(u for u in users if u["username"] == "zhang")
    assert (zhang["role"], zhang["scopes"], zhang["disabled"]) == ("dispatcher", ["T1/D1/C1", "T1/D2"], False)
    assert [u["username"] for u in users] == ["zhang"]  # no admin was made behind the operator's back

    with TestClient(create_app(load_config(config), start_consumer=False)) as client:
        assert _login(client, "zhang", "zhang-secret-1") == 200
        assert client.get("/auth/me").json()["scopes"] == ["T1/D1/C1", "T1/D2"]
        _cli(config, "reset-password", "zhang", "--password-stdin", stdin="zhang-secret-2\n")
        assert client.get("/auth/me").status_code == 401  # the browser login ended
        assert _login(client, "zhang", "zhang-secret-1") == 401
        assert _login(client, "zhang", "zhang-secret-2") == 200
        secret = _cli(config, "token", "zhang", "--name", "12345 bridge").splitlines()[0]
        assert client.get("/auth/me", headers=bearer(secret)).json()["username"] == "zhang"
        _cli(config, "disable", "zhang")
        assert client.get("/auth/me", headers=bearer(secret)).status_code == 401
        assert client.get("/auth/me").status_code == 401
        assert _login(client, "zhang", "zhang-secret-2") == 401
        _cli(config, "enable", "zhang")
        assert _login(client, "zhang", "zhang-secret-2") == 200


@pytest.mark.parametrize(("args", "message"), [
    (["add", "x", "--role", "patrol", "--scope", "D1"], "used at T1/D1, T10/D1"),
    (["add", "x", "--role", "patrol", "--scope", "G404"], "no grid node"),
    (["add", "x", "--role", "patrol"], "needs at least one grid scope"),
    (["add", "x", "--role", "boss", "--scope", "G1"], "unknown role"),
    (["add", "bad name", "--role", "viewer", "--scope", "G1"], "must match"),
    (["disable", "ghost"], "no user"),
])
def test_bad_user_input_is_one_clear_line(config: Path, args: list[str], message: str) -> None:
    result = runner.invoke(cli, ["user", *args, "--config", str(config)])
    assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output


def test_short_password_is_refused(config: Path) -> None:
    result = runner.invoke(cli, ["user", "add", "li", "--role", "patrol", "--scope", "G1", "--password-stdin",
                                 "--config", str(config)], input="short\n")
    assert result.exit_code == 2 and "at least 10 characters" in result.output


def test_zero_config_run_prints_the_one_time_admin_password_and_the_url(tmp_path: Path) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    import httpx

    config = tmp_path / "site.yaml"
    config.write_text(yaml.safe_dump({"grid": GRID, "api": {"port": 0}, "mqtt": {"embedded_port": 0}}))
    env = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_ADMIN_PASSWORD"} | {"COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "-c", str(config), "--status-every", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline and not any("command centre at" in ln for ln in lines):
            lines.append(proc.stdout.readline())
        out = "".join(lines)
        password = re.search(r"one-time password (\S+)", out)
        url = re.search(r"command centre at (http://\S+?)/ ", out)
        assert password and url, out
        r = httpx.post(f"{url.group(1)}/auth/login", json={"username": "admin", "password": password.group(1)})
        assert r.status_code == 200, out
        assert out.count(password.group(1)) == 1  # printed once
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
