"""Set-up pieces of the soak (scripts/soak.py): the camera clip, the site config, a scratch PostgreSQL database.

The clip: ../shared/clips/car-detection.mp4 from 16 s on, with the frame at 27.6 s (a car at the bottom-left)
held for 20 s: 34 s per loop, the car parked in the zone for ~20 s of it, so a camera with ``dwell 4 s``,
``clear 6 s`` opens, updates and clears one parking incident per loop. H.264, no B-frames, a key frame
every second (what scripts/rtsp_server.py and key-frame decoding want). Detection stays cheap: key frames
only (1/s), the ``vehicles`` model at 320 px (~35 ms a frame on one core).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SOURCE_CLIP = REPO.parent / "shared" / "clips" / "car-detection.mp4"
GRID = [{"code": "T01", "name": "Soak town", "children": [{"code": "D01", "name": "District", "children": [
    {"code": "C01", "name": "Community", "children": [{"code": "G001", "name": "Cell 1", "patrol": "soak"}]}]}]}]
PARKING_ZONE = [[0.05, 0.70], [0.50, 0.70], [0.50, 1.00], [0.05, 1.00]]
"""Where the held car rests (the zone of configs/demo.yaml and tests/test_e2e_parking.py)."""


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """The soak's command line (``description``: scripts/soak.py's docstring)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="chaos phase length (default 10)")
    ap.add_argument("--cameras", type=int, default=4, help="simulated cameras (default 4)")
    ap.add_argument("--workers", type=int, default=0, help="worker processes (default: 1 per 2 cameras)")
    ap.add_argument("--burst", type=int, default=5000, help="alerts in the one burst (0 = none; default 5000)")
    ap.add_argument("--seed", type=int, default=1, help="chaos schedule seed (default 1)")
    ap.add_argument("--chaos-interval", type=float, default=30.0, help="mean seconds between faults (default 30)")
    ap.add_argument("--warmup-seconds", type=float, default=None,
                    help="no faults before, memory measured after (default min(60, 25 %% of the run))")
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="memory/lag sampling period (default 5)")
    ap.add_argument("--drain-timeout", type=float, default=300.0, help="max seconds to wait for the drain")
    ap.add_argument("--source", choices=("rtsp", "file"), default="rtsp",
                    help="cameras as RTSP servers (default; killable) or looped files (no camera kills)")
    ap.add_argument("--database-url", default=None, help="postgresql://... server for a scratch database "
                    "(default SQLite in the work folder)")
    ap.add_argument("--clip", type=Path, default=REPO / "var" / "soak" / "parks-16-27.6-20.mp4",
                    help="camera clip (made from ../shared/clips/car-detection.mp4 when missing)")
    ap.add_argument("--broker-max-queued", type=int, default=None, metavar="N",
                    help="Mosquitto max_queued_messages instead of the production 0 (unlimited); e.g. the stock "
                    "1000, to see the soak catch what a finite queue drops")
    ap.add_argument("--shared-group", default="gridwatch-api", metavar="NAME|none",
                    help="mqtt.shared_group of the ticket consumer (default the config default, gridwatch-api; "
                    "none = a plain subscription)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep configs, logs and databases here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--json", action="store_true", help="JSON report on stdout (the table goes to stderr)")
    args = ap.parse_args(argv)
    if args.cameras < 1 or args.minutes <= 0:
        ap.error("--cameras must be >= 1 and --minutes > 0")
    args.shared_group = None if args.shared_group.lower() in ("none", "null", "") else args.shared_group
    args.workers = args.workers or max(1, (args.cameras + 1) // 2)
    args.workers = min(args.workers, args.cameras)
    duration = args.minutes * 60
    if args.warmup_seconds is None:
        args.warmup_seconds = min(60.0, 0.25 * duration)
    return args


def make_clip(out: Path, src: Path = SOURCE_CLIP, start: float = 16.0, hold_at: float = 27.6,
              hold_seconds: float = 20.0) -> Path:
    """Write (once) the soak's parking clip to ``out`` (see the module docstring); returns ``out``."""
    from make_demo_media import write_held_clip  # scripts/ is on sys.path (soak.py puts it there)

    if out.is_file():
        return out
    if not src.is_file():
        raise FileNotFoundError(f"source clip not found: {src} (pass --clip with an H.264 parking clip)")
    return Path(write_held_clip(src, out, hold_at, hold_seconds, start=start))


def site_config(urls: dict[str, str], broker_port: int, api_port: int, database_url: str, workdir: Path,
                prefix: str, run_id: str, outbox: Path, shared_group: str | None) -> dict[str, Any]:
    """The soak's site YAML (as a dict): one no-parking zone per camera, production defaults elsewhere."""
    return {
        "site": "soak",
        "grid": GRID,
        "cameras": [{"id": cam, "name": f"soak {cam}", "url": url, "grid": "G001", "decode": "keyframes",
                     "zones": [{"id": "np1", "kind": "no_parking", "polygon": PARKING_ZONE}]}
                    for cam, url in urls.items()],
        "hazards": {"parking": {"detector": "vehicles", "dwell_seconds": 4, "clear_seconds": 6,
                                "update_interval_seconds": 10, "cooldown_seconds": 0}},
        "detectors": {"vehicles": {"model": "vehicles", "input_size": 320, "threads": 1, "batch_size": 4}},
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "topic_prefix": prefix, "client_id": f"soak-{run_id}",
                 "shared_group": shared_group},
        "api": {"host": "127.0.0.1", "port": api_port, "database_url": database_url,
                "evidence_dir": str(workdir / "evidence")},
        "worker": {"outbox_path": str(outbox), "clip_pre_seconds": 2, "clip_post_seconds": 2,
                   "health_interval_seconds": 5, "reconnect_min_seconds": 0.5, "reconnect_max_seconds": 5,
                   "analysis_threads": 1, "start_spread_seconds": 0.5},
    }


def _engine_url(url: str) -> str:
    """SQLAlchemy URL with the PostgreSQL driver the project pins (psycopg 3)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def scratch_database(server_url: str, name: str) -> tuple[str, Callable[[], None]]:
    """Create database ``name`` on the server of ``server_url``; returns its URL and a function dropping it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(_engine_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def store_sequences(database_url: str) -> dict[str, dict[str, int]]:
    """Per worker: the last alert ``seq`` the ticket service applied and the gaps/late it counted (persisted)."""
    from sqlalchemy import create_engine, select

    from pipeline.tickets.models import WorkerSequence

    engine = create_engine(_engine_url(database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(WorkerSequence.worker_id, WorkerSequence.last_seq,
                                       WorkerSequence.missing_total, WorkerSequence.late_total)).all()
    finally:
        engine.dispose()
    return {str(w): {"last_seq": int(s), "missing_total": int(m or 0), "late_total": int(lt or 0)}
            for w, s, m, lt in rows}
