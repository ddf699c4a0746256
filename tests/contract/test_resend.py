"""The resend request contract: bounds, topic, grants; ``WorkerStatusV1.last_seq`` stays optional on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from paho.mqtt.client import topic_matches_sub
from pydantic import ValidationError

from pipeline.contract import topics as t
from pipeline.contract.messages import WorkerStatusV1
from pipeline.contract.resend import MAX_RESEND_ALERTS, MAX_RESEND_RANGES, ResendRequestV1, SeqRange

TS = "2026-12-01T19:00:00Z"


def _req(ranges: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"schema_version": 1, "request_id": "r1", "worker_id": "w1", "ranges": ranges,
                       "requested_at": TS, **extra}).encode()


def test_round_trip_and_count() -> None:
    r = ResendRequestV1.model_validate_json(_req([{"first": 4, "last": 6}, {"first": 9, "last": 9}]))
    assert r.count() == 4 and r.requested_at == datetime(2026, 12, 1, 19, tzinfo=UTC)
    assert json.loads(r.to_bytes())["requested_at"] == TS
    assert ResendRequestV1.model_validate_json(r.to_bytes()) == r


@pytest.mark.parametrize("payload", [
    _req([]),                                                    # no range
    _req([{"first": 6, "last": 4}]),                             # reversed
    _req([{"first": 0, "last": 4}]),                             # seq starts at 1
    _req([{"first": 1, "last": MAX_RESEND_ALERTS + 1}]),         # too many numbers
    _req([{"first": i, "last": i} for i in range(1, MAX_RESEND_RANGES + 2)]),  # too many ranges
    _req([{"first": 1, "last": 2**70}]),                         # beyond any integer column
    _req([{"first": 1, "last": 2}], extra_field=1),              # unknown field
    _req([{"first": "1", "last": [2]}]),                         # wrong types
    _req([{"first": 1, "last": 2}], schema_version=2),
    _req([{"first": 1, "last": 2}], request_id="../x"),
])
def test_hostile_requests_do_not_validate(payload: bytes) -> None:
    with pytest.raises(ValidationError):
        ResendRequestV1.model_validate_json(payload)


def test_overlapping_ranges_count_twice_against_the_bound() -> None:
    half = MAX_RESEND_ALERTS // 2 + 1
    with pytest.raises(ValidationError):
        ResendRequestV1(schema_version=1, request_id="r", worker_id="w", requested_at=TS,
                        ranges=[SeqRange(first=1, last=half), SeqRange(first=1, last=half)])


def test_topic_and_grants() -> None:
    topic = t.resend_request_topic("gw", "w1")
    assert topic == "gw/resend/request/w1" and t.parse_resend_request_topic(topic, "gw") == "w1"
    assert t.parse_resend_request_topic("gw/resend/request/w1/x", "gw") is None
    with pytest.raises(ValueError):
        t.resend_request_topic("gw", "a/b")
    assert any(topic_matches_sub(f, topic) for f in t.role_topic_filters("worker", "gw").subscribe)
    assert any(topic_matches_sub(f, topic) for f in t.role_topic_filters("service", "gw").publish)
    assert not any(topic_matches_sub(f, topic) for f in t.role_topic_filters("worker", "gw").publish)
    assert t.parse_status_topic(t.status_topic("gw", "w1"), "gw") == "w1"
    assert topic_matches_sub(t.status_filter("gw"), t.status_topic("gw", "w1"))


def test_worker_status_last_seq_is_optional_on_the_wire() -> None:
    ts = datetime(2026, 12, 1, 19, tzinfo=UTC)
    assert WorkerStatusV1(state="online", ts=ts).to_bytes() == b'{"state": "online", "ts": "2026-12-01T19:00:00Z"}'
    with_seq = WorkerStatusV1(state="online", ts=ts, last_seq=7).to_bytes()
    assert json.loads(with_seq) == {"state": "online", "ts": "2026-12-01T19:00:00Z", "last_seq": 7}
    assert WorkerStatusV1.model_validate_json(with_seq).last_seq == 7
    with pytest.raises(ValidationError):
        WorkerStatusV1.model_validate_json(b'{"state": "online", "ts": "2026-12-01T19:00:00Z", "last_seq": 0}')
