"""Render the site-config reference (docs/config.md) from the pydantic models' field descriptions.

``python -m pipeline.config_docs > docs/config.md``; a test keeps the committed file current.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipeline.config import (
    ApiConfig,
    CameraConfig,
    DetectorConfig,
    GridNode,
    HazardRule,
    MqttConfig,
    RuleOverride,
    SiteConfig,
    WorkerConfig,
    ZoneConfig,
)

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("site (top level)", SiteConfig), ("grid[] (GridNode)", GridNode), ("cameras[]", CameraConfig),
    ("cameras[].zones[]", ZoneConfig), ("hazards.<hazard>", HazardRule),
    ("cameras[].zones[].overrides.<hazard>", RuleOverride), ("detectors.<name>", DetectorConfig),
    ("mqtt", MqttConfig), ("api", ApiConfig), ("worker", WorkerConfig),
]


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pipeline.config.", "")
    text = text.replace("pipeline.analyze.incident.", "")
    return text.replace("<class '", "").replace("'>", "").replace("<enum '", "").replace("|", "\\|")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(see section)"
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            return "(see section)"
        return f"`{json.dumps(value, default=str)}`"
    if field.default is PydanticUndefined:
        return "**required**"
    return f"`{json.dumps(field.default, default=str)}`"


def render() -> str:
    """The whole reference as Markdown."""
    out = ["# Site config reference", "",
           "Generated from `pipeline/config.py` by `python -m pipeline.config_docs > docs/config.md`.",
           "Validate a file with `gridwatch check-config FILE`; the JSON Schema is `gridwatch schema`.", ""]
    for title, model in SECTIONS:
        out += [f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], "",
                "| option | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render())
