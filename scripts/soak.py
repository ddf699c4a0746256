#!/usr/bin/env python3
"""Soak: the real gridwatch system on loopback for a fixed time, under seeded chaos; counts lost and duplicated alerts.

Runs its own Mosquitto (the production config, deploy/mosquitto/mosquitto.conf: unlimited queues,
persistence), ``gridwatch api`` on SQLite (or ``--database-url postgresql://...``: a scratch database is
created on that server and dropped at the end), ``gridwatch worker`` processes and one RTSP server per
simulated camera (scripts/rtsp_server.py looping a parking clip made from ../shared/clips/car-detection.mp4:
a car parks for 20 s of every 34 s, so each camera opens, updates and clears a parking incident per loop).
Chaos on a seeded schedule: RTSP server ``kill -9``, worker ``kill -9``, broker restart (SIGTERM), API
restart (SIGTERM or ``kill -9``) and one QoS 1 burst of valid ``AlertV1`` payloads straight to the broker.
The fault times and kinds follow ``--seed``; camera and worker kills overlap with anything, the broker and
the API go down one at a time. The last worker (of two or more) is never killed, so its memory is measured
over the whole run. At the end the cameras stop, the system drains, and the report compares alerts queued by
the workers, seen on the broker and applied as tickets. Exit 1 when anything is lost or duplicated (or the
drain times out, or a process died on its own), 2 on a set-up error, 130 on Ctrl-C.

    python scripts/soak.py --minutes 10                       # table on stdout
    nice -n 10 python scripts/soak.py --minutes 10 --json     # JSON report on stdout, table on stderr
    python scripts/soak.py --minutes 0.75 --cameras 1 --burst 200 --chaos-interval 6 --json

Results are recorded in docs/reliability.md ("Soak").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _soak_procs as procs  # noqa: E402
import yaml  # noqa: E402
from _soak_observe import AlertTap, BurstPublisher, TicketApi, burst_alerts, outbox_counts  # noqa: E402
from _soak_report import dead_letter_reasons, memory_growth, render, verdict  # noqa: E402
from _soak_setup import make_clip, parse_args, scratch_database, site_config, store_sequences  # noqa: E402
from rich.console import Console  # noqa: E402

PREFIX = "soak"
FAULTS = ("camera_kill", "worker_kill", "broker_restart", "api_restart")
FAULT_WEIGHTS = {"camera_kill": 3, "worker_kill": 2, "broker_restart": 1, "api_restart": 1}
DOWN_SECONDS = {"camera_kill": (5.0, 15.0), "worker_kill": (1.0, 5.0), "broker_restart": (2.0, 8.0),
                "api_restart": (1.0, 5.0)}


class Interrupted(Exception):
    """SIGTERM or SIGINT."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


class Soak:
    """One soak run: set-up, chaos phase, drain, report, tear-down (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, log: Console) -> None:
        self.args = args
        self.log = log
        self.rng = random.Random(args.seed)
        self.run_id = uuid.uuid4().hex[:8]
        self.temp = args.workdir is None
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gridwatch-soak-")).resolve()
        self.fleet = procs.Fleet()
        self.cameras = [f"cam{i}" for i in range(args.cameras)]
        self.events: list[dict[str, Any]] = []
        self.plan: list[tuple[float, str]] = []
        self.unexpected: list[dict[str, Any]] = []
        self.source_crashes: list[dict[str, Any]] = []
        self.restarts: list[tuple[float, procs.Managed, int]] = []  # (due, process, tries)
        self.burst: BurstPublisher | None = None
        self.burst_ids: set[str] = set()
        self.burst_msgs: list[tuple[str, bytes]] = []
        self.broker_port = 0
        self.tap: AlertTap | None = None
        self.api_reader: TicketApi | None = None
        self.db_url = ""
        self.drop_database: Any = None
        self.t0 = time.monotonic()
        self.lag = {"max_messages": 0, "max_seconds": 0.0}
        self._lag_base, self._lag_last, self._lag_life = 0.0, 0.0, 0

    # -- set-up ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds since the chaos phase began."""
        return time.monotonic() - self.t0

    def setup(self) -> None:
        """Clip, configs, broker, tap, cameras, API, workers."""
        a, wd = self.args, self.workdir
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        clip = make_clip(a.clip)
        if a.database_url:
            self.db_url, self.drop_database = scratch_database(a.database_url, f"gridwatch_soak_{self.run_id}")
        else:
            self.db_url = f"sqlite:///{wd / 'tickets.db'}"
        self.broker_port = broker_port = procs.free_port()
        api_port = procs.free_port()
        urls = {}
        for cam in self.cameras:
            if a.source == "rtsp":
                port = procs.free_port()
                self.fleet.add(procs.rtsp_camera(wd, cam, port, clip))
                urls[cam] = f"rtsp://127.0.0.1:{port}/{cam}"
            else:
                urls[cam] = str(clip)
        shares = [self.cameras[i::a.workers] for i in range(a.workers)]
        for i in range(-1, a.workers):  # -1: the API's config
            name = "api" if i < 0 else f"worker-{i}"
            cfg = site_config(urls, broker_port, api_port, self.db_url, wd, PREFIX, self.run_id,
                              outbox=wd / f"outbox-{max(i, 0)}.db", shared_group=a.shared_group)
            (wd / f"{name}.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
        self.fleet.add(procs.broker(wd, broker_port, a.broker_max_queued)).start()
        self.tap = AlertTap(broker_port, PREFIX, f"soak-tap-{self.run_id}")
        self.tap.start()
        for m in self.fleet.of_role("camera-"):
            m.start()
        self.log.print(f"soak {self.run_id} in {wd}: broker :{broker_port}, api :{api_port}, "
                       f"{len(self.cameras)} cameras, {a.workers} workers; starting the API ...")
        password = secrets.token_urlsafe(16)
        self.fleet.add(procs.api(wd, wd / "api.yaml", api_port, password)).start()
        self.api_reader = TicketApi(f"http://127.0.0.1:{api_port}", "admin", password)
        for i, share in enumerate(shares):
            self.fleet.add(procs.worker(wd, i, wd / f"worker-{i}.yaml", share)).start()
        if a.burst:
            self.burst_msgs = burst_alerts(a.burst, PREFIX, ["T01", "D01", "C01", "G001"], f"soak-burst-{self.run_id}",
                                           self.run_id)
            self.burst_ids = {json.loads(p)["incident_id"] for _, p in self.burst_msgs}

    def schedule(self) -> list[tuple[float, str]]:
        """Seeded fault times and kinds: each kind at least once, the burst exactly once."""
        a = self.args
        duration = a.minutes * 60
        quiet = min(60.0, 0.15 * duration)
        lo, hi = a.warmup_seconds, max(a.warmup_seconds + 1, duration - quiet)
        kinds = [k for k in FAULTS if a.source == "rtsp" or k != "camera_kill"]
        n = max(len(kinds), round((hi - lo) / a.chaos_interval))
        plan = self.rng.sample(kinds, len(kinds))
        plan += self.rng.choices(kinds, [FAULT_WEIGHTS[k] for k in kinds], k=n - len(kinds))
        if a.burst:
            plan.insert(self.rng.randrange(len(plan) + 1), "burst")
        times = sorted(self.rng.uniform(lo, hi) for _ in plan)
        return list(zip(times, plan, strict=True))

    # -- chaos -----------------------------------------------------------------------------------
    def target(self, kind: str) -> procs.Managed | None:
        """The process a fault hits now, or None while it must wait.

        Camera and worker kills overlap with anything (another process that is down is not theirs); the
        broker and the API go down one at a time (the API is ready only with a broker), the broker not
        while the burst is being published, the burst not while the broker is down.
        """
        down = {m.name for _, m, _ in self.restarts}
        if kind == "camera_kill":
            up = [m for m in self.fleet.of_role("camera-") if m.name not in down]
            return self.rng.choice(up) if up else None
        if kind == "worker_kill":
            workers = self.fleet.of_role("worker-")
            up = [m for m in (workers[:-1] if len(workers) > 1 else workers) if m.name not in down]
            return self.rng.choice(up) if up else None
        if kind == "burst":
            return self.fleet["broker"] if "broker" not in down else None
        if down & {"broker", "api"} or (kind == "broker_restart" and self.burst is not None and self.burst.running):
            return None
        return self.fleet["broker" if kind == "broker_restart" else "api"]

    def fault(self, kind: str, m: procs.Managed) -> None:
        """Inject one fault now into ``m``; its restart is scheduled."""
        event: dict[str, Any] = {"t": round(self.elapsed(), 1), "action": kind}
        if kind == "burst":
            self.burst = BurstPublisher(self.broker_port, self.burst_msgs)
            self.burst.start()
            event["alerts"] = len(self.burst_msgs)
        else:
            if kind == "api_restart":
                how = self.rng.choice(("SIGTERM", "SIGKILL"))
                event["signal"] = how
                m.kill() if how == "SIGKILL" else m.stop()
            elif kind == "broker_restart":
                m.stop()  # SIGTERM: Mosquitto saves its persistence (a kill -9 loses up to autosave_interval)
            else:
                m.kill()
            down = self.rng.uniform(*DOWN_SECONDS[kind])
            self.restarts.append((time.monotonic() + down, m, 0))
            event.update(target=m.name, down_s=round(down, 1))
        self.events.append(event)
        self.log.print(f"[{event['t']:6.1f} s] {kind} {event.get('target', '')}", highlight=False)

    def do_restarts(self, force: bool = False) -> None:
        """Start the processes whose down time is over (all of them when ``force``)."""
        now = time.monotonic()
        keep = []
        for due, m, tries in self.restarts:
            if not force and due > now:
                keep.append((due, m, tries))
                continue
            try:
                m.start()
            except RuntimeError as exc:
                if tries >= 4:
                    raise
                self.log.print(f"restart of {m.name} failed ({exc}); again in 3 s")
                keep.append((time.monotonic() + 3, m, tries + 1))
        self.restarts = keep

    def check_alive(self) -> None:
        """A process that died without a fault is a finding: record it and start it again."""
        down = {m.name for _, m, _ in self.restarts}
        for m in self.fleet.members.values():
            if m.name not in down and m.proc is not None and not m.alive:
                # A camera is the test's RTSP server (GStreamer), not gridwatch: counted apart.
                found = self.source_crashes if m.name.startswith("camera-") else self.unexpected
                found.append({"t": round(self.elapsed(), 1), "process": m.name, "returncode": m.proc.returncode,
                              "log_tail": m.log_text(1500)})
                self.log.print(f"[red]{m.name} exited on its own ({m.proc.returncode}); restarting[/]")
                m.proc = None
                self.restarts.append((time.monotonic(), m, 0))

    def sample(self) -> None:
        """Memory of every process; consumer lag (tap deliveries vs messages the consumer finished)."""
        self.fleet.sample_all()
        api = self.fleet["api"]
        if self.api_reader is None or self.tap is None or not api.alive:
            return
        processed = self.api_reader.processed()
        if processed is None:
            return
        if api.incarnation != self._lag_life:  # counters restart with the process
            self._lag_base += self._lag_last
            self._lag_life, self._lag_last = api.incarnation, 0.0
        self._lag_last = processed
        done = int(self._lag_base + processed)
        records = self.tap.snapshot()
        behind = len(records) - done
        if behind > 0:
            self.lag["max_messages"] = max(int(self.lag["max_messages"]), behind)
            age = time.monotonic() - records[max(0, done)].received
            self.lag["max_seconds"] = round(max(float(self.lag["max_seconds"]), age), 1)

    def chaos_phase(self) -> None:
        """Run the schedule for ``--minutes`` (a fault that must wait keeps the later ones waiting)."""
        self.plan = self.schedule()
        self.t0 = time.monotonic()
        end = self.t0 + self.args.minutes * 60
        next_sample = time.monotonic()
        while time.monotonic() < end:
            self.do_restarts()
            self.check_alive()
            if self.plan and self.elapsed() >= self.plan[0][0]:
                kind = self.plan[0][1]
                target = self.target(kind)
                if target is not None:
                    self.plan.pop(0)
                    self.fault(kind, target)
            if time.monotonic() >= next_sample:
                self.sample()
                next_sample += self.args.sample_seconds
            time.sleep(0.2)

    # -- drain and report ------------------------------------------------------------------------
    def pending(self) -> tuple[int, int]:
        """(alerts queued, still pending) over all worker outboxes."""
        counts = [outbox_counts(self.workdir / f"outbox-{i}.db") for i in range(self.args.workers)]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def check(self) -> dict[str, Any]:
        """Read tickets (with events for the worker cameras) and compare with the tap and the outboxes."""
        assert self.api_reader is not None and self.tap is not None
        tickets = self.api_reader.tickets()
        details = [self.api_reader.ticket(t["id"]) for t in tickets if t["camera_id"] in self.cameras]
        produced, pending = self.pending()
        return verdict(tap=self.tap.snapshot(), cameras=set(self.cameras), tickets=tickets, details=details,
                       burst_ids=self.burst_ids, produced=produced, pending=pending)

    def drain(self) -> tuple[dict[str, Any], bool, float]:
        """Bring everything back, stop the cameras, wait for outboxes and the consumer; the final verdict."""
        t = time.monotonic()
        self.do_restarts(force=True)
        for at, kind in self.plan:
            if kind == "burst":  # the burst always runs, late if it must: the verdict counts on it
                self.fault(kind, self.fleet["broker"])
                self.events[-1]["late"] = True
            else:
                self.events.append({"t": round(at, 1), "action": kind, "skipped": "run ended first"})
        self.plan = []
        if self.burst is not None:
            self.burst.join(max(1.0, self.args.drain_timeout / 2))
        for m in self.fleet.of_role("camera-"):
            m.stop()
        deadline = t + self.args.drain_timeout
        last, quiet_since, result = None, time.monotonic(), None
        while time.monotonic() < deadline:
            self.check_alive()
            self.do_restarts()
            self.sample()
            assert self.tap is not None
            state = (self.pending()[1], len(self.tap.snapshot()), self._lag_last)
            if state != last:
                last, quiet_since = state, time.monotonic()
            elif state[0] == 0 and time.monotonic() - quiet_since >= 5:
                result = self.check()
                if result["lost"] == 0:
                    return result, True, time.monotonic() - t
                quiet_since = time.monotonic() + 5  # something missing: look again in 10 s
            time.sleep(1.0)
        return result or self.check(), False, time.monotonic() - t

    def report(self) -> dict[str, Any]:
        """Drain, then everything the run measured."""
        alerts, drained, drain_s = self.drain()
        assert self.api_reader is not None
        a = self.args
        report: dict[str, Any] = {
            "run": {"minutes": a.minutes, "cameras": a.cameras, "workers": a.workers, "seed": a.seed,
                    "burst": a.burst, "source": a.source, "shared_group": a.shared_group,
                    "database": self.db_url.split(":", 1)[0],
                    "warmup_s": a.warmup_seconds, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                    "host": socket.gethostname(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
            "alerts": alerts,
            "dead_letters": dead_letter_reasons(self.api_reader.dead_letters()),
            "sequences": store_sequences(self.db_url),
            "lag": self.lag,
            "memory": memory_growth(self.fleet.members.values(), a.warmup_seconds),
            "chaos": self.events,
            "burst": None if self.burst is None else {
                "acked": self.burst.acked, "error": self.burst.error,
                "publish_s": round((self.burst.finished or 0) - (self.burst.started or 0), 1)},
            "unexpected_exits": self.unexpected,
            "api_read_errors": dict(Counter(self.api_reader.errors)),
            "camera_server_crashes": self.source_crashes,
            "drain": {"drained": drained, "seconds": round(drain_s, 1)},
        }
        report["ok"] = bool(drained and alerts["lost"] == 0 and alerts["duplicated"] == 0 and not self.unexpected)
        return report

    def teardown(self, ok: bool) -> None:
        """Stop every process; drop a scratch database; remove a temporary work folder after a clean run."""
        if self.tap is not None:
            self.tap.stop()
        self.fleet.stop_all()
        if self.drop_database is not None:
            self.drop_database()
        if self.temp and ok and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self.log.print(f"logs, configs and databases kept in {self.workdir}")


def main(argv: list[str] | None = None) -> int:
    """Run one soak; see the module docstring for the exit codes."""
    args = parse_args(argv, __doc__ or "")
    log = Console(stderr=True)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)
    soak = Soak(args, log)
    report: dict[str, Any] | None = None
    code = 2
    try:
        soak.setup()
        code = 1
        soak.chaos_phase()
        report = soak.report()
        code = 0 if report["ok"] else 1
    except Interrupted as exc:
        log.print(f"interrupted ({exc}); stopping everything")
        code = 130
    except Exception as exc:  # noqa: BLE001 - always tear down; report the error in one line + traceback
        log.print_exception()
        log.print(f"[red]soak failed: {type(exc).__name__}: {exc}[/]")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the tear-down short
        soak.teardown(ok=code == 0)
    if report is not None:
        render(report, log if args.json else Console())
        if args.json:
            print(json.dumps(report, indent=2, default=str))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
