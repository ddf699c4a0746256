"""The consumer thread is supervised and ``/healthz`` + the consumer gauges tell the truth: not ok while
no message can be processed (thread dead, store unwritable), ok again once it can."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from pipeline.tickets import service
from pipeline.tickets.api import create_app
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.models import Ticket
from tests.fixtures.auth import login

from .conftest import Publisher, make_alert, make_site, topic_of, wait_for


@pytest.fixture
def app_with_consumer(tmp_path: Path, broker: Any) -> Iterator[tuple[TestClient, AlertConsumer]]:
    """The API with a consumer on the private broker (short back-offs)."""
    site = make_site(tmp_path, mqtt_url=broker.url, client_id=f"sup-{tmp_path.name[-8:]}")
    with TestClient(create_app(site, start_consumer=False)) as client:
        login(client)
        st = client.app.state.tickets  # type: ignore[attr-defined]
        consumer = AlertConsumer(site.mqtt, st.sessions, st.metrics, retry_seconds=0.2)
        st.consumer = consumer
        consumer.start()
        try:
            wait_for(lambda: client.get("/healthz").status_code == 200)
            yield client, consumer
        finally:
            st.consumer = None
            consumer.stop()


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def _incidents(client: TestClient) -> set[str]:
    with client.app.state.tickets.sessions() as s:  # type: ignore[attr-defined]
        return set(s.scalars(select(Ticket.incident_id)))


def test_dead_thread_is_restarted_and_healthz_says_so(app_with_consumer: tuple[TestClient, AlertConsumer],
                                                     publisher: Publisher) -> None:
    client, consumer = app_with_consumer
    assert _metric(client, "gridwatch_consumer_ready") == 1.0
    real_loop = consumer._client.loop
    broken = {"on": True}

    def dying_loop(*args: Any, **kwargs: Any) -> Any:
        if broken["on"]:
            raise RuntimeError("injected: the network loop blew up")
        return real_loop(*args, **kwargs)

    consumer._client.loop = dying_loop  # type: ignore[method-assign]
    wait_for(lambda: consumer.metrics.restarts._value.get() >= 2)  # it died, was restarted, died again
    body = client.get("/healthz")
    assert body.status_code == 503
    assert body.json() == {"status": "degraded", "database": True, "mqtt": "disconnected"}
    assert _metric(client, "gridwatch_consumer_connected") == 0.0
    assert _metric(client, "gridwatch_consumer_ready") == 0.0
    alert = make_alert(camera="cam3", hazard="fire")
    publisher.publish(topic_of(alert), alert.to_bytes())  # waits in the broker's persistent session

    broken["on"] = False
    wait_for(lambda: client.get("/healthz").status_code == 200, timeout=30)
    assert client.get("/healthz").json() == {"status": "ok", "database": True, "mqtt": "connected"}
    wait_for(lambda: alert.incident_id in _incidents(client))
    assert consumer.alive and consumer.ready
    assert _metric(client, "gridwatch_consumer_restarts_total") >= 2
    assert _metric(client, "gridwatch_consumer_connected") == 1.0


def test_unwritable_store_is_not_ok_until_writes_succeed(app_with_consumer: tuple[TestClient, AlertConsumer],
                                                        publisher: Publisher,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only database (cannot be made real as root: permissions do not bind) fails every write."""
    client, consumer = app_with_consumer
    readonly = {"on": True}
    real_apply, real_dead = service.apply_alert, service.record_dead_letter

    def guard(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if readonly["on"]:
                raise OperationalError("INSERT ...", {}, Exception("attempt to write a readonly database"))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr("pipeline.tickets.handler.apply_alert", guard(real_apply))
    monkeypatch.setattr("pipeline.tickets.handler.record_dead_letter", guard(real_dead))
    consumer.handler.max_attempts = 2
    alert = make_alert(camera="cam1")
    publisher.publish(topic_of(alert), alert.to_bytes())
    wait_for(lambda: client.get("/healthz").status_code == 503)
    assert client.get("/healthz").json()["database"] is False
    assert _metric(client, "gridwatch_consumer_ready") == 0.0
    assert consumer.alive  # the thread is fine; the store is not
    wait_for(lambda: consumer.metrics.db_errors._value.get() >= consumer.handler.max_attempts + 1, timeout=30)

    readonly["on"] = False  # the alert, past max_attempts, is still applied first, not dead-lettered
    wait_for(lambda: alert.incident_id in _incidents(client), timeout=60)
    wait_for(lambda: client.get("/healthz").status_code == 200)
    assert client.get("/dead-letters").json() == []
    assert _metric(client, "gridwatch_consumer_ready") == 1.0
