"""A real worker answers a resend request on its own topic: the archived alert goes out again, same bytes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pipeline.config import SiteConfig
from pipeline.contract.examples import example_alert
from pipeline.contract.resend import ResendRequestV1, SeqRange
from pipeline.contract.topics import alert_filter, resend_request_topic
from pipeline.worker import Worker
from tests.alerts.helpers import Collector


def _site(tmp_path: Path, url: str) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T1", "name": "t", "children": [{"code": "D1", "name": "d", "children": [
            {"code": "C1", "name": "c", "children": [{"code": "G1", "name": "g"}]}]}]}],
        "cameras": [], "mqtt": {"url": url, "topic_prefix": "gwr"},
        "api": {"evidence_dir": str(tmp_path / "ev")},
        "worker": {"outbox_path": str(tmp_path / "outbox.db"), "reconnect_min_seconds": 0.2,
                   "reconnect_max_seconds": 1, "alert_archive_max": 100},
    })


def test_worker_resends_archived_alerts_on_request(mosquitto_broker: Any, tmp_path: Path) -> None:
    broker = mosquitto_broker
    alerts = Collector(broker.host, broker.port, alert_filter("gwr"))
    worker = Worker(_site(tmp_path, broker.url), worker_id="wr-1")
    worker.start()
    try:
        for _ in range(3):
            worker.publisher.publish_alert(example_alert())
        got = alerts.wait_for(3)
        assert [json.loads(m.payload)["seq"] for m in got] == [1, 2, 3]
        request = ResendRequestV1(schema_version=1, request_id="rq-1", worker_id="wr-1",
                                  ranges=[SeqRange(first=2, last=2), SeqRange(first=7, last=9)],
                                  requested_at="2026-12-01T19:00:00Z")
        deadline = time.monotonic() + 10
        while worker.resend.stats()["requests"] == 0 and time.monotonic() < deadline:
            # the responder subscribes in the background: ask until it has heard (a real service retries too)
            alerts.client.publish(resend_request_topic("gwr", "wr-1"), request.to_bytes(), qos=1)
            time.sleep(0.3)
        again = alerts.wait_for(4)[3]
        assert again.payload == got[1].payload  # the same bytes as the first time
        assert worker.resend.stats() == {**worker.resend.stats(), "resent": 1, "not_archived": 3}
    finally:
        worker.stop()
        alerts.close()
