"""Burst probe: N QoS 1 alerts at once into a private Mosquitto, the real ticket consumer on SQLite behind it.

Prints tickets, sequence gaps counted by the consumer and timing for one broker queue limit, e.g.::

    python scripts/burst_probe.py --alerts 5000 --max-queued 1000   # stock Mosquitto limit
    python scripts/burst_probe.py --alerts 5000 --max-queued 0      # unlimited (docker-compose setting)

One extra alert is sent after the burst has drained, so a loss at the tail shows as a gap too.
Results are recorded in docs/reliability.md.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from pipeline.alerts.schema import ZoneRef, alert_topic, example_alert
from pipeline.config import MqttConfig
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.models import Ticket

PREFIX = "probe"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_broker(workdir: Path, port: int, max_queued: int) -> subprocess.Popen[bytes]:
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages {max_queued}\n"
                    f"persistence false\nuser root\n")
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def _alerts(n: int, worker: str) -> list[tuple[str, bytes]]:
    base = example_alert()
    out = []
    for i in range(1, n + 1):
        a = base.model_copy(update={"incident_id": f"probe-{i}-{uuid.uuid4().hex[:6]}", "worker_id": worker,
                                    "seq": i,
                                    # a zone each, so the duplicate-open guard keeps them apart
                                    "zone": ZoneRef(id=f"z{i}", kind="fire_lane")})
        out.append((alert_topic(PREFIX, a.grid.path, a.camera.id, a.hazard.value), a.to_bytes()))
    return out


def _publish(port: int, msgs: list[tuple[str, bytes]]) -> float:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"burst-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(len(msgs))
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    infos = [c.publish(t, p, qos=1) for t, p in msgs]
    for info in infos:
        info.wait_for_publish(timeout=120)
    took = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=5000)
    ap.add_argument("--max-queued", type=int, default=1000, help="Mosquitto max_queued_messages (0 = unlimited)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds without a new ticket that end the wait")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = _free_port()
        broker = _start_broker(work, port, args.max_queued)
        engine = init_db(f"sqlite:///{work}/tickets.db")
        sessions = session_factory(engine)
        consumer = AlertConsumer(MqttConfig(url=f"mqtt://127.0.0.1:{port}", topic_prefix=PREFIX), sessions,
                                 client_id="probe-consumer")
        consumer.start()
        if not consumer.wait_subscribed(10):
            print("consumer did not subscribe", file=sys.stderr)
            return 1
        msgs = _alerts(args.alerts + 1, "probe-worker")

        def count() -> int:
            with sessions() as s:
                return s.scalar(select(func.count()).select_from(Ticket)) or 0

        try:
            t0 = time.perf_counter()
            publish_s = _publish(port, msgs[:-1])
            last, last_change = -1, time.perf_counter()
            while time.perf_counter() - last_change < args.settle:
                n = count()
                if n != last:
                    last, last_change = n, time.perf_counter()
                if n >= args.alerts:
                    break
                time.sleep(0.2)
            drained_s = time.perf_counter() - t0
            _publish(port, msgs[-1:])  # reveals a tail loss as a gap
            deadline = time.time() + 30
            while count() < last + 1 and time.time() < deadline:
                time.sleep(0.2)
            tickets = count()
            gaps = consumer.metrics.sequence_gaps.labels("probe-worker")._value.get()
        finally:
            consumer.stop()
            engine.dispose()
            broker.terminate()
            broker.wait(10)
    sent = args.alerts + 1
    print(f"max_queued_messages={args.max_queued}: sent {sent} (burst of {args.alerts} published in "
          f"{publish_s:.1f} s), tickets {tickets} ({100 * (sent - tickets) / sent:.0f} % lost), "
          f"sequence gaps counted {gaps:.0f}, tickets+gaps={tickets + gaps:.0f}, "
          f"burst drained in {drained_s:.1f} s ({tickets / max(drained_s, 1e-9):.0f} tickets/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
