"""The worker's alert archive and resend responder: bounded archive, same bytes re-queued, hostile requests
refused without an exception and without queueing anything."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.resend import ResendResponder
from pipeline.config import MqttConfig
from pipeline.contract.examples import example_alert
from pipeline.contract.resend import MAX_RESEND_ALERTS, MAX_RESEND_REQUEST_BYTES
from pipeline.contract.topics import resend_request_topic

PREFIX = "gw"
WORKER = "w1"
TOPIC = resend_request_topic(PREFIX, WORKER)


def _request(ranges: object, request_id: str = "r1", worker_id: str = WORKER, **extra: object) -> bytes:
    return json.dumps({"schema_version": 1, "request_id": request_id, "worker_id": worker_id, "ranges": ranges,
                       "requested_at": "2026-12-01T19:00:00Z", **extra}).encode()


@pytest.fixture
def publisher(tmp_path: Path) -> MqttPublisher:
    """A publisher that is never started (nothing leaves the outbox) with 30 alerts archived, 5 per 1 KiB."""
    pub = MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:1", topic_prefix=PREFIX), tmp_path / "outbox.db", WORKER,
                        archive_max=25)
    for _ in range(30):
        pub.publish_alert(example_alert())
    for item in pub.outbox.peek(100):  # as if the broker had acknowledged them all
        pub.outbox.ack(item.id)
    return pub


def _queued_seqs(pub: MqttPublisher) -> list[int]:
    return [json.loads(i.payload)["seq"] for i in pub.outbox.peek(10_000)]


def test_archive_keeps_the_last_n_and_requeues_the_same_bytes(publisher: MqttPublisher, tmp_path: Path) -> None:
    assert publisher.outbox.archive_bounds(WORKER) == (6, 30)  # archive_max 25
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        first_time = dict(db.execute("SELECT seq, payload FROM archive WHERE worker_id = ?", (WORKER,)).fetchall())
    responder = ResendResponder(publisher, "resend-test", persistent=False)
    assert responder.handle(TOPIC, _request([{"first": 1, "last": 8}, {"first": 29, "last": 40}])) == "resent"
    assert _queued_seqs(publisher) == [6, 7, 8, 29, 30]
    assert [i.payload for i in publisher.outbox.peek(10)] == [first_time[s] for s in (6, 7, 8, 29, 30)]
    assert responder.stats()["resent"] == 5 and responder.stats()["not_archived"] == 5 + 10
    # a redelivered request (same id) is answered once
    assert responder.handle(TOPIC, _request([{"first": 6, "last": 8}])) == "duplicate"
    assert len(_queued_seqs(publisher)) == 5
    publisher.stop(drain_timeout=0)


def test_archive_prunes_by_age(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.db", archive_max=100, archive_seconds=0.2) as ob:
        ob.put_sequenced(WORKER, "gw/alerts/x", lambda s: b"%d" % s)
        time.sleep(0.3)
        ob.put_sequenced(WORKER, "gw/alerts/x", lambda s: b"%d" % s)
        assert ob.archive_bounds(WORKER) == (2, 2)
    with Outbox(tmp_path / "off.db", archive_max=0) as ob:
        ob.put_sequenced(WORKER, "gw/alerts/x", lambda s: b"%d" % s)
        assert ob.archive_bounds(WORKER) is None and len(ob) == 1


HOSTILE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    pytest.param(b"[" * 50_000, id="deep brackets"),
    pytest.param(b"x" * (MAX_RESEND_REQUEST_BYTES + 1), id="oversized"),
    pytest.param(b'{"schema_version": 1}', id="fields missing"),
    pytest.param(_request([{"first": 10, "last": 1}]), id="reversed range"),
    pytest.param(_request([{"first": -5, "last": 3}]), id="negative"),
    pytest.param(_request([{"first": 1, "last": 10**18}]), id="a billion billion numbers"),
    pytest.param(_request([{"first": 1, "last": 2**80}]), id="beyond int64"),
    pytest.param(_request([{"first": i, "last": i} for i in range(1, 200)]), id="199 ranges"),
    pytest.param(_request([{"first": 1, "last": MAX_RESEND_ALERTS // 2 + 1}] * 2), id="overlap over the cap"),
    pytest.param(_request([{"first": 1, "last": 3}], extra=True), id="unknown field"),
    pytest.param(_request("1-3"), id="ranges not a list"),
    pytest.param(_request([{"first": 1.5, "last": 3}]), id="float"),
    pytest.param(_request([{"first": 1, "last": 3}], request_id="../../etc"), id="bad request id"),
    pytest.param(json.dumps({"schema_version": 1, "ranges": [{"first": 1, "last": 3}] * 3000}).encode()[:16000],
                 id="truncated json"),
]


@pytest.mark.parametrize("payload", HOSTILE)
def test_hostile_requests_are_refused_and_queue_nothing(publisher: MqttPublisher, payload: bytes,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    responder = ResendResponder(publisher, "resend-test", persistent=False)
    assert responder.handle(TOPIC, payload) == "refused"
    assert _queued_seqs(publisher) == [] and responder.stats()["refused"] == 1
    assert "resend request" in caplog.text and "refused" in caplog.text
    publisher.stop(drain_timeout=0)


def test_other_workers_requests_and_the_budget(publisher: MqttPublisher) -> None:
    responder = ResendResponder(publisher, "resend-test", persistent=False, max_alerts_per_minute=10)
    # addressed to another worker: by topic, or by body on this worker's topic
    assert responder.handle(resend_request_topic(PREFIX, "w2"), _request([{"first": 6, "last": 6}], worker_id="w2")) \
        == "foreign"
    assert responder.handle(TOPIC, _request([{"first": 6, "last": 6}], worker_id="w2")) == "foreign"
    assert responder.handle("gw/resend/request", _request([{"first": 6, "last": 6}])) == "foreign"
    # 8 + 8 numbers within a minute are over a budget of 10: the second request waits (the service asks again)
    assert responder.handle(TOPIC, _request([{"first": 6, "last": 13}], "a"), now=1000.0) == "resent"
    assert responder.handle(TOPIC, _request([{"first": 14, "last": 21}], "b"), now=1010.0) == "throttled"
    assert responder.handle(TOPIC, _request([{"first": 14, "last": 21}], "b"), now=1061.0) == "resent"
    assert _queued_seqs(publisher) == list(range(6, 22))
    publisher.stop(drain_timeout=0)


def test_paho_callback_never_raises(publisher: MqttPublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even a failure nobody foresaw (here: the outbox closed under it) is contained in the callback."""
    responder = ResendResponder(publisher, "resend-test", persistent=False)
    publisher.outbox.close()

    class Msg:
        topic = TOPIC
        payload = _request([{"first": 6, "last": 7}])

    responder._on_message(responder._client, None, Msg())  # type: ignore[arg-type]
    assert responder.stats()["refused"] == 1
