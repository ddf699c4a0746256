#!/usr/bin/env python3
"""Sharded proof on real parts: N worker processes shard simulated cameras, one is killed, then N -> N+1.

Runs its own Mosquitto (the production config), ``gridwatch api`` on a scratch PostgreSQL database (created
on ``--database-url``'s server and dropped at the end; ``--database-url sqlite`` for SQLite in the work
folder) and ``gridwatch worker --shard i/N`` processes over ``--cameras`` simulated cameras: each loops the
soak's parking clip (scripts/_soak_setup.py: a car parks in the no-parking zone for ``--hold`` s of every
loop) from a file, key frames only, analysed every ``--analysis-interval`` s, so every camera opens and
clears a real parking incident per loop at a low CPU cost. The phases:

1. ``--shards`` workers (default 3) run for ``--phase-seconds``;
2. shard ``--kill-shard`` gets ``kill -9``, stays down ``--down-seconds``, and is started again with the same
   ordinal (its outbox, journal and worker id); the others keep running; ``--phase-seconds`` more;
3. every worker is stopped (SIGTERM) and ``--shards + 1`` workers start; ``--phase-seconds`` more;
4. the workers stop, the ticket service drains, and the report compares alerts queued by the workers
   (outboxes), seen on the broker (a tap) and applied as tickets (the soak's verdict, scripts/_soak_report.py),
   the ticket service's sequence gaps, the cameras that moved against what rendezvous hashing says, double
   ownership from the live health messages and from the process lifetimes (scripts/_shard_owners.py), and
   how long pick-up took.

    python scripts/shard_proof.py                                  # 60 cameras, 3 -> 4, PostgreSQL
    python scripts/shard_proof.py --cameras 9 --database-url sqlite --phase-seconds 10 --json

Exit 0 when nothing is lost or duplicated, no camera was owned twice, the moved cameras are the hashed ones
and every camera was picked up; 1 otherwise; 2 on a set-up error. Results: docs/deploy.md ("Sharded proof").
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (str(REPO), str(REPO / "scripts")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _soak_procs as procs  # noqa: E402
import yaml  # noqa: E402
from _shard_owners import (  # noqa: E402
    HealthTap,
    Lifetime,
    observed_intervals,
    overlaps,
    pick_up,
    process_intervals,
    wrong_owners,
)
from _shard_report import open_across, render  # noqa: E402
from _soak_observe import AlertTap, TicketApi, outbox_counts  # noqa: E402
from _soak_report import verdict  # noqa: E402
from _soak_setup import make_clip, scratch_database, site_config, store_sequences  # noqa: E402

from pipeline.sharding import shard_of  # noqa: E402

PREFIX = "proof"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
ALERT_FIELDS = ("worker_alerts_queued", "worker_alerts_pending", "worker_alerts_on_broker",
                "worker_deliveries_on_broker", "worker_alerts_applied", "worker_tickets", "attached_incidents",
                "lost", "duplicated")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=60, help="simulated cameras (default 60)")
    ap.add_argument("--shards", type=int, default=3, help="workers before the resize (default 3; then +1)")
    ap.add_argument("--kill-shard", type=int, default=1, help="the shard that gets kill -9 (default 1)")
    ap.add_argument("--phase-seconds", type=float, default=60.0, help="run time of each phase (default 60)")
    ap.add_argument("--down-seconds", type=float, default=10.0, help="the killed shard's down time (default 10)")
    ap.add_argument("--warmup-timeout", type=float, default=120.0,
                    help="max seconds for every camera to be analysed once before phase 1 (default 120)")
    ap.add_argument("--cut-wait", type=float, default=40.0,
                    help="after a phase, wait up to this long for an incident open on the cameras the kill or the "
                    "resize cuts off (default 40)")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="max seconds for the final drain")
    ap.add_argument("--database-url", default=PG_SERVER,
                    help=f"PostgreSQL server for a scratch database (default {PG_SERVER}), or 'sqlite'")
    ap.add_argument("--analysis-interval", type=float, default=3.0,
                    help="seconds between analysed key frames per camera (default 3)")
    ap.add_argument("--health-interval", type=float, default=2.0, help="camera health period, s (default 2)")
    ap.add_argument("--dwell", type=float, default=4.0, help="parking dwell_seconds (default 4)")
    ap.add_argument("--clear", type=float, default=6.0, help="parking clear_seconds (default 6)")
    ap.add_argument("--clip-starts", default="16,10,4",
                    help="camera clips start this far into ../shared/clips/car-detection.mp4, one clip per value, "
                    "cameras take them in turn (default 16,10,4: loops of 34, 40 and 46 s, so the cameras drift "
                    "apart and some incident is open at any moment)")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds the car stays parked per loop (default 20)")
    ap.add_argument("--clip-dir", type=Path, default=REPO / "var" / "soak",
                    help="where the clips are (parks-<start>-27.6-<hold>.mp4, made when missing; default var/soak)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep configs, logs and databases here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--json", action="store_true", help="JSON report on stdout (progress goes to stderr)")
    args = ap.parse_args(argv)
    if args.cameras < 1 or args.shards < 1 or not 0 <= args.kill_shard < args.shards:
        ap.error("need --cameras >= 1, --shards >= 1 and 0 <= --kill-shard < --shards")
    try:
        args.clip_starts = [float(x) for x in str(args.clip_starts).split(",")]
    except ValueError:
        ap.error("--clip-starts must be numbers separated by commas, e.g. 16,10,4")
    if not all(0 <= x < 27.6 for x in args.clip_starts):
        ap.error("--clip-starts must lie in 0..27.6 (the car parks at 27.6 s of the source)")
    return args


def log(msg: str) -> None:
    """A progress line on stderr."""
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


class ShardProof:
    """One run: set-up, the three phases, drain, report, tear-down."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:8]
        self.temp = args.workdir is None
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="gridwatch-shard-proof-")).resolve()
        self.cameras = [f"cam-{i:03d}" for i in range(args.cameras)]
        self.fleet = procs.Fleet()
        self.workers: dict[int, procs.Managed] = {}
        self.lives: list[Lifetime] = []
        self.phases: dict[str, float] = {}  # phase marks (Unix seconds)
        self.alerts: AlertTap | None = None
        self.health: HealthTap | None = None
        self.api_reader: TicketApi | None = None
        self.db_url = ""
        self.drop_database: Any = None
        self.config = self.workdir / "site.yaml"

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """Clip, scratch database, config, broker, taps, API."""
        a, wd = self.args, self.workdir
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        clips = [str(make_clip(a.clip_dir / f"parks-{x:g}-27.6-{a.hold:g}.mp4", start=x, hold_seconds=a.hold))
                 for x in a.clip_starts]
        if a.database_url.lower() == "sqlite":
            self.db_url = f"sqlite:///{wd / 'tickets.db'}"
        else:
            self.db_url, self.drop_database = scratch_database(a.database_url, f"gridwatch_shard_{self.run_id}")
        broker_port, api_port = procs.free_port(), procs.free_port()
        urls = {cam: clips[i % len(clips)] for i, cam in enumerate(self.cameras)}
        cfg = site_config(urls, broker_port, api_port, self.db_url, wd, PREFIX,
                          self.run_id, outbox=wd / "outbox.db", shared_group="gridwatch-api")
        for cam in cfg["cameras"]:
            cam["analysis_interval"] = a.analysis_interval
        cfg["hazards"]["parking"].update(dwell_seconds=a.dwell, clear_seconds=a.clear)
        cfg["worker"].update(health_interval_seconds=a.health_interval, start_spread_seconds=1.0)
        self.config.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
        self.fleet.add(procs.broker(wd, broker_port)).start()
        self.alerts = AlertTap(broker_port, PREFIX, f"proof-alerts-{self.run_id}")
        self.alerts.start()
        self.health = HealthTap(broker_port, PREFIX, f"proof-health-{self.run_id}")
        self.health.start()
        password = secrets.token_urlsafe(16)
        log(f"shard proof {self.run_id} in {wd}: broker :{broker_port}, api :{api_port}, {len(self.cameras)} "
            f"cameras, {self.db_url.split(':', 1)[0]}; starting the API ...")
        self.fleet.add(procs.api(wd, self.config, api_port, password)).start()
        self.api_reader = TicketApi(f"http://127.0.0.1:{api_port}", "admin", password)

    # -- workers ---------------------------------------------------------------------------------
    def start_workers(self, indices: list[int], count: int) -> None:
        """Start ``gridwatch worker --shard i/count`` for each index (not waiting for readiness)."""
        for i in indices:
            name = f"worker-{i}"
            argv = procs.gridwatch_argv("worker", "-c", str(self.config), "--shard", f"{i}/{count}",
                                        "--status-every", "0")
            m = self.fleet.members.get(name)
            if m is None or m.argv != argv:
                m = procs.Managed(name, argv, self.workdir / "logs" / f"{name}.log", env=procs.CHILD_ENV)
                m.incarnation = self.workers[i].incarnation if i in self.workers else 0
                self.fleet.add(m)
                self.workers[i] = m
            life = Lifetime(f"shard-{i}", i, count, m.incarnation + 1, time.time())
            m.start()
            self.lives.append(life)

    def end_workers(self, indices: list[int], how: str) -> None:
        """``kill -9`` or SIGTERM the workers at once, wait for every exit, close their lifetimes."""
        sig = signal.SIGKILL if how == "kill -9" else signal.SIGTERM
        running = [(i, self.workers[i]) for i in indices if self.workers[i].alive]
        for _, m in running:
            assert m.proc is not None
            m.proc.send_signal(sig)
        for i, m in running:
            assert m.proc is not None
            try:
                m.proc.wait(30)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait(10)
                how = f"{how}, then kill -9 after 30 s"
            m.proc = None
            life = next(lf for lf in reversed(self.lives) if lf.index == i and lf.end is None)
            life.end, life.how_ended = time.time(), how

    def wait_analysed(self, cameras: list[str], since: float, timeout: float) -> float:
        """Seconds until every camera has reported an analysed frame after ``since`` (or ``timeout``)."""
        assert self.health is not None
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            done = {r.camera_id for r in self.health.snapshot() if r.ts >= since and r.frames_analysed >= 1}
            if done >= set(cameras):
                break
            self.check_alive()
            time.sleep(0.5)
        return time.monotonic() - t0

    def wait_open(self, cameras: list[str], timeout: float) -> bool:
        """Wait (up to ``timeout``) until one of ``cameras`` has an open incident, so the cut hits one."""
        assert self.alerts is not None
        wanted = set(cameras)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            events: dict[str, set[str]] = {}
            for t in self.alerts.snapshot():
                if t.camera_id in wanted:
                    events.setdefault(t.key[0], set()).add(t.key[1])
            if any("opened" in evs and "cleared" not in evs for evs in events.values()):
                return True
            self.check_alive()
            time.sleep(0.5)
        return False

    def check_alive(self) -> None:
        """A worker or the API that died on its own is an error of the run."""
        for m in self.fleet.members.values():
            if m.proc is not None and not m.alive:
                raise RuntimeError(f"{m.name} exited on its own ({m.proc.returncode}):\n{m.log_text(2000)}")

    def run_for(self, seconds: float) -> None:
        """Let the system run, watching the processes."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_alive()
            time.sleep(0.5)

    # -- the phases ------------------------------------------------------------------------------
    def phases_run(self) -> None:
        """Start N shards, kill one and restart it, resize to N+1."""
        a = self.args
        n, k = a.shards, a.kill_shard
        self.phases["start"] = time.time()
        self.start_workers(list(range(n)), n)
        warm = self.wait_analysed(self.cameras, self.phases["start"], a.warmup_timeout)
        self.phases["warm"] = time.time()
        log(f"{n} shards: every camera analysed after {warm:.1f} s; running {a.phase_seconds:g} s")
        self.run_for(a.phase_seconds)
        killed = [c for c in self.cameras if shard_of(c, n) == k]
        self.wait_open(killed, a.cut_wait)
        self.phases["kill"] = time.time()
        self.end_workers([k], "kill -9")
        log(f"kill -9 shard {k}; down {a.down_seconds:g} s")
        self.run_for(a.down_seconds)
        self.phases["restart"] = time.time()
        self.start_workers([k], n)
        took = self.wait_analysed(killed, self.phases["restart"], a.warmup_timeout)
        log(f"shard {k} restarted: its {len(killed)} cameras analysed again after {took:.1f} s")
        self.run_for(max(0.0, a.phase_seconds - took))
        self.wait_open([c for c in self.cameras if shard_of(c, n) != shard_of(c, n + 1)], a.cut_wait)
        self.phases["resize"] = time.time()
        self.end_workers(list(range(n)), "SIGTERM")
        self.phases["resized"] = time.time()
        log(f"all {n} stopped in {self.phases['resized'] - self.phases['resize']:.1f} s; starting {n + 1}")
        self.start_workers(list(range(n + 1)), n + 1)
        took = self.wait_analysed(self.cameras, self.phases["resized"], a.warmup_timeout)
        log(f"{n + 1} shards: every camera analysed after {took:.1f} s; running {a.phase_seconds:g} s")
        self.run_for(max(0.0, a.phase_seconds - took))
        self.wait_outboxes_empty(15.0)
        self.phases["stop"] = time.time()
        self.end_workers(list(range(n + 1)), "SIGTERM")

    def outboxes(self) -> tuple[int, int]:
        """(alerts ever queued, still pending) over every shard's outbox."""
        counts = [outbox_counts(self.workdir / f"outbox.shard-{i}.db") for i in range(self.args.shards + 1)]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def wait_outboxes_empty(self, timeout: float) -> None:
        """Stop at a moment with nothing pending (new alerts keep coming; the stop's own drain takes those)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.outboxes()[1]:
            time.sleep(0.2)

    def drain(self) -> tuple[bool, float]:
        """Wait until the consumer has finished what the broker delivered (quiet for 3 s)."""
        assert self.alerts is not None and self.api_reader is not None
        t0 = time.monotonic()
        last: tuple[int, float | None] | None = None
        quiet = time.monotonic()
        while time.monotonic() - t0 < self.args.drain_timeout:
            state = (len({r.key for r in self.alerts.snapshot()}), self.api_reader.processed())
            if state != last:
                last, quiet = state, time.monotonic()
            elif time.monotonic() - quiet >= 3.0 and state[1] is not None and state[1] >= state[0]:
                return True, time.monotonic() - t0
            time.sleep(0.5)
        return False, time.monotonic() - t0

    # -- report ----------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """Drain, then every number of the run."""
        assert self.alerts is not None and self.health is not None and self.api_reader is not None
        a, n = self.args, self.args.shards
        drained, drain_s = self.drain()
        tickets = self.api_reader.tickets()
        details = [self.api_reader.ticket(t["id"]) for t in tickets]
        produced, pending = self.outboxes()
        alerts = verdict(tap=self.alerts.snapshot(), cameras=set(self.cameras), tickets=tickets, details=details,
                         burst_ids=set(), produced=produced, pending=pending)
        sequences = store_sequences(self.db_url)
        now = time.time()
        records = self.health.snapshot()
        observed, orphans = observed_intervals(records, self.lives, now)
        by_process = process_intervals(self.cameras, self.lives, now)
        before = [r for r in records if r.ts < self.phases["resize"]]
        after = [r for r in records if r.ts >= self.phases["resized"]]
        owner_before = {r.camera_id: r.worker_id for r in sorted(before, key=lambda r: r.ts)}
        owner_after = {r.camera_id: r.worker_id for r in sorted(after, key=lambda r: r.ts)}
        expected = sorted(c for c in self.cameras if shard_of(c, n) != shard_of(c, n + 1))
        seen_moved = sorted(c for c in self.cameras if owner_before.get(c) != owner_after.get(c))
        moved_to = {f"shard-{shard_of(c, n + 1)}" for c in expected}
        killed = [c for c in self.cameras if shard_of(c, n) == a.kill_shard]
        taps = self.alerts.snapshot()
        keys = sorted({t.key for t in taps})
        camera_of = {t.key[0]: t.camera_id for t in taps}
        across_kill = open_across(keys, camera_of, set(killed), self.phases["kill"], self.phases["restart"])
        across_resize = open_across(keys, camera_of, set(expected), self.phases["resize"], self.phases["resized"])
        gaps = sum(s["missing_total"] - s["late_total"] for w, s in sequences.items() if w.startswith("shard-"))
        report: dict[str, Any] = {
            "run": {"cameras": a.cameras, "shards": f"{n} -> {n + 1}", "kill_shard": a.kill_shard,
                    "phase_s": a.phase_seconds, "down_s": a.down_seconds, "analysis_interval_s": a.analysis_interval,
                    "database": self.db_url.split(":", 1)[0], "wall_s": round(now - self.phases["start"], 1),
                    "finished": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                    "load_avg_end": [round(x, 2) for x in os.getloadavg()]},
            "alerts": {k: alerts[k] for k in ALERT_FIELDS},
            "incidents": len({k[0] for k in keys}),
            "loss_detail": {"lost": alerts["lost_detail"], "duplicated": alerts["duplicate_detail"]},
            "sequences": sequences, "sequence_gaps": gaps,
            "kill": {"shard": a.kill_shard, "cameras": len(killed), **across_kill,
                     **pick_up(records, killed, f"shard-{a.kill_shard}", self.phases["restart"], self.phases["kill"])},
            "resize": {"moved_expected": len(expected), "moved_observed": len(seen_moved),
                       "moved_share": round(len(expected) / len(self.cameras), 3),
                       "moved_exactly_as_hashed": seen_moved == expected, "moved_to": sorted(moved_to),
                       "moved_cameras": expected, **across_resize,
                       **pick_up(records, expected, f"shard-{n}", self.phases["resized"], self.phases["resize"])},
            "ownership": {"health_messages": len(records), "unattributed_messages": orphans,
                          "observed_overlaps": overlaps(observed), "process_overlaps": overlaps(by_process),
                          "wrong_owner_before_resize": wrong_owners(before, {f"shard-{i}": n for i in range(n)}),
                          "wrong_owner_after_resize": wrong_owners(after, {f"shard-{i}": n + 1
                                                                           for i in range(n + 1)}),
                          "cameras_seen": len(observed)},
            "lifetimes": [{"worker": lf.name, "start": round(lf.start - self.phases["start"], 1),
                           "end": None if lf.end is None else round(lf.end - self.phases["start"], 1),
                           "ended_by": lf.how_ended} for lf in self.lives],
            "drain": {"drained": drained, "seconds": round(drain_s, 1)},
        }
        own = report["ownership"]
        report["ok"] = bool(drained and alerts["lost"] == 0 and alerts["duplicated"] == 0 and gaps == 0
                            and alerts["worker_alerts_applied"] > 0 and not own["observed_overlaps"]
                            and not own["process_overlaps"] and not own["wrong_owner_before_resize"]
                            and not own["wrong_owner_after_resize"] and report["resize"]["moved_exactly_as_hashed"]
                            and report["resize"]["never_cleared"] == 0
                            and not report["kill"]["missing"] and not report["resize"]["missing"]
                            and own["cameras_seen"] == len(self.cameras))
        return report

    def teardown(self, ok: bool) -> None:
        """Stop every process; drop a scratch database; remove a temporary work folder after a clean run."""
        for tap in (self.alerts, self.health):
            if tap is not None:
                tap.stop()
        self.fleet.stop_all()
        if self.drop_database is not None:
            self.drop_database()
        if self.temp and ok and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"logs, configs and databases kept in {self.workdir}")


def main(argv: list[str] | None = None) -> int:
    """One run; exit codes in the module docstring."""
    args = parse_args(argv)
    proof = ShardProof(args)
    report: dict[str, Any] | None = None
    code = 2
    load_start = [round(x, 2) for x in os.getloadavg()]
    try:
        proof.setup()
        code = 1
        proof.phases_run()
        report = proof.report()
        report["run"]["load_avg_start"] = load_start
        code = 0 if report["ok"] else 1
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        code = 130
    except Exception as exc:  # noqa: BLE001 - always tear down; the error in one line
        log(f"shard proof failed: {type(exc).__name__}: {exc}")
    finally:
        proof.teardown(ok=code == 0)
    if report is not None:
        print(render(report), file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print(json.dumps(report, indent=2, default=str))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
