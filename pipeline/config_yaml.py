"""Safe reading of site YAML: size, encoding, nesting and alias limits, duplicate keys.

``yaml.safe_load`` constructs no Python objects, but it still trusts the document's shape: a
"billion laughs" file of a few hundred bytes expands through aliases into 10⁹ nodes, which every
consumer of the data (line index, validation) then walks; duplicate keys silently keep the last
value. This module reads a config with:

* a file size cap (:data:`MAX_CONFIG_BYTES`), and a clear one-line error for binary, UTF-16 and
  non-UTF-8 files;
* the document composed by libyaml (C; aliases stay shared nodes, nothing is expanded), then checked
  before anything walks it: nesting depth (:data:`MAX_DEPTH`), alias references
  (:data:`MAX_ALIASES`) and the size with every alias expanded (:data:`MAX_EXPANDED_NODES`), each
  counted once per distinct node; recursive aliases are refused;
* duplicate mapping keys reported with both lines.

Anchors, aliases and merge keys (``<<: *defaults``) keep working within the limits.

Example:
    >>> data, node, duplicates = compose_config("a: 1\\nb: {c: 2}\\n")
    >>> data
    {'a': 1, 'b': {'c': 2}}
    >>> compose_config("a: 1\\na: 2\\n")[2]
    [(('a',), "duplicate key 'a', first written at line 1", 2)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 2 * 1024 * 1024  # a 1,000-camera site is ~130 KiB
MAX_DEPTH = 64
MAX_ALIASES = 10_000
MAX_EXPANDED_NODES = 1_000_000

# (path in the document, message, 1-based line)
Problem = tuple[tuple[Any, ...], str, int]


class ConfigFileError(ValueError):
    """The file cannot be a site YAML at all (too big, binary, not UTF-8); one readable line."""


class YamlLimitError(yaml.MarkedYAMLError):
    """The document exceeds a nesting, alias or size limit (reported like a YAML syntax error)."""


def read_config_bytes(path: str | Path) -> bytes:
    """Read a config file, refusing files over :data:`MAX_CONFIG_BYTES` without reading them whole.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        ConfigFileError: the file is too big.
    """
    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"the file is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB; "
                              "a site config is text of at most a few hundred KiB")
    return raw


def decode_config(raw: bytes) -> str:
    """UTF-8 (optionally with a BOM) text of a config file.

    Raises:
        ConfigFileError: binary, UTF-16/32 or otherwise non-UTF-8 content, with where it was found.
    """
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"the text is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigFileError("the file is UTF-16 text; save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise ConfigFileError(f"binary file (NUL byte at offset {nul}, line {line}), not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigFileError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line}, column {column} "
                              "(save the file as UTF-8)") from None


class _DepthLimitedLoader(yaml.SafeLoader):
    """Pure-Python SafeLoader (when libyaml is missing) that stops composing past :data:`MAX_DEPTH`.

    Its composer is recursive: without the limit a deeply nested file is a ``RecursionError``.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels",
                                     problem_mark=self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Refuse a document whose alias-expanded tree is too big or too deep, or that refers to itself.

    Memoised per node, so a billion-laughs document costs as many steps as it has distinct nodes.
    """
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}
    active: set[int] = set()
    referenced: set[int] = set()
    aliases = 0  # references to a node met before: what an alias (*name) composes to
    # Iterative post-order walk: (node, children pushed?)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if expanded:
            kids = _children(node)
            sizes[key] = 1 + sum(sizes[id(k)] for k in kids)
            depths[key] = 1 + max((depths[id(k)] for k in kids), default=0)
            active.discard(key)
            if sizes[key] > MAX_EXPANDED_NODES:
                raise YamlLimitError(problem=f"more than {MAX_EXPANDED_NODES:,} nodes with aliases expanded",
                                     problem_mark=node.start_mark)
            if depths[key] > MAX_DEPTH:
                raise YamlLimitError(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=node.start_mark)
            continue
        if key in sizes:
            continue
        if key in active:
            raise YamlLimitError(problem="an alias refers to a node that contains it (recursive structure)",
                                 problem_mark=node.start_mark)
        active.add(key)
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in active:
                raise YamlLimitError(problem="an alias refers to a node that contains it (recursive "
                                     "structure)", problem_mark=kid.start_mark)
            if id(kid) in referenced:
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise YamlLimitError(problem=f"more than {MAX_ALIASES} aliases (*name)",
                                         problem_mark=kid.start_mark)
            referenced.add(id(kid))
            if id(kid) not in sizes:
                stack.append((kid, False))  # again if pending elsewhere: it must be done before this node


def _duplicate_keys(root: yaml.Node) -> list[Problem]:
    """Every key written twice in one mapping (merge keys aside), each distinct mapping checked once."""
    problems: list[Problem] = []
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    ident = (k.tag, k.value)
                    line = k.start_mark.line + 1
                    if ident in first:
                        problems.append(((*path, k.value), f"duplicate key {k.value!r}, first written at "
                                         f"line {first[ident]}", line))
                    else:
                        first[ident] = line
                stack.append((v, (*path, k.value if isinstance(k, yaml.ScalarNode) else "?")))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(node.value))
    problems.sort(key=lambda p: p[2])
    return problems


def compose_config(text: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """Parse YAML text within the limits.

    Args:
        text: the document.

    Returns:
        ``(data, node, duplicate_keys)``: the plain data (last value wins for a duplicate key), the
        composed node (for line numbers; None for an empty document) and the duplicate keys found.

    Raises:
        yaml.YAMLError: syntax errors and exceeded limits (:class:`YamlLimitError`), with a mark.
    """
    # libyaml composes in C (about 50x faster, nesting capped at 1,000 by libyaml itself); aliases stay
    # shared nodes there, so the checks below see the document's real size before anything expands it.
    loader: Any = yaml.CSafeLoader(text) if getattr(yaml, "__with_libyaml__", False) else _DepthLimitedLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlLimitError(problem="nested too deeply") from None
        if node is None:
            return None, None, []
        _check_expanded_size(node)
        duplicates = _duplicate_keys(node)
        data = loader.construct_document(node)
        return data, node, duplicates
    finally:
        loader.dispose()
