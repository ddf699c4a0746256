"""Webhook sender throughput: queue N ticket events, drain them into a local HTTP receiver, print the rate.

Usage::

    python scripts/bench_webhooks.py --events 300 --senders 1 2
    python scripts/bench_webhooks.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test

Each run uses a fresh SQLite file (or a fresh PostgreSQL database next to the one given) and the same
code path as the service: ``apply_alert`` queues through the ``after_flush`` hook, ``WebhookSender`` passes
claim with a lease and POST signed JSON to a ``http.server`` receiver on 127.0.0.1. Printed: what queueing
adds to applying one alert that opens a ticket (same alerts with and without the hook), delivered events
per second for each number of concurrent senders, and how many events arrived twice.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config_webhooks import WebhooksConfig  # noqa: E402
from pipeline.tickets.db import init_db, session_factory  # noqa: E402
from pipeline.tickets.payload import AlertIn  # noqa: E402
from pipeline.tickets.service import apply_alert  # noqa: E402
from pipeline.tickets.webhook_sender import WebhookSender  # noqa: E402
from pipeline.tickets.webhooks import install_webhook_queueing  # noqa: E402
from tests.fixtures.webhook_receiver import WebhookReceiver  # noqa: E402
from tests.tickets.conftest import make_alert  # noqa: E402


def _run(url: str, events: int, senders: int, receiver: WebhookReceiver) -> tuple[float, float, int]:
    config = WebhooksConfig.model_validate({"targets": [{"name": "bench", "url": receiver.url,
                                                         "secret": "bench-secret-0123456789"}]})
    engine = init_db(url)
    plain, producer = session_factory(engine), session_factory(engine)
    install_webhook_queueing(producer, config, "bench", None)

    def apply_all(sessions: sessionmaker[Session]) -> float:
        t0 = time.perf_counter()
        for i in range(events):
            alert = make_alert(camera=f"cam{1 + i % 3}")
            apply_alert(sessions, AlertIn.model_validate(alert.model_dump(mode="json")))
        return (time.perf_counter() - t0) * 1000 / events

    without_ms = apply_all(plain)  # the same tickets without webhooks: what the hook adds is the difference
    queue_ms = apply_all(producer) - without_ms
    replicas = [WebhookSender(config, session_factory(init_db(url))) for _ in range(senders)]
    start = receiver.count()

    def drain(sender: WebhookSender) -> None:
        while receiver.count() - start < events:
            sender.process_due()

    t1 = time.perf_counter()
    threads = [threading.Thread(target=drain, args=(s,)) for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rate = events / (time.perf_counter() - t1)
    ids = Counter(r.json()["delivery_id"] for r in receiver.received[start:])
    return queue_ms, rate, sum(n - 1 for n in ids.values())


def _pg_database(admin_url: str) -> tuple[str, str]:
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    with create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--senders", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--database-url", default=None, help="PostgreSQL admin URL (default: SQLite files)")
    args = parser.parse_args()
    receiver = WebhookReceiver().start()
    try:
        for n in args.senders:
            if args.database_url:
                name, url = _pg_database(args.database_url)
            else:
                name, url = "", f"sqlite:///{tempfile.mkdtemp()}/bench.db"
            try:
                queue_ms, rate, dupes = _run(url, args.events, n, receiver)
            finally:
                if name:
                    with create_engine(args.database_url, isolation_level="AUTOCOMMIT").connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            backend = "postgresql" if name else "sqlite"
            print(f"{backend}: {args.events} events, {n} sender(s): queueing {queue_ms:.1f} ms/ticket "
                  f"added to opening a ticket, delivered {rate:.0f} events/s, duplicates {dupes}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
