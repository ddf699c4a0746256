"""The two id shapes every message and topic relies on, written once.

* **Config ids** (grid codes, camera ids, zone ids; :data:`CONFIG_ID_PATTERN`): letters, digits, ``_``
  and ``-``. They are single MQTT topic levels, so they can never contain ``/``, ``+`` or ``#``.
* **Safe ids** (incident ids, evidence file names, worker ids in payloads; :data:`SAFE_ID_PATTERN`): a
  letter or digit, then letters, digits, ``_``, ``.`` or ``-``, at most :data:`SAFE_ID_MAX_LENGTH`
  characters. Safe both as one file-name component (never ``.`` or ``..``, never a separator) and as
  one topic level.

Example:
    >>> is_safe_id("cam1-z1-parking-1714550400-1"), is_safe_id("../etc"), is_safe_id("a" * 201)
    (True, False, False)
"""

from __future__ import annotations

import re

CONFIG_ID_PATTERN = r"^[A-Za-z0-9_\-]+$"
"""Grid codes, camera ids and zone ids of the site config (each one MQTT topic level)."""

SAFE_ID_MAX_LENGTH = 200
"""Longest safe id (incident ids, evidence names)."""

SAFE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
"""Incident ids and evidence names: one safe file-name component and one topic level."""

SAFE_ID_RE = re.compile(SAFE_ID_PATTERN)
"""Compiled :data:`SAFE_ID_PATTERN`."""


def is_safe_id(value: str) -> bool:
    """Whether ``value`` matches :data:`SAFE_ID_PATTERN` (which also bounds its length)."""
    return SAFE_ID_RE.fullmatch(value) is not None
