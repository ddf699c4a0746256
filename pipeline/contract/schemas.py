"""JSON Schema of every message, as committed in ``docs/messages/<name>.schema.json``.

``gridwatch schema --messages docs/messages`` (or ``python -m pipeline.contract.schemas docs/messages``)
rewrites the files; a test fails when a committed file differs from :func:`message_schemas`.

Example:
    >>> sorted(message_schemas())[:3]
    ['alert', 'camera-check-request', 'camera-check-result']
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.contract.camera_config import CameraConfigV1, CameraIndexV1
from pipeline.contract.casework import CameraCheckRequestV1, CameraCheckResultV1, NotificationV1
from pipeline.contract.examples import example_messages
from pipeline.contract.messages import AlertV1, CameraHealthV1, DebugRequestV1, OccupancyV1, WorkerStatusV1
from pipeline.contract.resend import ResendRequestV1
from pipeline.contract.webhook import WebhookEventV1

SCHEMA_BASE_URL = "https://gridwatch.example/messages/"
"""``$id`` of each schema is this + ``<name>.schema.json``."""

MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "alert": AlertV1,
    "health": CameraHealthV1,
    "occupancy": OccupancyV1,
    "worker-status": WorkerStatusV1,
    "debug-request": DebugRequestV1,
    "camera-check-request": CameraCheckRequestV1,
    "camera-check-result": CameraCheckResultV1,
    "notification": NotificationV1,
    "resend-request": ResendRequestV1,
    "webhook-event": WebhookEventV1,
    "camera-config": CameraConfigV1,
    "camera-index": CameraIndexV1,
}
"""File name stem -> message model."""


def json_schema(name: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12, serialization mode: what goes on the wire) of one message.

    Raises:
        KeyError: ``name`` is not one of :data:`MESSAGE_MODELS`.
    """
    model = MESSAGE_MODELS[name]
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"{SCHEMA_BASE_URL}{name}.schema.json"
    example = example_messages()[name]
    to_bytes = getattr(example, "to_bytes", None)  # the wire form where the model has one
    schema["examples"] = [json.loads(to_bytes()) if callable(to_bytes) else example.model_dump(mode="json")]
    return schema


def message_schemas() -> dict[str, dict[str, Any]]:
    """Every message's schema by name."""
    return {name: json_schema(name) for name in MESSAGE_MODELS}


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema file."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every message into ``directory`` (created); returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in message_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    for written in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "docs/messages"):
        print(written)
