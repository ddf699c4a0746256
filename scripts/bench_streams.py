#!/usr/bin/env python3
"""Stream benchmark: N simulated 1080p25 H.264 RTSP cameras through gridwatch workers, and through Ultralytics.

What it does:

1. Makes the camera media once (cached in ``~/.cache/gridwatch-bench``): ``car-detection.mp4`` scaled to
   1920x1080, 25 fps, libx264 4 Mbps CBR-ish (``-b:v 4M -maxrate 4M -bufsize 8M``), a key frame every 2 s
   (``-g 50 -keyint_min 50 -sc_threshold 0 -bf 0``), ~30 s; and the same with a car held still for 20 s from
   27.6 s (``scripts/make_demo_media.py``'s ``write_held_clip``) for the alert-latency camera.
2. Serves N mounts (``cam000`` .. ) from ``scripts/rtsp_server.py`` processes (no re-encoding), sharded over
   ``--server-shards`` processes; their CPU is measured separately (it is not gridwatch's cost).
3. gridwatch: a private Mosquitto on a free port, a ``SiteConfig`` built in code (``decode: keyframes``, one
   ``no_parking`` zone per camera, the coco detector at ``--imgsz`` with ``threads=1``,
   ``worker.analysis_threads=2``), and a :class:`pipeline.worker.Worker` in a child process for
   ``--warmup`` + ``--duration`` seconds. Reported: worker CPU (cores), CPU per camera, analysed frames per
   camera per second against the key-frame rate (0.5/s), dropped frames, a CPU breakdown by thread (ingest =
   reader threads: RTSP receive + demux + packet ring + key-frame decode + BGR conversion; detect = time
   inside the detector; rules/other) and the alert latency of camera ``cam000`` (a subscriber on the
   private broker stamps the receive time).
4. Ultralytics: ``YOLO(model).predict(source="<N>.streams", stream=True, vid_stride=50, imgsz=...)`` in the
   Ultralytics venv (``scripts/bench_baseline_ultralytics.py``), on the same cameras.

Examples::

    python3 scripts/bench_streams.py --n 8 --duration 20                    # one gridwatch run
    python3 scripts/bench_streams.py --ramp 8,16,32,64,96 --duration 30     # find the max N
    python3 scripts/bench_streams.py --baseline-ramp 2,4,8 --duration 30    # Ultralytics only
    python3 scripts/bench_streams.py --n 64 --duration 60 --baseline-ramp 2,4,8,12 --json out.json
    python3 scripts/bench_streams.py --mix --n 100 --baseline-ramp 4 --imgsz 640   # realistic mix (bench_mix.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GRIDWATCH_SHARED", REPO.parent / "shared"))
CACHE = Path(os.environ.get("GRIDWATCH_BENCH_CACHE", Path.home() / ".cache" / "gridwatch-bench"))
SYSTEM_PYTHON = os.environ.get("GRIDWATCH_GST_PYTHON", "/usr/bin/python3")
ULTRA_PYTHON = os.environ.get("ULTRA_PYTHON", "/tmp/ultra-venv/bin/python")
MOSQUITTO_BIN = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

FPS = 25
GOP = 50  # frames: a key frame every 2 s
KEYFRAME_RATE = FPS / GOP  # 0.5 key frames per second
ENCODE_ARGS = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-maxrate", "4M", "-bufsize", "8M",
               "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart"]
SCALE = f"scale=1920:1080:flags=bicubic,fps={FPS}"
# Where the held car of car-detection.mp4 rests (same zone as tests/test_e2e_parking.py).
PARKING_ZONE = [[0.05, 0.70], [0.50, 0.70], [0.50, 1.00], [0.05, 1.00]]
LATENCY_CAMERA = "cam000"
DWELL_SECONDS = 8.0
TOPIC_PREFIX = "bench"


# -- media -------------------------------------------------------------------------------------------------------


def _ffmpeg(src: Path, dst: Path, extra: list[str] | None = None) -> Path:
    """Encode ``src`` to the benchmark's 1080p25 H.264 format at ``dst`` (atomic)."""
    tmp = dst.with_name(dst.stem + f".{os.getpid()}.part.mp4")
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *(extra or []), "-vf", SCALE,
           *ENCODE_ARGS, str(tmp)]
    subprocess.run(cmd, check=True, timeout=900)
    tmp.replace(dst)
    return dst


def make_media(cache: Path = CACHE) -> tuple[Path, Path]:
    """The looping camera clip and the "car comes to rest" clip, both 1080p25, GOP 2 s, ~4 Mbps (cached)."""
    src = SHARED / "clips" / "car-detection.mp4"
    if not src.is_file():
        raise SystemExit(f"missing {src} (set GRIDWATCH_SHARED)")
    cache.mkdir(parents=True, exist_ok=True)
    loop = cache / "car-1080p25-g50-4M.mp4"
    held = cache / "car-parks-1080p25-g50-4M.mp4"
    if not loop.is_file():
        print(f"encoding {loop} ...", flush=True)
        _ffmpeg(src, loop)
    if not held.is_file():
        print(f"encoding {held} ...", flush=True)
        sys.path.insert(0, str(REPO / "scripts"))
        from make_demo_media import write_held_clip

        small = cache / "car-parks-src.mp4"
        write_held_clip(src, small, hold_at=27.6, hold_seconds=20.0, gop_seconds=2.0)
        _ffmpeg(small, held)
    return loop, held


# -- processes ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range (see tests/fixtures/rtsp.py)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def proc_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class RtspServers:
    """``scripts/rtsp_server.py`` processes serving ``streams`` (name -> file), sharded round-robin."""

    streams: dict[str, Path]
    shards: int = 1
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)

    def start(self, timeout: float = 60.0) -> None:
        """Start every shard and wait for its READY line."""
        names = list(self.streams)
        for k in range(self.shards):
            part = names[k::self.shards]
            if not part:
                continue
            port = free_port()
            cmd = [SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), "--port", str(port)]
            for n in part:
                cmd += ["--stream", f"{n}={self.streams[n]}"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self.procs.append(proc)
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            for line in proc.stdout:
                if line.strip() == "READY":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("rtsp_server.py did not become ready")
            else:
                raise RuntimeError(f"rtsp_server.py exited with {proc.wait()}")
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()
            self.urls.update({n: f"rtsp://127.0.0.1:{port}/{n}" for n in part})

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by all shards."""
        return sum(proc_cpu_seconds(p.pid) for p in self.procs if p.poll() is None)

    def stop(self) -> None:
        """Terminate every shard."""
        for p in self.procs:
            _terminate(p)
        self.procs.clear()


def _drain(proc: subprocess.Popen[str]) -> None:
    """Read a child's output to the end so its pipe never fills (lines are dropped)."""
    assert proc.stdout is not None
    for _ in proc.stdout:
        pass


def _terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    """A private Mosquitto on a free port (never the system one on 1883); yields the port."""
    import paho.mqtt.client as mqtt

    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n"
                    f"log_dest file {workdir / 'mosquitto.log'}\n")
    proc = subprocess.Popen([MOSQUITTO_BIN, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            try:
                c.connect("127.0.0.1", port)
                c.disconnect()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        _terminate(proc)


class AlertSubscriber:
    """Subscribes to every alert on the private broker and stamps the wall-clock receive time."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}")
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (time.time(), m.topic, json.loads(m.payload)))
        self.client.on_connect = lambda c, *_: c.subscribe(f"{TOPIC_PREFIX}/alerts/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect."""
        self.client.loop_stop()
        self.client.disconnect()


# -- gridwatch worker (child process) ----------------------------------------------------------------------------


def site_spec(urls: dict[str, str], imgsz: int, mqtt_port: int, workdir: Path, analysis_threads: int = 2) -> dict:
    """The SiteConfig (as a dict) of the benchmark: one cell, N key-frame cameras with one no-parking zone each."""
    grid = [{"code": "T1", "name": "Town", "children": [{"code": "D1", "name": "District", "children": [
        {"code": "C1", "name": "Community", "children": [{"code": "G1", "name": "Cell"}]}]}]}]
    cameras = [{"id": name, "url": url, "grid": "G1", "decode": "keyframes",
                "zones": [{"id": "np", "kind": "no_parking", "polygon": PARKING_ZONE}]}
               for name, url in urls.items()]
    return {
        "grid": grid, "cameras": cameras,
        "hazards": {"parking": {"dwell_seconds": DWELL_SECONDS, "clear_seconds": 45,
                                "update_interval_seconds": 60}},
        "detectors": {"coco": {"model": str(SHARED / "models" / "yolo11n-coco.onnx"), "input_size": imgsz,
                               "threads": 1}},
        "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "topic_prefix": TOPIC_PREFIX, "shared_group": None},
        "api": {"evidence_dir": str(workdir / "evidence"), "database_url": f"sqlite:///{workdir / 'db.sqlite'}"},
        "worker": {"outbox_path": str(workdir / "outbox.db"), "analysis_threads": analysis_threads,
                   "health_interval_seconds": 10},
    }


_DETECT_CPU: dict[int, float] = {}


def _instrument_detector() -> None:
    """Accumulate per-thread CPU spent inside YoloDetector (benchmark-only monkeypatch; pipeline is untouched)."""
    from pipeline.detect import yolo

    for name in ("detect_batch", "detect_regions"):
        orig = getattr(yolo.YoloDetector, name)

        def wrapped(self: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _orig(self, *a, **kw)
            finally:
                tid = threading.get_native_id()
                _DETECT_CPU[tid] = _DETECT_CPU.get(tid, 0.0) + time.thread_time() - t0

        setattr(yolo.YoloDetector, name, wrapped)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process split by thread role (from /proc/self/task/<tid>/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    roles = {t.native_id: ("ingest" if t.name.startswith("reader-")
                           else "analysis" if t.name.startswith("gridwatch-analysis") else "other")
             for t in threading.enumerate() if t.native_id is not None}
    out = {"ingest": 0.0, "analysis": 0.0, "other": 0.0}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[roles.get(int(tid), "other")] += (int(fields[11]) + int(fields[12])) / tick
    out["detect"] = sum(_DETECT_CPU.values())
    out["total"] = sum(os.times()[:2])
    return out


def _snapshot(worker: Any) -> dict[str, Any]:
    return {"t": time.monotonic(), "cpu": _thread_cpu(),
            "health": {h["camera_id"]: h for h in worker.camera_health()}}


def worker_child(spec_path: Path) -> int:
    """Child-process entry: run a Worker for warmup + duration, print one JSON line of counters."""
    import logging

    from pipeline.config import SiteConfig
    from pipeline.worker import Worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    spec = json.loads(spec_path.read_text())
    _instrument_detector()
    site = SiteConfig.model_validate(spec["site"])
    worker = Worker(site, worker_id="bench")
    t_start = time.monotonic()
    worker.start()
    print("STARTED", flush=True)
    time.sleep(spec["warmup"])
    s0 = _snapshot(worker)
    print("WINDOW_START", flush=True)
    time.sleep(spec["duration"])
    s1 = _snapshot(worker)
    print("WINDOW_END", flush=True)
    worker.stop()
    print("RESULT " + json.dumps({"s0": s0, "s1": s1, "startup_s": s0["t"] - t_start - spec["warmup"]},
                                 default=str), flush=True)
    return 0


def run_gridwatch(n: int, urls: dict[str, str], servers: RtspServers, imgsz: int, warmup: float, duration: float,
                  workdir: Path, analysis_threads: int = 2) -> dict[str, Any]:
    """One gridwatch run on the first ``n`` cameras; returns the summary row (see :func:`summarise_worker`)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"gw-{n}-", dir=workdir))
    cams = dict(list(urls.items())[:n])
    with mosquitto(run_dir) as port:
        sub = AlertSubscriber(port)
        spec = {"site": site_spec(cams, imgsz, port, run_dir, analysis_threads), "warmup": warmup,
                "duration": duration}
        (run_dir / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker-child",
                                 str(run_dir / "spec.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=run_dir)
        errs: list[str] = []
        threading.Thread(target=lambda: errs.extend(proc.stderr or []), daemon=True).start()
        marks: dict[str, float] = {}
        result: dict[str, Any] | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line in ("WINDOW_START", "WINDOW_END"):
                marks[line] = servers.cpu_seconds()
                marks[line + "_wall"] = time.monotonic()
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        proc.wait(60)
        time.sleep(1.0)  # let the last alerts arrive
        sub.close()
    if result is None:
        raise RuntimeError(f"worker child failed (rc={proc.returncode}):\n{''.join(errs)[-3000:]}")
    server_cores = ((marks["WINDOW_END"] - marks["WINDOW_START"])
                    / (marks["WINDOW_END_wall"] - marks["WINDOW_START_wall"]))
    row = summarise_worker(result["s0"], result["s1"], n)
    row.update(server_cores=server_cores, imgsz=imgsz, startup_s=result["startup_s"],
               alerts=alert_latencies(sub.received), log_tail="".join(errs)[-1500:])
    return row


def summarise_worker(s0: dict[str, Any], s1: dict[str, Any], n: int) -> dict[str, Any]:
    """Turn two worker snapshots into the benchmark's numbers."""
    dt = s1["t"] - s0["t"]
    cpu = {k: (s1["cpu"][k] - s0["cpu"][k]) / dt for k in s1["cpu"]}

    def delta(key: str) -> list[int]:
        return [int(s1["health"][c][key]) - int(s0["health"].get(c, {}).get(key, 0)) for c in s1["health"]]

    decoded, analysed, dropped = delta("frames_decoded"), delta("frames_analysed"), delta("frames_dropped")
    expected = KEYFRAME_RATE * dt
    # The served file is 30.16 s long and its loop restarts at a key frame, so a camera sends ~0.53 key
    # frames/s, not 0.50: judge "every key frame analysed" against the key frames actually decoded.
    per_cam_ratio = [a / max(1, d) for a, d in zip(analysed, decoded, strict=True)]
    states = [h["state"] for h in s1["health"].values()]
    return {
        "n": n, "window_s": round(dt, 1),
        "worker_cores": cpu["total"], "cpu_ms_per_cam_s": 1000 * cpu["total"] / n,
        "ingest_cores": cpu["ingest"], "detect_cores": cpu["detect"],
        "rules_cores": cpu["analysis"] - cpu["detect"], "other_cores": cpu["other"],
        "keyframes_per_cam_s": sum(decoded) / n / dt, "analysed_per_cam_s": sum(analysed) / n / dt,
        "analysed_of_decoded": sum(analysed) / max(1, sum(decoded)),
        "analysed_of_expected": sum(analysed) / (n * expected),
        "min_cam_ratio": min(per_cam_ratio), "dropped": sum(dropped),
        "streaming": states.count("streaming"),
        "reconnects": sum(int(h["reconnects"]) for h in s1["health"].values()),
        "errors": sorted({str(h["last_error"]) for h in s1["health"].values() if h["last_error"]})[:3],
    }


def alert_latencies(received: list[tuple[float, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Latencies of ``opened`` alerts from the latency camera.

    ``frame_to_alert_s``: from the wall-clock arrival of the key frame that met the dwell condition
    (the alert's ``ts``) to the subscriber receiving the alert. ``dwell_to_alert_s``: from the moment the
    dwell condition became true on the sampled timeline (``started_at + dwell``) to the receipt; it adds
    the wait for the next analysed key frame (at most one GOP, 2 s).
    """
    from datetime import datetime

    out = []
    for recv, topic, p in received:
        if p.get("event") != "opened":
            continue
        ts = datetime.fromisoformat(p["ts"].replace("Z", "+00:00")).timestamp()
        started = datetime.fromisoformat(p["started_at"].replace("Z", "+00:00")).timestamp()
        out.append({"camera": p["camera"]["id"], "topic": topic,
                    "frame_to_alert_s": round(recv - ts, 3),
                    "dwell_to_alert_s": round(recv - (started + DWELL_SECONDS), 3),
                    "dwell_in_alert_s": p.get("details", {}).get("dwell_seconds")})
    return out


# -- Ultralytics baseline ----------------------------------------------------------------------------------------


def run_ultralytics(n: int, urls: dict[str, str], servers: RtspServers, imgsz: int, warmup: float,
                    duration: float, workdir: Path, model: Path) -> dict[str, Any]:
    """One Ultralytics multi-stream predict run on the first ``n`` cameras (child process in the ultra venv)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"ul-{n}-", dir=workdir))
    streams = run_dir / f"cams{n}.streams"
    streams.write_text("\n".join(list(urls.values())[:n]) + "\n")
    out = run_dir / "result.json"
    cmd = [ULTRA_PYTHON, str(REPO / "scripts" / "bench_baseline_ultralytics.py"), "--streams", str(streams),
           "--model", str(model), "--imgsz", str(imgsz), "--vid-stride", str(GOP), "--warmup", str(warmup),
           "--duration", str(duration), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=run_dir)
    marks: dict[str, float] = {}
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        s = line.strip()
        if s in ("WINDOW_START", "WINDOW_END"):
            marks[s] = servers.cpu_seconds()
            marks[s + "_wall"] = time.monotonic()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.is_file():
        return {"n": n, "error": "".join(lines)[-2000:]}
    row: dict[str, Any] = json.loads(out.read_text())
    if "WINDOW_END" in marks:
        row["server_cores"] = ((marks["WINDOW_END"] - marks["WINDOW_START"])
                               / (marks["WINDOW_END_wall"] - marks["WINDOW_START_wall"]))
    row["n"] = n
    return row


# -- reporting ---------------------------------------------------------------------------------------------------


def keeps_up(row: dict[str, Any], cores: int) -> bool:
    """gridwatch criterion: >= 95 % of key frames analysed, every camera streaming, worker CPU < cores."""
    return (row["analysed_of_decoded"] >= 0.95 and row["streaming"] == row["n"]
            and row["worker_cores"] < cores)


def print_gridwatch(rows: list[dict[str, Any]], cores: int) -> None:
    """Print the gridwatch table."""
    hdr = (f"{'N':>4} {'win s':>5} {'worker cores':>12} {'ms/s per cam':>12} {'ingest':>6} {'detect':>6} "
           f"{'rules':>6} {'other':>6} {'kf/cam/s':>8} {'anl/cam/s':>9} {'anl/kf':>6} {'min cam':>7} "
           f"{'dropped':>7} {'stream':>6} {'rtsp srv':>8} {'ok':>3} {'load':>5}")
    print("\ngridwatch (keyframes decode, imgsz={}, analysis_threads=2, detector threads=1)".format(
        rows[0]["imgsz"] if rows else "?"))
    print(hdr)
    for r in rows:
        print(f"{r['n']:>4} {r['window_s']:>5.0f} {r['worker_cores']:>12.2f} {r['cpu_ms_per_cam_s']:>12.1f} "
              f"{r['ingest_cores']:>6.2f} {r['detect_cores']:>6.2f} {r['rules_cores']:>6.2f} "
              f"{r['other_cores']:>6.2f} {r['keyframes_per_cam_s']:>8.3f} {r['analysed_per_cam_s']:>9.3f} "
              f"{r['analysed_of_decoded']:>6.2f} {r['min_cam_ratio']:>7.2f} {r['dropped']:>7} "
              f"{r['streaming']:>6} {r['server_cores']:>8.2f} {'yes' if keeps_up(r, cores) else 'no':>3} "
              f"{r.get('load_1m_before', float('nan')):>5.2f}")
        for a in r.get("alerts", []):
            if a["camera"] == LATENCY_CAMERA:
                print(f"      alert latency {a['camera']}: key frame -> subscriber {a['frame_to_alert_s']:.3f} s, "
                      f"dwell met -> subscriber {a['dwell_to_alert_s']:.3f} s")


def ultra_keeps_up(row: dict[str, Any]) -> bool:
    """Ultralytics criterion: every stream read at >= 95 % of 25 fps and >= 95 % of 0.5 analysed frames/s."""
    return (not row.get("error") and row["grab_fps_min"] >= 0.95 * FPS
            and row["analysed_per_stream_s"] >= 0.95 * KEYFRAME_RATE)


def print_ultralytics(rows: list[dict[str, Any]]) -> None:
    """Print the Ultralytics table."""
    print(f"\nUltralytics multi-stream predict (vid_stride={GOP})")
    print(f"{'N':>4} {'win s':>5} {'cores':>6} {'ms/s per cam':>12} {'grab fps mean':>13} {'grab fps min':>12} "
          f"{'anl/stream/s':>12} {'batches/s':>9} {'rtsp srv':>8} {'ok':>3} {'load':>5}")
    for r in rows:
        if r.get("error"):
            print(f"{r['n']:>4} error: {r['error'][-300:]}")
            continue
        print(f"{r['n']:>4} {r['window_s']:>5.0f} {r['cores']:>6.2f} {1000 * r['cores'] / r['n']:>12.1f} "
              f"{r['grab_fps_mean']:>13.1f} {r['grab_fps_min']:>12.1f} {r['analysed_per_stream_s']:>12.3f} "
              f"{r['batches_per_s']:>9.3f} {r.get('server_cores', float('nan')):>8.2f} "
              f"{'yes' if ultra_keeps_up(r) else 'no':>3} {r.get('load_1m_before', float('nan')):>5.2f}")


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Poll /proc/loadavg until the 1-minute load is below ``max_load`` (or ``max_wait`` passed)."""
    deadline = time.monotonic() + max_wait
    while True:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load < max_load or time.monotonic() > deadline:
            return load
        print(f"load {load:.2f} >= {max_load}; waiting", flush=True)
        time.sleep(15)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the requested benchmarks and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, action="append", default=[], help="cameras for a gridwatch run (repeatable)")
    ap.add_argument("--ramp", default="", help="comma-separated N values for gridwatch, e.g. 8,16,32,64,96")
    ap.add_argument("--baseline-ramp", default="", help="comma-separated N values for Ultralytics, e.g. 2,4,8")
    ap.add_argument("--imgsz", type=int, default=320, help="detector input size, both sides (default 320)")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before the measured window")
    ap.add_argument("--duration", type=float, default=60.0, help="measured window in seconds")
    ap.add_argument("--baseline-duration", type=float, default=None, help="window of Ultralytics runs")
    ap.add_argument("--server-shards", type=int, default=2, help="RTSP server processes (default 2)")
    ap.add_argument("--model", type=Path, default=SHARED / "models" / "yolo11n-coco.onnx",
                    help="model for the Ultralytics side (gridwatch always uses the ONNX file)")
    ap.add_argument("--wait-load", type=float, default=0.0,
                    help="before each run wait (up to 10 min) for the 1-min load to fall below this; 0 = no wait")
    ap.add_argument("--json", type=Path, help="also write all rows to this JSON file")
    ap.add_argument("--mix", action="store_true",
                    help="the realistic mix (scripts/bench_mix.py): demo.yaml's hazards, still/busy scenes, the "
                    "motion gate off and on at each N (default 100), then Ultralytics (--baseline-ramp, default 4)")
    ap.add_argument("--busy-share", type=float, default=0.2, help="--mix: share of cameras with a busy scene")
    ap.add_argument("--worker-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker_child:
        return worker_child(args.worker_child)
    if args.mix:
        import bench_mix

        mixed = bench_mix.run(args)
        if args.json:
            args.json.write_text(json.dumps(mixed, indent=2, default=str))
        return 0

    grid_ns = list(args.n) + [int(x) for x in args.ramp.split(",") if x]
    base_ns = [int(x) for x in args.baseline_ramp.split(",") if x]
    if not grid_ns and not base_ns:
        grid_ns = [8]
    cores = os.cpu_count() or 1
    loop, held = make_media()
    max_n = max(grid_ns + base_ns)
    streams = {f"cam{i:03d}": (held if i == 0 else loop) for i in range(max_n)}
    workdir = Path(tempfile.mkdtemp(prefix="gridwatch-bench-"))
    results: dict[str, Any] = {"cores": cores, "imgsz": args.imgsz, "gridwatch": [], "ultralytics": []}
    try:
        for n in grid_ns:
            # A fresh server per run, so every camera's loop (and cam000's parked car) starts with the run.
            servers = RtspServers({k: v for k, v in list(streams.items())[:n]}, args.server_shards)
            servers.start()
            try:
                if args.wait_load:
                    results.setdefault("load_before", {})[f"gridwatch-{n}"] = wait_for_quiet(args.wait_load, 600)
                load0 = os.getloadavg()[0]
                row = run_gridwatch(n, servers.urls, servers, args.imgsz, args.warmup, args.duration, workdir)
                row.update(load_1m_before=load0, load_1m_after=os.getloadavg()[0])
            finally:
                servers.stop()
            results["gridwatch"].append(row)
            print_gridwatch([row], cores)
        for n in base_ns:
            servers = RtspServers({k: v for k, v in list(streams.items())[:n]}, args.server_shards)
            servers.start()
            try:
                if args.wait_load:
                    results.setdefault("load_before", {})[f"ultralytics-{n}"] = wait_for_quiet(args.wait_load, 600)
                load0 = os.getloadavg()[0]
                row = run_ultralytics(n, servers.urls, servers, args.imgsz, args.warmup,
                                      args.baseline_duration or args.duration, workdir, args.model)
                row.update(load_1m_before=load0, load_1m_after=os.getloadavg()[0])
            finally:
                servers.stop()
            results["ultralytics"].append(row)
            print_ultralytics([row])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if results["gridwatch"]:
        print_gridwatch(results["gridwatch"], cores)
    if results["ultralytics"]:
        print_ultralytics(results["ultralytics"])
    summary = compare(results, cores)
    results["summary"] = summary
    for k, v in summary.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def compare(results: dict[str, Any], cores: int) -> dict[str, Any]:
    """Cameras sustained per core on each side and their ratio.

    Per core = the largest N that keeps up divided by the cores the worker used at that N (for gridwatch, the
    machine's cores are the limit, so the "per machine core" figure N / cores is reported too).
    """
    out: dict[str, Any] = {}
    ok = [r for r in results["gridwatch"] if keeps_up(r, cores)]
    if ok:
        best = max(ok, key=lambda r: r["n"])
        out["gridwatch_max_n"] = best["n"]
        out["gridwatch_cams_per_core_used"] = round(best["n"] / best["worker_cores"], 1)
        out["gridwatch_cams_per_machine_core"] = round(best["n"] / cores, 1)
    uok = [r for r in results["ultralytics"] if ultra_keeps_up(r)]
    if uok:
        best_u = max(uok, key=lambda r: r["n"])
        out["ultralytics_max_n"] = best_u["n"]
        out["ultralytics_cams_per_core_used"] = round(best_u["n"] / best_u["cores"], 2)
    if "gridwatch_cams_per_core_used" in out and "ultralytics_cams_per_core_used" in out:
        out["ratio_per_core_used"] = round(out["gridwatch_cams_per_core_used"]
                                           / out["ultralytics_cams_per_core_used"], 1)
    return out


if __name__ == "__main__":
    sys.exit(main())
