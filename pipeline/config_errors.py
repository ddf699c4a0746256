"""Turn YAML and pydantic failures into one line per error: ``path: message (line N)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config import SiteConfig, camera_grid_errors
from pipeline.config_yaml import ConfigFileError, YamlLimitError, compose_config, decode_config, read_config_bytes


class ConfigError(ValueError):
    """A site config failed to load; ``errors`` holds one readable line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid config:\n" + "\n".join(f"  {e}" for e in errors))
        self.errors = errors


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _parse_path(path: str) -> tuple[Any, ...]:
    """``cameras[3].zones[0]`` -> ``('cameras', 3, 'zones', 0)``."""
    return tuple(int(x) if x.isdigit() else x for x in path.replace("[", ".").replace("]", "").split("."))


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each value path of a composed YAML document to its 1-based line."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[(*path, key)] = k.start_mark.line + 1
            lines.update({p: n for p, n in _line_index(v, (*path, key)).items() if p != (*path, key)})
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            lines.update(_line_index(v, (*path, i)))
    return lines


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    # Walk up until a prefix of the path exists in the document (missing fields report their parent).
    for n in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:n])
        if key in lines:
            return lines[key]
    return None


def _yaml_error_text(exc: yaml.YAMLError, text: str) -> str:
    """One line for a YAML syntax error or an exceeded limit, with its line and column."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"not valid YAML: character U+{char:04X} is not allowed in YAML text (line {line})"
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    prefix = "refused" if isinstance(exc, YamlLimitError) else "not valid YAML"
    return f"{prefix}: {getattr(exc, 'problem', None) or exc}{where}"


def validate_bytes(raw: bytes, source: str = "<config>") -> tuple[SiteConfig | None, list[str]]:
    """:func:`validate_text` of raw file content; binary or non-UTF-8 content is one error line."""
    try:
        text = decode_config(raw)
    except ConfigFileError as exc:
        return None, [f"{source}: {exc}"]
    return validate_text(text, source)


def validate_file(path: str | Path) -> tuple[SiteConfig | None, list[str]]:
    """Read and validate a config file (size-capped, see :mod:`pipeline.config_yaml`).

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when missing).
    """
    try:
        raw = read_config_bytes(path)
    except ConfigFileError as exc:
        return None, [f"{path}: {exc}"]
    return validate_bytes(raw, str(path))


def validate_text(text: str, source: str = "<config>") -> tuple[SiteConfig | None, list[str]]:
    """Validate YAML text; return the config (or None) and every error as ``path: message (line N)``.

    Example:
        >>> cfg, errs = validate_text("grid: []\\ncameras: [{id: c1, url: x, grid: G9}]")
        >>> errs
        ["cameras[0].grid: 'G9' is not a level-4 grid cell code (known: none) (line 2)"]
    """
    try:
        data, node, duplicates = compose_config(text)
    except yaml.YAMLError as exc:
        return None, [f"{source}: {_yaml_error_text(exc, text)}"]
    if not isinstance(data, dict):
        return None, [f"{source}: the top level must be a mapping with at least `grid:`"]
    lines = _line_index(node) if node is not None else {}
    # A duplicated key is an error, yet the rest is still validated (last value) to report everything.
    dup_errors = [f"{_format_loc(path)}: {msg} (line {line})" for path, msg, line in duplicates]
    try:
        cfg = SiteConfig.model_validate(data)
        return (None, dup_errors) if dup_errors else (cfg, [])
    except ValidationError as exc:
        errors: list[str] = list(dup_errors)
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            msg = str(err["msg"]).removeprefix("Value error, ")
            if not loc and ": " in msg:
                # Cross-field checks already name their own paths, several per message.
                for item in msg.split("; "):
                    path, _, text_ = item.partition(": ")
                    line = _line_for(lines, _parse_path(path))
                    errors.append(f"{path}: {text_}" + (f" (line {line})" if line else ""))
                continue
            line = _line_for(lines, loc)
            errors.append(f"{_format_loc(loc) or '<root>'}: {msg}" + (f" (line {line})" if line else ""))
        # Pydantic skips cross-field checks once a field fails; run the ones that work on raw data.
        for item in camera_grid_errors(data):
            path, _, text_ = item.partition(": ")
            if not any(e.startswith(f"{path}: ") for e in errors):
                line = _line_for(lines, _parse_path(path))
                errors.append(f"{path}: {text_}" + (f" (line {line})" if line else ""))
        return None, errors
