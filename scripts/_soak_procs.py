"""The soak's processes (scripts/soak.py): Mosquitto, RTSP cameras, ``gridwatch api`` and ``gridwatch worker``.

Each process is a :class:`Managed` child with its own log file. Children die with the soak even when it is
killed itself (``PR_SET_PDEATHSIG``), and :class:`Fleet.stop_all` stops the rest on a normal end, Ctrl-C or
an error. Every wait here has a time limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SYSTEM_PYTHON = "/usr/bin/python3"  # has GStreamer's introspection bindings (scripts/rtsp_server.py)
PRODUCTION_MOSQUITTO_CONF = REPO / "deploy" / "mosquitto" / "mosquitto.conf"
_GIVEN: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the ephemeral range (20000-32000).

    Every process here is restarted on its port; outside the ephemeral range a client retrying a dead
    server's port can never get that port as its own source port (a TCP self-connect), which would keep
    the server from coming back.
    """
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 32000)
        if port in _GIVEN:  # handed out before, maybe not bound yet
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free port in 20000-32000")


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the soak process dies (Linux), so nothing is orphaned."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS``), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class RssSample:
    """One memory sample of one process incarnation."""

    incarnation: int
    age_s: float
    kb: int


@dataclass
class Managed:
    """A child process that can be killed and started again with the same command line.

    Attributes:
        name: e.g. ``api``, ``worker-0``, ``broker``, ``camera-cam0``.
        argv: command line.
        log_path: stdout and stderr of every incarnation, appended.
        ready: called after each start; returns True once the process serves (bounded by ``ready_timeout``).
        incarnation: how many times it was started.
        samples: memory samples (all incarnations).
    """

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[Managed], bool] | None = None
    ready_timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    started_at: float = 0.0
    samples: list[RssSample] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        """Whether the current incarnation runs."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start a new incarnation and wait until it is ready.

        Raises:
            RuntimeError: it exited or was not ready within ``ready_timeout``.
        """
        if self.alive:
            return
        self.incarnation += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {self.name} start #{self.incarnation} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **self.env}, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        if self.ready is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if self.ready(self):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    def signal(self, sig: int, timeout: float = 15.0) -> None:
        """Send ``sig`` and wait up to ``timeout`` for the exit (then SIGKILL)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        """``kill -9``."""
        self.signal(signal.SIGKILL, 10.0)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM, SIGKILL after ``timeout``)."""
        self.signal(signal.SIGTERM, timeout)

    def sample(self) -> int | None:
        """Record the current RSS (KiB) of the running incarnation."""
        if not self.alive or self.proc is None:
            return None
        kb = rss_kb(self.proc.pid)
        if kb is not None:
            self.samples.append(RssSample(self.incarnation, time.monotonic() - self.started_at, kb))
        return kb

    def log_text(self, tail: int = 4000) -> str:
        """The end of the log file."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""


@dataclass
class Fleet:
    """All processes of one soak, by name."""

    members: dict[str, Managed] = field(default_factory=dict)

    def add(self, member: Managed) -> Managed:
        """Register (not start) a process."""
        self.members[member.name] = member
        return member

    def __getitem__(self, name: str) -> Managed:
        return self.members[name]

    def of_role(self, prefix: str) -> list[Managed]:
        """Members whose name starts with ``prefix`` (``worker-``, ``camera-``)."""
        return [m for n, m in self.members.items() if n.startswith(prefix)]

    def sample_all(self) -> None:
        """One RSS sample of every running process."""
        for m in self.members.values():
            m.sample()

    def stop_all(self) -> None:
        """Stop everything: workers first (they flush their outbox), then API, cameras, broker."""
        order = sorted(self.members.values(), key=lambda m: (0 if m.name.startswith("worker") else
                                                              1 if m.name == "api" else
                                                              3 if m.name == "broker" else 2))
        for m in order:
            try:
                m.stop(timeout=10.0)
            except Exception as exc:  # noqa: BLE001 - stop the others whatever happens
                print(f"stopping {m.name}: {exc}", file=sys.stderr)


# -- readiness checks ------------------------------------------------------------------------------

def mqtt_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when an MQTT CONNECT gets a CONNACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-probe-{time.monotonic_ns()}")
    try:
        if c.connect(host, port, keepalive=10) != mqtt.MQTT_ERR_SUCCESS:
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c.loop(timeout=0.05)
            if c.is_connected():
                return True
        return False
    except OSError:
        return False
    finally:
        with contextlib.suppress(Exception):  # a probe
            c.disconnect()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URL we built
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_has_line(marker: str) -> Callable[[Managed], bool]:
    """A readiness check: the current incarnation's log has a line equal to ``marker``."""
    def check(m: Managed) -> bool:
        text = m.log_text(tail=20_000)
        last = text.rsplit(f"==== {m.name} start #{m.incarnation} ", 1)[-1]
        return any(line.strip() == marker for line in last.splitlines())
    return check


# -- the processes ---------------------------------------------------------------------------------

def mosquitto_conf(port: int, data_dir: Path, log_path: Path, max_queued: int | None = None) -> str:
    """The production config (deploy/mosquitto/mosquitto.conf, unlimited queues) on a private port and folder.

    ``max_queued`` replaces ``max_queued_messages`` (stock Mosquitto: 1000), to show what a finite queue loses.
    """
    lines = []
    for line in PRODUCTION_MOSQUITTO_CONF.read_text().splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if key == "listener":
            line = f"listener {port} 127.0.0.1"
        elif key == "persistence_location":
            line = f"persistence_location {data_dir}/"
        elif key == "max_queued_messages" and max_queued is not None:
            line = f"max_queued_messages {max_queued}"
        elif key in ("log_dest", "log_type", "include_dir"):
            continue  # include_dir: the deployment's conf.d (generated broker users, ACL), not part of a soak
        lines.append(line)
    if os.geteuid() == 0:
        lines.append("user root")  # otherwise it drops to `mosquitto`, which cannot write data_dir
    lines += [f"log_dest file {log_path}", "log_type error", "log_type warning", "log_type notice"]
    return "\n".join(lines) + "\n"


def broker(workdir: Path, port: int, max_queued: int | None = None) -> Managed:
    """Mosquitto with the production settings, persistence in ``workdir/mosquitto``."""
    data = workdir / "mosquitto"
    data.mkdir(parents=True, exist_ok=True)
    conf = data / "mosquitto.conf"
    conf.write_text(mosquitto_conf(port, data, data / "mosquitto.log", max_queued))
    return Managed("broker", [MOSQUITTO_BIN, "-c", str(conf)], workdir / "logs" / "broker.log",
                   ready=lambda m: mqtt_ready("127.0.0.1", port), ready_timeout=15.0)


def rtsp_camera(workdir: Path, camera_id: str, port: int, clip: Path) -> Managed:
    """scripts/rtsp_server.py serving ``clip`` (looped, no re-encoding) at rtsp://127.0.0.1:<port>/<camera_id>."""
    argv = [SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), "--host", "127.0.0.1", "--port", str(port),
            "--stream", f"{camera_id}={clip}"]
    return Managed(f"camera-{camera_id}", argv, workdir / "logs" / f"camera-{camera_id}.log",
                   ready=log_has_line("READY"), ready_timeout=30.0)


def gridwatch_argv(*args: str) -> list[str]:
    """The ``gridwatch`` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("gridwatch")
    return [str(exe), *args] if exe.is_file() else [sys.executable, "-m", "pipeline.cli", *args]


CHILD_ENV = {"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}


def api(workdir: Path, config: Path, port: int, admin_password: str) -> Managed:
    """``gridwatch api`` (ticket service and MQTT consumer); ready when /healthz answers 200.

    ``admin_password``: the first start creates the ``admin`` login with it (``GRIDWATCH_ADMIN_PASSWORD``).
    """
    return Managed("api", gridwatch_argv("api", "-c", str(config)), workdir / "logs" / "api.log",
                   env={**CHILD_ENV, "GRIDWATCH_ADMIN_PASSWORD": admin_password},
                   ready=lambda m: http_ok(f"http://127.0.0.1:{port}/healthz"), ready_timeout=90.0)


def worker(workdir: Path, index: int, config: Path, cameras: list[str]) -> Managed:
    """``gridwatch worker`` for ``cameras`` with the stable id ``soak-w<index>`` (its own outbox)."""
    argv = gridwatch_argv("worker", "-c", str(config), "--cameras", ",".join(cameras),
                          "--worker-id", f"soak-w{index}", "--status-every", "0")
    return Managed(f"worker-{index}", argv, workdir / "logs" / f"worker-{index}.log", env=CHILD_ENV)
