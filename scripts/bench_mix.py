#!/usr/bin/env python3
"""The realistic mix of the stream benchmark (``scripts/bench_streams.py --mix``): every hazard on as
configs/demo.yaml configures them, mostly still scenes and some busy ones, key-frame decoding, with the
motion gate off and on, and the Ultralytics baseline at the same analysis rate, in one run.

Cameras (half of each kind, like demo.yaml's two cameras):

* ``lot``: demo ``lot-1``: one ``no_parking`` zone (parking, the ``vehicles`` detector at 640).
* ``corridor``: demo ``corridor-1``: whole-frame fire (``fire`` at 416, never gated), a ``corridor`` zone
  (clutter: the static-object model, ``clutter`` at 416 and COCO at 640 for people) and a ``wall`` zone
  (posters: OCR).

Scenes: ``--busy-share`` of each kind (default 0.2) plays a busy clip (``car-detection.mp4``: cars drive
through; ``one-by-one-person-detection.mp4``: people walk the corridor); the rest play still clips (one real
frame of the same clip held with light sensor noise by ``scripts/make_demo_media.py``'s ``write_held_clip``:
the parked car at 27.6 s, the empty corridor). All at the clips' own 768x432 (a CCTV sub-stream), re-encoded
to 25 fps, ~1 Mbps, a key frame every 2 s, no B-frames; served over RTSP like the main benchmark.

Per run it reports cameras, worker cores, CPU per camera by stage (decode = reader threads; detect = inside
the YOLO detectors; OCR = inside the OCR engine; rules = the rest of the analysis threads), analysed / key
frames, the gated share of analysed frames, and RSS growth per camera (worker RSS at the end of the window
minus its RSS with the site's detectors loaded and no camera started, over N).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import bench_streams as bs  # noqa: E402

MIX_SCALE = "scale=768:432:flags=bicubic,fps=25"
MIX_ENCODE = ["-an", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "1M", "-maxrate", "1M", "-bufsize", "2M",
              "-g", str(bs.GOP), "-keyint_min", str(bs.GOP), "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p",
              "-movflags", "+faststart"]
STILL_SECONDS = 60.0


def _encode(src: Path, dst: Path, extra: list[str] | None = None) -> Path:
    tmp = dst.with_name(dst.stem + f".{os.getpid()}.part.mp4")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *(extra or []), "-vf",
                    MIX_SCALE, *MIX_ENCODE, str(tmp)], check=True, timeout=900)
    tmp.replace(dst)
    return dst


def make_mix_media(cache: Path = bs.CACHE) -> dict[str, Path]:
    """``{lot-still, lot-busy, corridor-still, corridor-busy}`` -> cached 768x432 25 fps GOP-2 s clips."""
    from make_demo_media import write_held_clip

    cache.mkdir(parents=True, exist_ok=True)
    car = bs.SHARED / "clips" / "car-detection.mp4"
    corridor = bs.SHARED / "clips" / "one-by-one-person-detection.mp4"
    out = {"lot-busy": cache / "mix-lot-busy.mp4", "lot-still": cache / "mix-lot-still.mp4",
           "corridor-busy": cache / "mix-corridor-busy.mp4", "corridor-still": cache / "mix-corridor-still.mp4"}
    if not out["lot-busy"].is_file():
        _encode(car, out["lot-busy"])
    if not out["corridor-busy"].is_file():
        _encode(corridor, out["corridor-busy"], ["-t", "60"])
    for key, src, at in (("lot-still", car, 27.6), ("corridor-still", corridor, 0.0)):
        if not out[key].is_file():
            held = cache / f"mix-{key}-src.mp4"
            write_held_clip(src, held, hold_at=at, hold_seconds=STILL_SECONDS + 1, gop_seconds=2.0, start=at)
            _encode(held, out[key], ["-t", str(STILL_SECONDS)])
    return out


def camera_plan(n: int, busy_share: float) -> list[tuple[str, str]]:
    """(camera id, media key) for ``n`` cameras: lot / corridor alternating, ``busy_share`` of each busy."""
    every = max(1, round(1 / busy_share)) if busy_share > 0 else 10**9
    out = []
    for i in range(n):
        kind = "lot" if i % 2 == 0 else "corridor"
        out.append((f"{kind}{i:03d}", f"{kind}-{'busy' if (i // 2) % every == 0 else 'still'}"))
    return out


def mix_site_spec(urls: dict[str, str], mqtt_port: int, workdir: Path, gate: bool) -> dict[str, Any]:
    """The site: demo.yaml's hazards and detectors, its two camera layouts repeated over ``urls``."""
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    layouts = {c["id"].split("-")[0]: c for c in demo["cameras"]}  # lot, corridor
    cameras = []
    for cam_id, url in urls.items():
        layout = layouts["lot" if cam_id.startswith("lot") else "corridor"]
        cameras.append({**{k: v for k, v in layout.items() if k not in ("name", "url", "grid")},
                        "id": cam_id, "url": url, "grid": "G001"})
    return {
        "grid": demo["grid"], "cameras": cameras, "hazards": demo["hazards"], "detectors": demo["detectors"],
        "mqtt": {"url": f"mqtt://127.0.0.1:{mqtt_port}", "topic_prefix": bs.TOPIC_PREFIX, "shared_group": None},
        "api": {"evidence_dir": str(workdir / "evidence"), "database_url": f"sqlite:///{workdir / 'db.sqlite'}"},
        "worker": {"outbox_path": str(workdir / "outbox.db"), "analysis_threads": 2, "health_interval_seconds": 10,
                   "motion_gate": {"enabled": gate}},
    }


# -- worker child --------------------------------------------------------------------------------------------------

_OCR_CPU: dict[int, float] = {}


def _instrument_ocr() -> None:
    """Accumulate per-thread CPU inside TextDetector (benchmark-only monkeypatch)."""
    from pipeline.detect import ocr

    for name in ("detect_text", "detect_boxes_only"):
        orig = getattr(ocr.TextDetector, name)

        def wrapped(self: Any, *a: Any, _orig: Any = orig, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _orig(self, *a, **kw)
            finally:
                tid = threading.get_native_id()
                _OCR_CPU[tid] = _OCR_CPU.get(tid, 0.0) + time.thread_time() - t0

        setattr(ocr.TextDetector, name, wrapped)


_MODEL_CPU: dict[str, list[float]] = {}
"""model file stem -> [CPU seconds, calls, images] (all threads)."""


def _instrument_models() -> None:
    """Accumulate CPU, calls and images per model inside YoloDetector (on top of bench_streams' per-thread sum)."""
    from pipeline.detect import yolo

    for name in ("detect_batch", "detect_regions"):
        orig = getattr(yolo.YoloDetector, name)

        def wrapped(self: Any, *a: Any, _orig: Any = orig, _name: str = name, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return _orig(self, *a, **kw)
            finally:
                acc = _MODEL_CPU.setdefault(Path(self.model_path).stem, [0.0, 0, 0])
                acc[0] += time.thread_time() - t0
                acc[1] += 1
                acc[2] += len(a[0]) if _name == "detect_batch" and a else 1

        setattr(yolo.YoloDetector, name, wrapped)


def rss_mb() -> float:
    """This process's resident set size in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmRSS:")[1].split()[0]) / 1024


def _snap(worker: Any) -> dict[str, Any]:
    cpu = bs._thread_cpu()
    cpu["ocr"] = sum(_OCR_CPU.values())
    return {"t": time.monotonic(), "cpu": cpu, "rss_mb": rss_mb(),
            "models": {k: list(v) for k, v in _MODEL_CPU.items()},
            "health": {h["camera_id"]: h for h in worker.camera_health()}}


def mix_worker_child(spec_path: Path) -> int:
    """Child entry: load the detectors, note RSS, run the worker for warmup + duration, print one JSON line."""
    import logging

    from pipeline.config import SiteConfig
    from pipeline.worker import Worker

    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    spec = json.loads(spec_path.read_text())
    bs._instrument_detector()
    _instrument_models()
    _instrument_ocr()
    site = SiteConfig.model_validate(spec["site"])
    site.base_dir = str(REPO / "configs")  # detector names resolve through models/manifest.yaml
    worker = Worker(site, worker_id="bench-mix")
    for name in site.detectors:
        worker.registry.get(name)
    rss_base = rss_mb()
    worker.start()
    print("STARTED", flush=True)
    time.sleep(spec["warmup"])
    s0 = _snap(worker)
    print("WINDOW_START", flush=True)
    time.sleep(spec["duration"])
    s1 = _snap(worker)
    print("WINDOW_END", flush=True)
    worker.stop()
    print("RESULT " + json.dumps({"s0": s0, "s1": s1, "rss_base_mb": rss_base}, default=str), flush=True)
    return 0


def run_mix(n: int, urls: dict[str, str], servers: bs.RtspServers, gate: bool, warmup: float, duration: float,
            workdir: Path) -> dict[str, Any]:
    """One worker run on the mix; returns its summary row."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"mix-{n}-{'gate' if gate else 'nogate'}-", dir=workdir))
    with bs.mosquitto(run_dir) as port:
        spec = {"site": mix_site_spec(urls, port, run_dir, gate), "warmup": warmup, "duration": duration}
        (run_dir / "spec.json").write_text(json.dumps(spec))
        load0 = os.getloadavg()[0]
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(run_dir / "spec.json")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=run_dir)
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
    if result is None:
        raise RuntimeError(f"mix worker failed (rc={proc.returncode}):\n{''.join(errs)[-3000:]}")
    s0, s1 = result["s0"], result["s1"]
    row = bs.summarise_worker(s0, s1, n)
    dt = s1["t"] - s0["t"]
    ocr = (s1["cpu"]["ocr"] - s0["cpu"]["ocr"]) / dt

    def total(key: str) -> int:
        return sum(int(h.get(key) or 0) - int(s0["health"].get(c, {}).get(key) or 0) for c, h in s1["health"].items())

    gated, detected = total("frames_gated"), total("frames_detected")
    models = {k: {"cores": round((v[0] - s0["models"].get(k, [0, 0, 0])[0]) / dt, 3),
                  "images_per_s": round((v[2] - s0["models"].get(k, [0, 0, 0])[2]) / dt, 2)}
              for k, v in s1["models"].items()}
    # Cost at the full key-frame rate, from CPU per analysed frame: when the machine is shared (or the worker
    # falls behind) fewer frames are analysed than arrive, and cores / N alone would flatter the worker.
    analysed_s = row["analysed_per_cam_s"] * n
    per_frame_ms = 1000 * (row["detect_cores"] + row["rules_cores"]) / max(1e-9, analysed_s)
    full_ms = 1000 * (row["ingest_cores"] + row["other_cores"]) / n + per_frame_ms * row["keyframes_per_cam_s"]
    row.update(analysis_ms_per_frame=per_frame_ms, full_rate_ms_per_cam=full_ms,
               projected_cams_per_core=1000 / full_ms)
    row.update(gate=gate, ocr_cores=ocr, rules_cores=row["rules_cores"] - ocr, load_1m_before=load0,
               load_1m_after=os.getloadavg()[0], gated_share=gated / max(1, gated + detected),
               models=models, rss_base_mb=result["rss_base_mb"], rss_end_mb=s1["rss_mb"],
               mb_per_camera=(s1["rss_mb"] - result["rss_base_mb"]) / n,
               server_cores=(marks["WINDOW_END"] - marks["WINDOW_START"])
               / (marks["WINDOW_END_wall"] - marks["WINDOW_START_wall"]),
               log_tail="".join(errs)[-1500:])
    return row


def print_mix(rows: list[dict[str, Any]], cores: int) -> None:
    """Print the realistic-mix table (CPU per camera by stage in ms of CPU per second per camera)."""
    print("\nrealistic mix (demo.yaml hazards, keyframes, 768x432 25 fps GOP 2 s; ms = CPU ms/s per camera)")
    print(f"{'N':>4} {'gate':>4} {'cores':>5} {'ms/s/cam':>8} {'decode':>6} {'detect':>6} {'ocr':>6} {'rules':>6} "
          f"{'other':>6} {'anl/kf':>6} {'min cam':>7} {'gated':>5} {'MB/cam':>6} {'rtsp':>5} {'ok':>3} {'load':>5}")
    for r in rows:
        per = {k: 1000 * r[f"{k}_cores"] / r["n"] for k in ("ingest", "detect", "ocr", "rules", "other")}
        print(f"{r['n']:>4} {'on' if r['gate'] else 'off':>4} {r['worker_cores']:>5.2f} {r['cpu_ms_per_cam_s']:>8.1f} "
              f"{per['ingest']:>6.1f} {per['detect']:>6.1f} {per['ocr']:>6.1f} {per['rules']:>6.1f} "
              f"{per['other']:>6.1f} {r['analysed_of_decoded']:>6.2f} {r['min_cam_ratio']:>7.2f} "
              f"{r['gated_share']:>5.2f} {r['mb_per_camera']:>6.1f} {r['server_cores']:>5.2f} "
              f"{'yes' if bs.keeps_up(r, cores) else 'no':>3} {r['load_1m_before']:>5.2f}")
        print(f"      analysis {r['analysis_ms_per_frame']:.1f} ms CPU per analysed frame; at the full key-frame rate "
              f"{r['full_rate_ms_per_cam']:.1f} ms/s per camera = {r['projected_cams_per_core']:.0f} cameras per core")
        print("      detect by model: " + ", ".join(f"{k} {v['cores']:.2f} cores / {v['images_per_s']:.1f} img/s"
                                                     for k, v in sorted(r.get("models", {}).items())))


def run(args: Any) -> dict[str, Any]:
    """The whole realistic-mix run (``bench_streams.py --mix``): gate off and on at each N, then Ultralytics."""
    if "ULTRA_PYTHON" not in os.environ:
        bs.ULTRA_PYTHON = sys.executable  # ultralytics + torch are in the project venv
    cores = os.cpu_count() or 1
    media = make_mix_media()
    ns = [int(x) for x in (args.ramp.split(",") if args.ramp else [])] + list(args.n) or [100]
    workdir = Path(tempfile.mkdtemp(prefix="gridwatch-mix-"))
    out: dict[str, Any] = {"cores": cores, "load_start": os.getloadavg(), "mix": [], "ultralytics": []}
    for n in ns:
        plan = camera_plan(n, args.busy_share)
        for gate in (False, True):
            servers = bs.RtspServers({cam: media[key] for cam, key in plan}, args.server_shards)
            servers.start()
            try:
                row = run_mix(n, servers.urls, servers, gate, args.warmup, args.duration, workdir)
            finally:
                servers.stop()
            row["busy_share"] = args.busy_share
            out["mix"].append(row)
            print_mix([row], cores)
    base_ns = [int(x) for x in args.baseline_ramp.split(",") if x] or [4]
    for n in base_ns:
        plan = camera_plan(n, args.busy_share)
        servers = bs.RtspServers({cam: media[key] for cam, key in plan}, args.server_shards)
        servers.start()
        try:
            load0 = os.getloadavg()[0]
            row = bs.run_ultralytics(n, servers.urls, servers, args.imgsz, args.warmup,
                                     args.baseline_duration or args.duration, workdir, args.model)
            row.update(load_1m_before=load0)
        finally:
            servers.stop()
        out["ultralytics"].append(row)
        bs.print_ultralytics([row])
    print_mix(out["mix"], cores)
    if out["ultralytics"]:
        bs.print_ultralytics(out["ultralytics"])
    out["summary"] = summary(out, cores)
    for k, v in out["summary"].items():
        print(f"{k}: {v}")
    print(f"load average at start {out['load_start']}, at end {os.getloadavg()}")
    return out


def summary(out: dict[str, Any], cores: int) -> dict[str, Any]:
    """Cameras per core (N / worker cores used) with the gate off and on, and their ratio to Ultralytics'."""
    s: dict[str, Any] = {}
    for r in out["mix"]:
        key = "gate_on" if r["gate"] else "gate_off"
        s[f"{key}_n{r['n']}"] = {"keeps_up": bs.keeps_up(r, cores), "cams_per_core_used":
                                 round(r["n"] / r["worker_cores"], 1), "mb_per_camera": round(r["mb_per_camera"], 1),
                                 "gated_share": round(r["gated_share"], 3),
                                 "analysis_ms_per_frame": round(r["analysis_ms_per_frame"], 1),
                                 "full_rate_ms_per_cam": round(r["full_rate_ms_per_cam"], 1),
                                 "projected_cams_per_core": round(r["projected_cams_per_core"], 1)}
    ok = [r for r in out["ultralytics"] if not r.get("error") and r.get("cores")]
    if ok:
        u = max(ok, key=lambda r: r["n"])
        s["ultralytics_cams_per_core_used"] = round(u["n"] / u["cores"], 2)
        s["ultralytics_keeps_up"] = bs.ultra_keeps_up(u)
        # Ultralytics grabs (decodes) every frame and infers every vid_stride-th: its cost scales with grab fps.
        u_full_ms = 1000 * u["cores"] / u["n"] * bs.FPS / max(1e-9, u["grab_fps_mean"])
        s["ultralytics_full_rate_ms_per_cam"] = round(u_full_ms, 1)
        s["ultralytics_projected_cams_per_core"] = round(1000 / u_full_ms, 1)
        for r in out["mix"]:
            key = f"gate_{'on' if r['gate'] else 'off'}_n{r['n']}"
            s[f"ratio_per_core_used_{key}"] = round(r["n"] / r["worker_cores"] / s["ultralytics_cams_per_core_used"], 1)
            s[f"ratio_projected_{key}"] = round(u_full_ms / r["full_rate_ms_per_cam"], 1)
    return s


if __name__ == "__main__":
    sys.exit(mix_worker_child(Path(sys.argv[1])))
