"""Resend probe: the broker-restart loss of an offline shared subscription, and its recovery by resend requests.

A private Mosquitto with persistence, the real ticket consumer (shared group, SQLite) and a real worker
publisher with its archive and resend responder. ``--before`` alerts become tickets; the consumer goes
offline; the broker restarts (SIGTERM, start); the worker publishes ``--alerts`` more (all PUBACKed); the
consumer comes back. It prints how many of them arrived on their own, how many were recovered by resend
requests, how many requests it took and how long, e.g.::

    python scripts/resend_probe.py --alerts 200
    python scripts/resend_probe.py --alerts 200 --no-archive   # the loss alone (nothing to resend from)

Results are recorded in docs/reliability.md ("Recovering alerts lost at the broker").
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import func, select

from pipeline.alerts.publisher import MqttPublisher
from pipeline.alerts.resend import ResendResponder
from pipeline.alerts.schema import ZoneRef, example_alert
from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket

PREFIX = "probe"
WORKER = "probe-w1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_broker(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence true\n"
                    f"persistence_location {workdir}/\nautosave_interval 1\nuser root\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def _wait(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=200, help="alerts published while the consumer is away")
    ap.add_argument("--before", type=int, default=3, help="alerts that become tickets first")
    ap.add_argument("--no-archive", action="store_true", help="worker without archive (shows the loss alone)")
    ap.add_argument("--timeout", type=float, default=120.0, help="how long to wait for the tickets")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="resend-probe-"))
    port = _free_port()
    broker = _start_broker(work, port)
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{port}", topic_prefix=PREFIX, shared_group="api",
                     resend_retry_seconds=2.0, resend_max_requests=5)
    sessions = session_factory(init_db(f"sqlite:///{work}/tickets.db"))
    client_id = f"probe-{uuid.uuid4().hex[:6]}"
    total = args.before + args.alerts

    def tickets() -> int:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(Ticket)) or 0

    pub = MqttPublisher(cfg, work / "outbox.db", WORKER, reconnect_max_seconds=1,
                        archive_max=0 if args.no_archive else 10_000)
    responder = None if args.no_archive else ResendResponder(pub, f"{pub.client_id}-resend")
    consumer = AlertConsumer(cfg, sessions, client_id=client_id, retry_seconds=0.2)
    back: AlertConsumer | None = None
    try:
        consumer.start()
        consumer.wait_subscribed(10)
        pub.start()
        if responder is not None:
            responder.start()
        base = example_alert()
        alerts = [base.model_copy(update={"incident_id": f"probe-{i}-{uuid.uuid4().hex[:6]}",
                                          "zone": ZoneRef(id=f"z{i}", kind="fire_lane")}) for i in range(total)]
        for a in alerts[:args.before]:
            pub.publish_alert(a)
        _wait(lambda: tickets() == args.before, 30)
        consumer.stop()
        broker.terminate()
        broker.wait(10)
        broker = _start_broker(work, port)
        for a in alerts[args.before:]:
            pub.publish_alert(a)
        _wait(lambda: pub.connected and len(pub.outbox) == 0, 60)
        started = time.monotonic()
        back = AlertConsumer(cfg, sessions, client_id=client_id, retry_seconds=0.2)
        back.start()
        back.wait_subscribed(10)
        done = _wait(lambda: tickets() == total
                     or back.metrics.gaps_unrecoverable.labels(WORKER)._value.get() >= args.alerts, args.timeout)
        took = time.monotonic() - started
        m = back.metrics
        # Everything the broker still delivered arrived before the worker's status was taken at its word (the
        # recovery waits until no alert of the worker has come for its grace), so the missing count is the loss.
        lost = int(m.sequence_gaps.labels(WORKER)._value.get())
        on_their_own = args.alerts - lost
        result = {
            "alerts_while_away": args.alerts, "arrived_without_resend": on_their_own,
            "lost_at_broker": lost, "tickets": tickets(), "expected_tickets": total,
            "recovered": m.gaps_recovered.labels(WORKER)._value.get(),
            "unrecoverable": m.gaps_unrecoverable.labels(WORKER)._value.get(),
            "resend_requests": m.resend_requests.labels(WORKER)._value.get(),
            "seconds_from_consumer_back_to_last_ticket": round(took, 1), "finished": done,
            "worker_resent": responder.stats()["resent"] if responder is not None else 0,
        }
    finally:
        for c in (back, consumer):
            if c is not None:
                c.stop()
        if responder is not None:
            responder.stop()
        pub.stop(drain_timeout=0)
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:42} {v}")
    return 0 if result["tickets"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
