"""A single-valued query parameter given twice is a 422 naming it (not its last value silently); list
parameters stay repeatable."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from pipeline.tickets.api import create_app
from tests.fixtures.auth import login

from .conftest import make_site


def test_a_repeated_single_valued_query_parameter_is_refused(tmp_path: Path) -> None:
    with TestClient(create_app(make_site(tmp_path), start_consumer=False)) as c:
        login(c)
        r = c.get("/audit?action=auth.login&action=user.add&limit=5")
        assert r.status_code == 422, r.text
        assert "action" in r.text and "more than once" in r.text
        r = c.get("/tickets?limit=5&limit=6")
        assert r.status_code == 422 and "'limit' takes one value" in r.text
        assert c.get("/audit?action=auth.login").status_code == 200
        assert c.get("/tickets?status=received&status=verified&hazard=fire&hazard=parking").status_code == 200
