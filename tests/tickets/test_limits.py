"""Payload limits without a broker: the bracket-depth scan, string repair and each limit's error."""

from __future__ import annotations

import contextlib
import json

import pytest

from pipeline.tickets.limits import PayloadLimits, json_depth, sanitize, storable
from pipeline.tickets.payload import PayloadError, parse_alert, parse_health

from .conftest import make_alert, topic_of


@pytest.mark.parametrize(("text", "depth"), [
    (b"1", 0), (b"[]", 1), (b'{"a": [1, {"b": 2}]}', 3),
    (b'{"a": "[[[[{{{{"}', 1),              # brackets inside strings do not count
    (b'{"a": "\\"[[[[", "b": [[]]}', 3),     # an escaped quote does not end the string
    (b'{"a": "\\\\", "b": [[]]}', 3),        # an escaped backslash does
    (b'"[[[', 3),                             # unterminated string: brackets count (upper bound)
    (b"[" * 5000, 5000),
])
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth
    if depth:
        with contextlib.suppress(json.JSONDecodeError, RecursionError):  # invalid JSON: nothing to compare
            assert json_depth(text) >= _real_depth(json.loads(text))


def _real_depth(v: object) -> int:
    if isinstance(v, dict):
        return 1 + max((_real_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_real_depth(x) for x in v), default=0)
    return 0


def test_json_depth_stops_early() -> None:
    assert json_depth(b"[" * 100_000, stop_above=10) == 11


def test_sanitize_and_storable() -> None:
    clean, n = sanitize({"a\x00": ["ok", "x\ud800y", {"k": "\udfff"}], "n": 1})
    assert clean == {"a\ufffd": ["ok", "x\ufffdy", {"k": "\ufffd"}], "n": 1} and n == 3
    assert storable("a\x00b\ud800") == "a\ufffdb\ufffd"
    assert sanitize("fine") == ("fine", 0)


SMALL = PayloadLimits(max_alert_bytes=4000, max_json_depth=6, max_details_bytes=100, max_last_error_chars=10)


def test_alert_limits_raise_payload_errors() -> None:
    a = make_alert()
    topic = topic_of(a)
    assert parse_alert(topic, a.to_bytes(), "gwtest", SMALL).incident_id == a.incident_id
    with pytest.raises(PayloadError) as big:
        parse_alert(topic, a.to_bytes() + b" " * 4000, "gwtest", SMALL)
    assert big.value.kind == "too_large"
    deep = make_alert(incident_id=a.incident_id, details={"d": {"d": {"d": {"d": {"d": {"d": 1}}}}}})
    with pytest.raises(PayloadError) as too_deep:
        parse_alert(topic, deep.to_bytes(), "gwtest", SMALL)
    assert too_deep.value.kind == "too_deep"
    wide = make_alert(incident_id=a.incident_id, details={"x": "y" * 200})
    with pytest.raises(PayloadError) as details:
        parse_alert(topic_of(wide), wide.to_bytes(), "gwtest", SMALL)
    assert details.value.kind == "too_large" and "details" in str(details.value)


def test_health_truncates_and_clamps() -> None:
    payload = json.dumps({"state": "error", "last_error": "e" * 50, "frames_decoded": 2**40}).encode()
    cam, h = parse_health("gwtest/health/cam1", payload, "gwtest", SMALL)
    assert cam == "cam1" and h.last_error == "e" * 10 + "... [40 chars cut]"
    assert h.frames_decoded == 2**31 - 1
    with pytest.raises(PayloadError) as long_topic:
        parse_health("gwtest/health/" + "c" * 101, payload, "gwtest", SMALL)
    assert long_topic.value.kind == "topic_mismatch"
