"""Per-worker alert sequence numbers: taken atomically with the outbox row, continued across restarts,
absent (byte-identical payloads) when unset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.alerts.outbox import Outbox
from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.schema import AlertV1, example_alert
from pipeline.config import MqttConfig
from tests.fixtures.mqtt import MosquittoBroker

from .helpers import Collector


def test_put_sequenced_numbers_per_worker_and_survives_reopen(tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    with Outbox(db) as ob:
        got = [ob.put_sequenced("w1", "gw/a", lambda n: f"w1-{n}".encode()) for _ in range(3)]
        assert [seq for _, seq in got] == [1, 2, 3]
        assert ob.put_sequenced("w2", "gw/a", lambda n: f"w2-{n}".encode())[1] == 1
        assert ob.last_seq("w1") == 3 and ob.last_seq("nobody") == 0
    with Outbox(db) as ob:  # a restarted worker continues its series
        item_id, seq = ob.put_sequenced("w1", "gw/a", lambda n: f"w1-{n}".encode())
        assert seq == 4
        assert [i.payload for i in ob.peek(10)] == [b"w1-1", b"w1-2", b"w1-3", b"w2-1", b"w1-4"]
        assert ob.peek(10)[-1].id == item_id


def test_failed_put_takes_no_number(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as ob:
        def boom(n: int) -> bytes:
            raise ValueError("cannot build")

        with pytest.raises(ValueError, match="cannot build"):
            ob.put_sequenced("w1", "gw/a", boom)
        assert len(ob) == 0 and ob.last_seq("w1") == 0
        assert ob.put_sequenced("w1", "gw/a", lambda n: b"x")[1] == 1


def test_payload_without_seq_is_unchanged_and_old_payloads_validate() -> None:
    alert = example_alert()
    data = json.loads(alert.to_bytes())
    assert "seq" not in data and "worker_id" not in data
    assert AlertV1.model_validate(data) == alert  # an old producer's payload
    stamped = alert.model_copy(update={"worker_id": "w1", "seq": 7})
    again = AlertV1.model_validate_json(stamped.to_bytes())
    assert (again.worker_id, again.seq) == ("w1", 7)
    with pytest.raises(ValueError):
        AlertV1.model_validate({**data, "seq": 0})


def test_publisher_stamps_worker_and_seq_across_restarts(
        mosquitto: Callable[..., MosquittoBroker], tmp_path: Path) -> None:
    broker = mosquitto()
    sub = Collector(broker.host, broker.port, "gw/alerts/#")
    cfg = MqttConfig(url=broker.url, topic_prefix="gw")
    outbox = tmp_path / "outbox.db"
    try:
        for run in range(2):  # the second run is the restarted worker
            pub = MqttPublisher(cfg, outbox, "worker-a")
            pub.start()
            for _ in range(3):
                pub.publish_alert(example_alert())
            sub.wait_for(3 * (run + 1))
            pub.stop()
        got = [json.loads(m.payload) for m in sub.messages]
        assert [(m["worker_id"], m["seq"]) for m in got] == [("worker-a", n) for n in range(1, 7)]
    finally:
        sub.close()
