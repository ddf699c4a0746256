"""Size and depth limits on inbound MQTT messages, checked before and while parsing.

Everything the ticket consumer reads comes from the network, so every message is bounded before it can
cost memory, recursion or database space (documented in ``docs/reliability.md``):

* the raw size is checked first (:attr:`PayloadLimits.max_alert_bytes`, ``max_health_bytes``);
* :func:`json_depth` scans the bracket nesting *without* parsing (strings are skipped), so a payload
  nested thousands of levels deep never reaches ``json.loads`` (which would raise ``RecursionError``) or
  pydantic's serializer ("Maximum serialization depth exceeded");
* :func:`sanitize` replaces lone UTF-16 surrogates (``"\\ud800"``) and NUL characters in every string and
  key with U+FFFD: neither can be encoded for the database (``UnicodeEncodeError`` in SQLite, an error in
  PostgreSQL), and a bad camera name is no reason to lose a fire alert.

Example:
    >>> json_depth(b'{"a": [1, {"b": "[[[["}]}')
    3
    >>> sanitize({"name": "gate\\ud800"})
    ({'name': 'gate�'}, 1)
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
REPLACEMENT = "\ufffd"


class PayloadLimits(BaseModel):
    """Bounds on what one inbound message may cost; defaults suit every real gridwatch payload.

    A real alert is 0.5-3 KB with a nesting depth of 3-4; a real health message is under 1 KB.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_alert_bytes: int = Field(default=64 * 1024, gt=0,
                                 description="Largest alert payload accepted; larger ones are dead-lettered "
                                 "as `too_large` without being parsed.")
    max_health_bytes: int = Field(default=4 * 1024 * 1024, gt=0,
                                  description="Largest camera health payload parsed; health is only state, so "
                                  "an over-long `last_error` is truncated rather than the message lost.")
    max_json_depth: int = Field(default=32, ge=2, le=200,
                                description="Deepest bracket nesting accepted (checked before parsing); "
                                "deeper payloads are dead-lettered as `too_deep`.")
    max_details_bytes: int = Field(default=16 * 1024, gt=0,
                                   description="Largest `details` object of an alert (as compact JSON); it is "
                                   "copied into the ticket and every GET /tickets.")
    max_last_error_chars: int = Field(default=2000, gt=0,
                                      description="Health `last_error` is truncated to this many characters.")
    dead_letter_payload_bytes: int = Field(default=64 * 1024, gt=0,
                                           description="Prefix of the raw payload kept in a dead letter (a "
                                           "payload within the alert limit is kept whole).")
    dead_letter_reason_chars: int = Field(default=2000, gt=0,
                                          description="Dead-letter reasons are truncated to this length.")


DEFAULT_LIMITS = PayloadLimits()
"""The limits the consumer uses unless given others."""


def json_depth(payload: bytes, stop_above: int | None = None) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, without parsing it.

    String literals are removed first, so brackets inside strings do not count. For invalid JSON the
    result is still an upper bound of how deep ``json.loads`` would recurse before failing.

    Args:
        payload: raw JSON bytes.
        stop_above: return as soon as the depth exceeds this (cheap rejection of huge nestings).

    Returns:
        The maximum depth (0 for a scalar).
    """
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for ch in brackets:
        if ch in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        else:
            depth -= 1
    return deepest


def storable(text: str) -> str:
    """``text`` with lone surrogates and NUL replaced by U+FFFD (safe for SQLite and PostgreSQL)."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def sanitize(value: Any) -> tuple[Any, int]:
    """Replace lone surrogates and NUL in every string (and key) of parsed JSON with U+FFFD.

    Args:
        value: output of ``json.loads`` whose depth was already bounded (the walk recurses).

    Returns:
        ``(clean value, number of strings changed)``.
    """
    if isinstance(value, str):
        clean, n = _UNSTORABLE.subn(REPLACEMENT, value)
        return clean, int(n > 0)
    if isinstance(value, list):
        out_list: list[Any] = []
        changed = 0
        for item in value:
            clean_item, n = sanitize(item)
            out_list.append(clean_item)
            changed += n
        return out_list, changed
    if isinstance(value, dict):
        out_dict: dict[str, Any] = {}
        changed = 0
        for key, item in value.items():
            clean_key, nk = sanitize(key)
            clean_item, nv = sanitize(item)
            out_dict[clean_key] = clean_item
            changed += nk + nv
        return out_dict, changed
    return value, 0
