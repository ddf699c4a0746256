"""Cameras in bulk: export to and import from YAML and CSV, and the plan of what an import changes.

* **YAML** is the site YAML's own shape, ``cameras:`` and the list of camera entries (a whole site YAML is
  accepted too; only its ``cameras`` are read). Parsed within the site YAML's limits (size, aliases, depth,
  duplicate keys: :mod:`pipeline.config_yaml`).
* **CSV** has one row per camera and one column per camera field (:data:`CSV_COLUMNS`, the fields of
  ``CameraConfig`` in order); ``hazards`` is a ``;``-separated list, structured fields (``zones``, and any
  other list or object field) are JSON as ``GET /cameras/{id}/config`` shows them, an empty cell means the
  field's default. Spreadsheet editors keep it intact (UTF-8, quoted JSON). A field added to
  ``CameraConfig`` becomes a column by itself, so the round trip never drops it.

Exports redact stream credentials (``rtsp://***@host/...``) unless asked otherwise. An imported (or PUT)
camera whose URL is exactly the redacted form of the stored one keeps the stored URL, so an export edited
and imported again never loses a password; any other URL containing ``***`` is refused.

Example:
    >>> rows = parse_csv("id,url,grid,hazards,zones\\ncam1,a.mp4,G1,fire;parking,[]\\n")
    >>> rows[0]["hazards"], rows[0]["zones"]
    (['fire', 'parking'], [])
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, get_args, get_origin

import yaml

from pipeline.config import CameraConfig
from pipeline.config_yaml import ConfigFileError, compose_config, decode_config
from pipeline.redact import redact_url


def _is_scalar(annotation: Any) -> bool:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) else [annotation]
    return all(isinstance(a, type) and (issubclass(a, str | int | float | bool | Enum)) for a in args)


CSV_COLUMNS = tuple(CameraConfig.model_fields)
"""Columns of the camera CSV, in order: every field of the camera entry."""
JSON_COLUMNS = frozenset(n for n, f in CameraConfig.model_fields.items()
                         if n != "hazards" and not _is_scalar(f.annotation))
"""Columns whose cells are JSON (zones, and other structured fields)."""
REDACTED = "***"


class BulkFormatError(ValueError):
    """The file cannot be read as cameras at all; ``loc`` says where (row or key)."""

    def __init__(self, msg: str, loc: tuple[Any, ...] = ()) -> None:
        super().__init__(msg)
        self.loc = loc


def shown_spec(camera: CameraConfig, credentials: bool = False) -> dict[str, Any]:
    """The camera's YAML entry as JSON, the URL redacted unless ``credentials``."""
    spec = camera.model_dump(mode="json")
    if not credentials:
        spec["url"] = redact_url(camera.url)
    return spec


def restore_url(data: dict[str, Any], stored: CameraConfig | None) -> dict[str, Any]:
    """``data`` with the stored URL put back where ``data`` carries its redacted form.

    Raises:
        BulkFormatError: any other URL with ``***`` in it (a redacted URL of another camera, or a typo).
    """
    url = data.get("url")
    if not isinstance(url, str) or REDACTED not in url:
        return data
    if stored is not None and url == redact_url(stored.url):
        return {**data, "url": stored.url}
    raise BulkFormatError("url carries redacted credentials ('***') that match no stored URL of this camera; "
                          "give the real user name and password", ("url",))


# -- export ---------------------------------------------------------------------------------------


def export_yaml(cameras: list[CameraConfig], credentials: bool = False) -> str:
    """``cameras:`` and every camera's entry, ready to paste into a site YAML."""
    doc = {"cameras": [shown_spec(c, credentials) for c in cameras]}
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def export_csv(cameras: list[CameraConfig], credentials: bool = False) -> str:
    """One row per camera, columns :data:`CSV_COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in cameras:
        spec = shown_spec(c, credentials)
        writer.writerow([_cell(column, spec.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "hazards":
        return ";".join(value)
    if column in JSON_COLUMNS:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# -- import ---------------------------------------------------------------------------------------


def parse_yaml(raw: bytes) -> list[Any]:
    """The camera entries of a YAML document (``cameras:`` list, or a whole site YAML).

    Raises:
        BulkFormatError: not UTF-8 text, bad YAML, over a limit, duplicate keys, no ``cameras`` list.
    """
    try:
        data, _, duplicates = compose_config(decode_config(raw))
    except (ConfigFileError, yaml.YAMLError) as exc:
        raise BulkFormatError(f"not a readable YAML document: {exc}") from None
    if duplicates:
        path, msg, line = duplicates[0]
        raise BulkFormatError(f"line {line}: {msg}", path)
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
        raise BulkFormatError("expected a mapping with a `cameras:` list (the site YAML's shape)", ("cameras",))
    return list(data["cameras"])


def _csv_value(column: str, value: str, row: int) -> Any:
    if column == "hazards":
        return [h.strip() for h in value.split(";") if h.strip()]
    if column in JSON_COLUMNS:
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise BulkFormatError(f"row {row}: {column} is not JSON ({exc.msg})", (row, column)) from None
    if column == "enabled":
        return {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}.get(value.lower(),
                                                                                                    value)
    return value


def parse_csv(raw: bytes | str) -> list[dict[str, Any]]:
    """Camera entries from CSV rows (header :data:`CSV_COLUMNS`, any order, ``id``/``url``/``grid`` required).

    Raises:
        BulkFormatError: not UTF-8, a column that is not a camera field, a missing column, bad ``zones`` JSON.
    """
    try:
        text = raw if isinstance(raw, str) else decode_config(raw)
    except ConfigFileError as exc:
        raise BulkFormatError(str(exc)) from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise BulkFormatError(f"unknown column(s) {unknown}; the columns are {', '.join(CSV_COLUMNS)}", ("header",))
    missing = [c for c in ("id", "url", "grid") if c not in header]
    if missing:
        raise BulkFormatError(f"missing column(s) {missing}", ("header",))
    rows: list[dict[str, Any]] = []
    try:
        for n, record in enumerate(reader, start=2):  # line 1 is the header
            if None in record:
                raise BulkFormatError(f"row {n}: more cells than columns", (n,))
            rows.append({k: _csv_value(k, v, n) for k, v in record.items() if v not in ("", None)})
    except csv.Error as exc:
        raise BulkFormatError(f"not CSV: {exc}") from None
    return rows


# -- the plan -------------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What an import does: camera ids created, replaced, left as they are, deleted."""

    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    writes: list[CameraConfig] = field(default_factory=list)
    """The cameras to store (created and replaced), in file order."""


def plan_import(incoming: list[CameraConfig], stored: dict[str, CameraConfig], delete_missing: bool,
                deletable: set[str]) -> ImportPlan:
    """Compare ``incoming`` with ``stored``; with ``delete_missing``, the ``deletable`` ids not in the file go."""
    plan = ImportPlan()
    for camera in incoming:
        old = stored.get(camera.id)
        if old is None:
            plan.created.append(camera.id)
            plan.writes.append(camera)
        elif old == camera:
            plan.unchanged.append(camera.id)
        else:
            plan.replaced.append(camera.id)
            plan.writes.append(camera)
    if delete_missing:
        seen = {c.id for c in incoming}
        plan.deleted = [cid for cid in stored if cid not in seen and cid in deletable]
    return plan
