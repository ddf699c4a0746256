"""Checks of a site config beyond single fields: camera and database URLs, grid codes, camera cells.

Kept out of :mod:`pipeline.config` (which imports this module) so the models stay readable.
Errors never echo a password (they show :func:`pipeline.redact.redact_url` of the URL), so
``gridwatch check-config`` output and start-up logs are safe to paste into a ticket.

Example:
    >>> check_camera_url("rtsp://admin:pw@10.0.0.7:554/ch1")
    'rtsp://admin:pw@10.0.0.7:554/ch1'
    >>> check_camera_url("rtsp:///ch1")
    Traceback (most recent call last):
    ...
    ValueError: 'rtsp:///ch1' has no host
    >>> normalise_database_url("postgresql://gw:pw@db/gridwatch")
    'postgresql+psycopg://gw:pw@db/gridwatch'
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any
from urllib.parse import urlsplit

from pipeline.contract.topics import GRID_LEVELS as GRID_LEVELS
from pipeline.redact import redact_url

# Must match pipeline.ingest.reader.NETWORK_SCHEMES (a test keeps them equal); file:// is a local path.
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp")
# Schemes whose URL may name only a port (listen / multicast-any modes of FFmpeg).
_HOSTLESS_OK = ("srt", "udp", "tcp")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

# SQLAlchemy drivers of the backends the ticket store supports, and the pip extra that installs each.
POSTGRES_DRIVER = "psycopg"
_DRIVER_INSTALL = {"psycopg": "pip install 'gridwatch[postgres]'  (psycopg 3)",
                   "psycopg2": "pip install psycopg2-binary"}


class DatabaseDriverMissingError(RuntimeError):
    """The database URL needs a driver module that is not installed (the message says how to install it)."""


def check_camera_url(url: str) -> str:
    """Return ``url`` when it can name a camera source; raise ``ValueError`` saying why not.

    Accepted: a network URL with a scheme of :data:`NETWORK_SCHEMES` and a host, ``file://<path>``,
    or a plain file path (relative to the config file).

    Args:
        url: the ``cameras[].url`` value.

    Returns:
        The URL unchanged.
    """
    shown = redact_url(url)
    if not url.strip():
        raise ValueError("must not be empty (an rtsp:// URL or a video file path)")
    if url != url.strip():
        raise ValueError(f"{shown!r} has leading or trailing white space")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError(f"{shown!r} contains control characters")
    match = _SCHEME.match(url)
    if match is None:
        if "://" in url:
            raise ValueError(f"{shown!r} has a malformed scheme")
        return url  # a file path
    scheme = match.group(1).lower()
    if scheme == "file":
        if not url[len("file://"):]:
            raise ValueError(f"{shown!r} names no file")
        return url
    if scheme not in NETWORK_SCHEMES:
        raise ValueError(f"{shown!r}: unknown scheme {scheme!r} (use one of {', '.join(NETWORK_SCHEMES)}, "
                         "file://, or a file path)")
    if any(ch.isspace() for ch in url):
        raise ValueError(f"{shown!r} contains white space (percent-encode it as %20)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{shown!r}: {redact_url(str(exc))}") from None
    if not parts.hostname and not (scheme in _HOSTLESS_OK and port):
        raise ValueError(f"{shown!r} has no host")
    return url


def normalise_database_url(url: str) -> str:
    """Pin the driver of a database URL: ``postgresql://`` and ``postgres://`` use psycopg 3.

    SQLAlchemy picks a default driver per version (psycopg2 in 2.0, psycopg in 2.1), so a plain
    ``postgresql://`` URL would need whichever driver the installed SQLAlchemy prefers. Naming the
    driver keeps the documented URL working with the one gridwatch depends on. URLs that name a
    driver (``postgresql+psycopg2://``) and SQLite URLs are returned unchanged.

    Args:
        url: ``api.database_url``.

    Returns:
        The URL with an explicit PostgreSQL driver.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.lower().startswith(prefix):
            return f"postgresql+{POSTGRES_DRIVER}://" + url[len(prefix):]
    return url


def check_database_url(url: str) -> str:
    """Return ``url`` when SQLAlchemy can parse it and the backend is SQLite or PostgreSQL.

    Args:
        url: ``api.database_url``.

    Returns:
        The URL unchanged.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = redact_url(url)
    try:
        parsed = make_url(normalise_database_url(url))
    except (ArgumentError, ValueError):
        raise ValueError(f"{shown!r} is not a database URL (sqlite:///path or postgresql://user@host/db)") \
            from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"{shown!r}: backend {parsed.get_backend_name()!r} is not supported "
                         "(sqlite or postgresql)")
    return url


def require_database_driver(url: str) -> None:
    """Raise :class:`DatabaseDriverMissingError` with the install command when the driver is missing.

    Args:
        url: a normalised database URL (see :func:`normalise_database_url`).
    """
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    driver = parsed.get_driver_name()
    module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pg8000": "pg8000", "asyncpg": "asyncpg"}.get(
        driver, driver)
    if importlib.util.find_spec(module) is None:
        how = _DRIVER_INSTALL.get(module, f"pip install {module}")
        raise DatabaseDriverMissingError(f"api.database_url {redact_url(url)!r} needs the PostgreSQL driver "
                                         f"{module!r}, which is not installed: {how}")


def camera_grid_errors(data: dict[str, Any]) -> list[str]:
    """Duplicate grid codes, duplicate camera ids and cameras on unknown grid cells.

    Checked on plain (even invalid) data, so `check-config` reports these alongside field errors.
    Cell codes must be unique site-wide (cameras name their cell by code alone); codes of the upper
    levels must be unique among siblings (they are topic levels under their parent).
    """
    cells: dict[str, str] = {}  # cell code -> path of its first definition
    errors: list[str] = []

    def walk(nodes: Any, depth: int, path: str) -> None:
        siblings: dict[str, str] = {}
        for i, node in enumerate(nodes if isinstance(nodes, list) else []):
            if not isinstance(node, dict):
                continue
            here = f"{path}[{i}]"
            code = node.get("code")
            if isinstance(code, str):
                if depth == len(GRID_LEVELS):
                    if code in cells:
                        errors.append(f"{here}.code: duplicate grid cell code {code!r} (first at {cells[code]})")
                    else:
                        cells[code] = here
                elif code in siblings:
                    errors.append(f"{here}.code: duplicate {GRID_LEVELS[depth - 1]} code {code!r} under the "
                                  f"same parent (first at {siblings[code]})")
                siblings.setdefault(code, here)
            walk(node.get("children"), depth + 1, f"{here}.children")

    walk(data.get("grid"), 1, "grid")
    seen: set[str] = set()
    cameras = data.get("cameras")
    for i, cam in enumerate(cameras if isinstance(cameras, list) else []):
        if not isinstance(cam, dict):
            continue
        cid, grid = cam.get("id"), cam.get("grid")
        if isinstance(cid, str):
            if cid in seen:
                errors.append(f"cameras[{i}].id: duplicate camera id {cid!r}")
            seen.add(cid)
        if isinstance(grid, str) and grid not in cells:
            errors.append(f"cameras[{i}].grid: {grid!r} is not a level-4 grid cell code "
                          f"(known: {', '.join(sorted(cells)) or 'none'})")
    return errors
