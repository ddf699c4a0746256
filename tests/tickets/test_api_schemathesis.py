"""Property-based contract test of the ticket API against its own OpenAPI document (schemathesis).

Every operation of ``/openapi.json`` gets a bounded number of generated requests, valid (positive) and
invalid (negative) ones, sent in-process through schemathesis' ASGI transport to an app on SQLite seeded
with tickets in several states (so 200, 404, 409 and 422 answers all occur). Each response runs through
schemathesis' checks; the test collects every distinct failure and asserts there are none: no server
error, no undeclared status code, no body that breaks its declared schema, no valid request refused and
no invalid one accepted. Hypothesis is derandomized and capped (``MAX_EXAMPLES`` per operation and mode),
so a run is reproducible and short.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation, BaseSchema

from pipeline.tickets.api import create_app
from pipeline.tickets.payload import AlertIn
from pipeline.tickets.service import apply_alert

from .conftest import make_alert, make_site

MAX_EXAMPLES = 30
"""Generated requests per operation and generation mode (positive, negative)."""

OPERATIONS = [
    "GET /healthz", "GET /metrics", "GET /tickets", "GET /tickets/{ticket_id}",
    "POST /tickets/{ticket_id}/transition", "GET /tickets/{ticket_id}/evidence/{kind}",
    "GET /evidence/{incident_id}/{name}", "GET /cameras", "GET /dead-letters", "GET /grid",
]
"""Every operation the document must list (a new route shows up as a mismatch, so it gets tested too)."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app on SQLite with tickets in several states and one evidence file."""
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    application = create_app(make_site(tmp), start_consumer=False)
    with TestClient(application) as client:
        sessions = application.state.tickets.sessions
        ids = [apply_alert(sessions, AlertIn.model_validate(make_alert(camera=cam, hazard=hz)
                                                            .model_dump(mode="json"))).ticket_id
               for cam, hz in [("cam1", "parking"), ("cam1", "fire"), ("cam2", "clutter"), ("cam3", "poster")]]
        client.post(f"/tickets/{ids[1]}/transition", json={"to": "assigned", "actor": "li"})
        client.post(f"/tickets/{ids[2]}/transition", json={"to": "false_alarm", "actor": "li"})
        yield application


@pytest.fixture(scope="module")
def schema(app: FastAPI) -> BaseSchema:
    """The app's OpenAPI document, loaded in-process (no network)."""
    return schemathesis.openapi.from_asgi("/openapi.json", app)


Operation = APIOperation[Any, Any, Any, Any]


def _operations(schema: BaseSchema) -> dict[str, Operation]:
    ops: dict[str, Operation] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot use an operation: {result}"
        op = result.ok()
        ops[op.label] = op
    return ops


def test_document_lists_every_operation(schema: BaseSchema) -> None:
    assert sorted(_operations(schema)) == sorted(OPERATIONS)


def _failures_of(exc: BaseException) -> list[Failure]:
    if isinstance(exc, FailureGroup):
        return [f for e in exc.exceptions for f in _failures_of(e)]
    if isinstance(exc, Failure):
        return [exc]
    raise exc


def _run(operation: Operation, mode: GenerationMode, found: dict[str, str]) -> int:
    """Send ``MAX_EXAMPLES`` generated requests; put each distinct failure into ``found``; return the count."""
    sent = 0

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(data=st.data())
    def run_examples(data: st.DataObject) -> None:
        nonlocal sent
        case: Case[Any] = data.draw(operation.as_strategy(generation_mode=mode))
        sent += 1
        try:
            response = case.call()
        except Exception as exc:  # the in-process transport re-raises what the app raised: a server error
            key = f"{mode.value} {operation.label}: server error {type(exc).__name__}"
            found.setdefault(key, f"{key}\n  {exc}\n  {case.as_curl_command()}")
            return
        try:
            case.validate_response(response)
        except (Failure, FailureGroup) as exc:
            for failure in _failures_of(exc):
                key = f"{mode.value} {operation.label}: {failure.title}"
                found.setdefault(key, f"{key}\n  {failure.message[:300]}\n  {case.as_curl_command()}")

    run_examples()
    return sent


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_its_schema(schema: BaseSchema, label: str) -> None:
    operation = _operations(schema)[label]
    found: dict[str, str] = {}
    # Negative requests need something to break: an operation without parameters or body has none.
    has_inputs = any(True for _ in operation.iter_parameters()) or bool(list(operation.body))
    modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if has_inputs else [])]
    sent = sum(_run(operation, mode, found) for mode in modes)
    assert sent > 0
    assert not found, f"{len(found)} distinct failure(s):\n" + "\n".join(found.values())
