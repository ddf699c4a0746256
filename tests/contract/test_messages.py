"""Message models: committed JSON Schemas, examples, wire bytes, and that the package stays a leaf."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.contract.casework import CameraCheckResultV1, NotificationV1
from pipeline.contract.examples import example_alert, example_messages
from pipeline.contract.ids import SAFE_ID_RE, is_safe_id
from pipeline.contract.messages import CameraHealthV1, DebugRequestV1, OccupancyV1, WorkerStatusV1
from pipeline.contract.schemas import MESSAGE_MODELS, message_schemas, render, write_schemas
from pipeline.ingest.health import CameraHealth

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "messages"


def test_committed_schemas_match_the_generator() -> None:
    committed = {p.name: p.read_text(encoding="utf-8") for p in DOCS.glob("*.schema.json")}
    generated = {f"{name}.schema.json": render(s) for name, s in message_schemas().items()}
    assert committed.keys() == generated.keys(), "run: gridwatch schema --messages docs/messages"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale; run: gridwatch schema --messages docs/messages"


def test_write_schemas_writes_every_message(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(f"{n}.schema.json" for n in MESSAGE_MODELS)
    assert json.loads(paths[0].read_text(encoding="utf-8"))["$id"].endswith(paths[0].name)


@pytest.mark.parametrize("name", list(MESSAGE_MODELS))
def test_every_field_is_described_and_the_example_validates(name: str) -> None:
    schema = message_schemas()[name]
    for model in [schema, *schema.get("$defs", {}).values()]:
        for field, prop in model.get("properties", {}).items():
            assert prop.get("description"), f"{name}: {model.get('title')}.{field} has no description"
    example = schema["examples"][0]
    assert MESSAGE_MODELS[name].model_validate_json(json.dumps(example)) == example_messages()[name]


def test_contract_imports_nothing_else_of_pipeline() -> None:
    code = ("import sys, pipeline.contract, pipeline.contract.schemas; "
            "print(sorted(m for m in sys.modules if m.startswith('pipeline.') "
            "and not m.startswith('pipeline.contract')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_alert_bytes_are_unchanged() -> None:
    wire = example_alert().to_bytes()
    assert wire.startswith(b'{"schema_version":1,"event":"opened","incident_id":"cam1-z1-parking-1714550400-1"')
    assert b'"ts":"2024-05-01T08:02:00Z"' in wire and b"worker_id" not in wire and b"seq" not in wire


def test_worker_status_and_debug_request_bytes() -> None:
    ts = datetime.fromtimestamp(1_796_000_000.25, tz=UTC)
    assert WorkerStatusV1(state="offline", ts=ts).to_bytes() == \
        b'{"state": "offline", "ts": "2026-11-30T00:53:20.250000Z"}'
    assert DebugRequestV1(reply_to="gw/debug/reply/cam1/ab").to_bytes() == b'{"reply_to": "gw/debug/reply/cam1/ab"}'
    with pytest.raises(ValidationError):
        WorkerStatusV1.model_validate_json(b'{"state": "away", "ts": "2026-12-01T00:53:20Z"}')
    with pytest.raises(ValidationError):
        WorkerStatusV1.model_validate_json(b'{"state": "online", "ts": "2026-12-01T00:53:20"}')  # no zone


def test_health_model_covers_the_readers_health() -> None:
    reader_fields = {f.name for f in fields(CameraHealth)}
    assert not reader_fields - set(CameraHealthV1.model_fields)
    h = CameraHealthV1.model_validate({**CameraHealth("cam1").to_dict(), "future_field": [1], "ts": 1.8e9})
    assert h.state == "starting" and not hasattr(h, "future_field")
    with pytest.raises(ValidationError):
        CameraHealthV1.model_validate({"camera_id": "cam1"})  # state is required


def test_occupancy_refuses_negative_counts() -> None:
    good = example_messages()["occupancy"].model_dump()
    with pytest.raises(ValidationError):
        OccupancyV1.model_validate({**good, "used": -1})
    with pytest.raises(ValidationError):
        OccupancyV1.model_validate({**good, "grid_path": ["T1"]})


def test_planned_messages_are_strict_and_utc() -> None:
    result = example_messages()["camera-check-result"]
    data = json.loads(result.model_dump_json())
    assert data["checked_at"].endswith("Z")
    with pytest.raises(ValidationError):
        CameraCheckResultV1.model_validate({**data, "outcome": "maybe"})
    with pytest.raises(ValidationError):
        CameraCheckResultV1.model_validate({**data, "surprise": 1})
    n = NotificationV1.model_validate_json(example_messages()["notification"].model_dump_json()
                                           .replace("Z\"", "+08:00\""))
    assert n.ts.utcoffset() is not None and n.ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(("value", "ok"), [
    ("cam1-z1-parking-1714550400-1", True), ("a", True), ("a.b_c-d", True), ("a" * 200, True),
    ("a" * 201, False), ("", False), (".", False), ("..", False), ("../x", False), ("-a", False),
    ("a/b", False), ("a\n", False), ("a b", False),
])
def test_safe_id(value: str, ok: bool) -> None:
    assert is_safe_id(value) is ok
    assert isinstance(SAFE_ID_RE.pattern, str)


def test_models_are_pydantic() -> None:
    assert all(issubclass(m, BaseModel) for m in MESSAGE_MODELS.values())


@pytest.mark.parametrize("module", ["enums", "ids", "messages", "topics", "examples", "schemas", "__init__"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module("pipeline.contract" if module == "__init__" else f"pipeline.contract.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0 and result.attempted > 0
