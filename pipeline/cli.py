"""The `gridwatch` command line: run, api, worker, check-config, schema, replay, mqtt-acl."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import SiteConfig
from pipeline.config_errors import ConfigError

# No locals in crash tracebacks: they would print the site config, camera passwords included.
app = typer.Typer(help="gridwatch: CCTV hazard detection -> MQTT alerts -> tickets.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_show_locals=False)
console = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Site YAML file.")]


def _add_user_commands() -> None:
    from pipeline.user_cli import user_app

    app.add_typer(user_app, name="user")
    from pipeline.model_cli import model_app

    app.add_typer(model_app, name="model")
    from pipeline.scenes.cli import scene_app

    app.add_typer(scene_app, name="scene")
    from pipeline.dataset_cli import dataset_app

    app.add_typer(dataset_app, name="dataset")


_add_user_commands()
DEFAULT_CONFIG = Path("configs/demo.yaml")


def _load(path: Path) -> SiteConfig:
    from pipeline.config import load_config

    try:
        return load_config(path)
    except FileNotFoundError:
        console.print(f"[red]config file not found:[/] {path}")
        raise typer.Exit(2) from None
    except ConfigError as exc:
        console.print(f"[red]{path}: {len(exc.errors)} error(s)[/]")
        for e in exc.errors:
            console.print(f"  {e}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    from pipeline.redact import install_log_redaction

    install_log_redaction()  # camera and broker passwords never reach the console
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(name)s: %(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    for noisy in ("transitions", "uvicorn.access", "libav", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # amqtt logs a busy port as a traceback; the CLI reports it in one line and falls back.
    logging.getLogger("amqtt").setLevel(logging.CRITICAL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def _start_api(site: SiteConfig) -> Any:
    import uvicorn

    from pipeline.config_checks import DatabaseDriverMissingError
    from pipeline.tickets.api import create_app

    try:
        ticket_app = create_app(site)
    except DatabaseDriverMissingError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from None
    server = uvicorn.Server(uvicorn.Config(ticket_app, host=site.api.host, port=site.api.port,
                                           log_level="warning", lifespan="on"))
    threading.Thread(target=server.run, name="gridwatch-api", daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        console.print("[red]the ticket API did not start (see the log above)[/]")
        raise typer.Exit(1)
    return server


def _print_first_login(server: Any) -> None:
    """On the very first start, say how to log in (the password itself is in the log line above, once)."""
    if server.config.app.state.tickets.initial_admin_password:
        console.print("first start: log in as [bold]admin[/] with the one-time password printed above, then "
                      "add users with `gridwatch user add` (docs/operations.md)")


def _with_embedded_broker(site: SiteConfig) -> tuple[SiteConfig, Any]:
    """Start the in-process broker when no broker URL is configured."""
    if site.mqtt.url:
        return site, None
    from pipeline.alerts.broker import EmbeddedBroker

    broker = EmbeddedBroker("127.0.0.1", site.mqtt.embedded_port)
    try:
        broker.start()
    except OSError as exc:
        console.print(f"[yellow]embedded broker port {site.mqtt.embedded_port} busy ({exc}); using a free port[/]")
        broker = EmbeddedBroker("127.0.0.1", 0)
        broker.start()
    # The embedded broker does not do shared subscriptions, so the consumer subscribes plainly.
    mqtt = site.mqtt.model_copy(update={"url": f"mqtt://127.0.0.1:{broker.port}", "shared_group": None})
    console.print(f"embedded MQTT broker on [bold]mqtt://127.0.0.1:{broker.port}[/] "
                  "(demo only; set mqtt.url to use Mosquitto)")
    return site.model_copy(update={"mqtt": mqtt}), broker


def _with_api_port(site: SiteConfig) -> SiteConfig:
    if site.api.port:
        return site
    return site.model_copy(update={"api": site.api.model_copy(update={"port": _free_port()})})


def _report_sources(site: SiteConfig) -> None:
    from pipeline.sources import source_problems

    for cam_id, problem in source_problems(site).items():
        console.print(f"[yellow]camera {cam_id}:[/] {problem}")


def _status_table(worker: Any) -> Table:
    table = Table(title="cameras", expand=False)
    for col in ("camera", "state", "decoded", "analysed", "dropped", "reconnects", "last error"):
        table.add_column(col)
    for h in worker.camera_health():
        table.add_row(str(h["camera_id"]), str(h["state"]), str(h.get("frames_decoded", 0)),
                      str(h.get("frames_analysed", 0)), str(h.get("frames_dropped", 0)),
                      str(h.get("reconnects", 0)), str(h.get("last_error") or h.get("analysis_error") or "")[:60])
    return table


def _run_worker_until_signal(worker: Any, status_every: float) -> None:
    worker.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    next_status = time.monotonic() + 5
    try:
        while not stop.wait(0.5):
            if status_every > 0 and time.monotonic() >= next_status:
                console.print(_status_table(worker))
                next_status = time.monotonic() + status_every
    finally:
        console.print("stopping ...")
        worker.stop()


@app.command()
def run(config: ConfigOpt = DEFAULT_CONFIG,
        status_every: Annotated[float, typer.Option(help="Print camera status every N s (0 = never).")] = 30,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Everything in one process: embedded broker (if no mqtt.url), ticket API and detection worker."""
    _setup_logging(verbose)
    site = _with_api_port(_load(config))
    site, broker = _with_embedded_broker(site)
    _report_sources(site)
    server = _start_api(site)
    base = site.api.public_url or f"http://{site.api.host}:{site.api.port}"
    console.print(f"ticket API and command centre at [bold]{base}/[/]  (tickets: {base}/tickets)")
    _print_first_login(server)
    from pipeline.worker import Worker

    try:
        _run_worker_until_signal(Worker(site), status_every)
    finally:
        if broker is not None:
            broker.stop()


def _load_with_broker(config: Path, verbose: bool, command: str) -> SiteConfig:
    """Set up logging and load a config that must name a broker (no embedded one outside `run`)."""
    _setup_logging(verbose)
    site = _load(config)
    if not site.mqtt.url:
        console.print(f"[red]mqtt.url is not set; `gridwatch {command}` needs a broker (or use `gridwatch run`)[/]")
        raise typer.Exit(2)
    return site


@app.command()
def api(config: ConfigOpt = DEFAULT_CONFIG,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """The ticket API (and its MQTT consumer) only."""
    site = _load_with_broker(config, verbose, "api")
    server = _start_api(site)
    console.print(f"ticket API at http://{site.api.host}:{site.api.port}/")
    _print_first_login(server)
    _wait_for_signal()


@app.command()
def worker(config: ConfigOpt = DEFAULT_CONFIG,
           cameras: Annotated[str | None, typer.Option(help="Comma-separated camera ids (default all).")] = None,
           worker_id: Annotated[str | None, typer.Option(help="Worker id (MQTT status topic).")] = None,
           shard: Annotated[str | None, typer.Option(
               envvar="GRIDWATCH_SHARD", help="Run only shard i of N's cameras (rendezvous hashing of the "
               "camera ids), e.g. 0/3; own outbox and journal per shard (docs/deploy.md).")] = None,
           shard_from_hostname: Annotated[bool, typer.Option(
               "--shard-from-hostname", envvar="GRIDWATCH_SHARD_FROM_HOSTNAME",
               help="Shard ordinal from the pod name (POD_NAME, else the host name): gridwatch-worker-3 -> 3.")]
               = False,
           shard_count: Annotated[int | None, typer.Option(
               envvar="GRIDWATCH_SHARD_COUNT", help="N for --shard-from-hostname (the StatefulSet's replicas).")]
               = None,
           status_every: Annotated[float, typer.Option(help="Print camera status every N s.")] = 30,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """The detection worker only (cameras -> alerts), for scale-out next to a shared broker."""
    site = _load_with_broker(config, verbose, "worker")
    from pipeline.sharding import ShardError, cameras_for, resolve_shard, shard_site, shard_worker_id

    hostname = os.environ.get("POD_NAME") or socket.gethostname()
    try:
        spec = resolve_shard(shard, shard_from_hostname, shard_count, hostname)
    except ShardError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    ids = [c.strip() for c in cameras.split(",")] if cameras else None
    if spec is not None:
        if ids is not None:
            console.print("[red]--cameras and --shard exclude each other[/]")
            raise typer.Exit(2)
        site, ids = shard_site(site, spec), cameras_for(site, spec.index, spec.count)
        worker_id = worker_id or shard_worker_id(spec, shard_from_hostname, hostname)
        console.print(f"shard {spec} ({worker_id}): {len(ids)} of {len(site.cameras)} cameras, "
                      f"outbox {site.worker.outbox_path}")
    _report_sources(site)
    from pipeline.worker import Worker

    _run_worker_until_signal(Worker(site, worker_id=worker_id, camera_ids=ids, shard=spec), status_every)


@app.command("check-config")
def check_config(file: Annotated[Path, typer.Argument(help="Site YAML to validate.")]) -> None:
    """Validate a site YAML; print every error with its path (and line) in the file."""
    from pipeline.config_errors import validate_file

    try:
        cfg, errors = validate_file(file)  # size-capped; binary or non-UTF-8 files are one error line
    except OSError as exc:
        console.print(f"[red]cannot read {file}: {exc}[/]")
        raise typer.Exit(2) from None
    if errors or cfg is None:
        for e in errors:
            print(e)
        console.print(f"[red]{file}: {len(errors)} error(s)[/]")
        raise typer.Exit(1)
    zones = sum(len(c.zones) for c in cfg.cameras)
    console.print(f"[green]{file}: OK[/] ({len(cfg.cameras)} cameras, {zones} zones)")
    from pipeline.ingest.decode_plan import site_rate_warnings

    cfg.base_dir = str(file.resolve().parent)
    for warning in site_rate_warnings(cfg):  # e.g. `decode: keyframes` on a fire camera with a 3 s GOP
        print(f"warning: {warning}")
    from pipeline.analyze.fire_checks import smoke_floor_warnings

    for warning in smoke_floor_warnings(cfg):  # a detector floor that hides the fire rule's smoke proposals
        print(f"warning: {warning}")


@app.command()
def schema(alert: Annotated[bool, typer.Option("--alert", help="The MQTT alert payload schema instead.")]
           = False,
           message: Annotated[str | None, typer.Option(
               "--message", help="One MQTT message's schema instead: alert, health, occupancy, worker-status, "
               "debug-request, camera-check-request, camera-check-result, notification.")] = None,
           messages: Annotated[Path | None, typer.Option(
               "--messages", help="Write every MQTT message's schema into this folder (docs/messages).")]
           = None) -> None:
    """Print the JSON Schema of the site config (or of an MQTT message; or write all messages' schemas)."""
    from pipeline.contract.schemas import MESSAGE_MODELS, json_schema, write_schemas

    if messages is not None:
        for path in write_schemas(messages):
            print(path)
        return
    name = "alert" if alert else message
    if name is not None:
        if name not in MESSAGE_MODELS:
            typer.echo(f"unknown message {name!r}; one of: {', '.join(MESSAGE_MODELS)}", err=True)
            raise typer.Exit(2)
        print(json.dumps(json_schema(name), indent=2, ensure_ascii=False))
    else:
        print(json.dumps(SiteConfig.model_json_schema(), indent=2, ensure_ascii=False))


@app.command()
def replay(
        video: Annotated[Path | None, typer.Argument(help="Video file (default: the camera's own file url).")]
        = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="Site YAML (rules, detectors, "
                                                    "cameras).")] = None,
        camera: Annotated[str | None, typer.Option(help="Camera id in the site YAML.")] = None,
        hazard: Annotated[list[str] | None, typer.Option(help="Camera spec instead of --camera: a hazard "
                                                         "(repeatable): fire, clutter, parking, poster.")] = None,
        zone: Annotated[list[str] | None, typer.Option(help="Zone polygon 'x,y x,y ...' in 0..1 (repeatable); "
                                                       "default: fire on the whole frame, others in a "
                                                       "whole-frame zone.")] = None,
        zone_kind: Annotated[str | None, typer.Option(help="Kind of the --zone zones (default area).")] = None,
        fps: Annotated[float | None, typer.Option(help="Decode every frame and analyse at most this many "
                                                  "frames/s (default: the camera's decode mode).")] = None,
        decode: Annotated[str | None, typer.Option(help="Decode mode instead of the camera's: auto, keyframes, "
                                                   "interval.")] = None,
        start_ts: Annotated[float | None, typer.Option(help="Unix time of the clip start (default: file "
                                                       "mtime).")] = None,
        annotate: Annotated[Path | None, typer.Option(help="Write the analysed frames with boxes, zones and "
                                                      "rule state to this MP4.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="JSON Lines on stdout (see docs/replay.md).")]
        = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Incidents and summary only.")] = False,
        verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run a video file through one camera's live analysis path, as fast as the CPU allows."""
    from pipeline.replay_cmd import ReplayArgs, ReplayUsageError
    from pipeline.replay_cmd import run as run_replay

    _setup_logging(verbose)
    if config is None and camera is not None:
        config = DEFAULT_CONFIG
    site = _load(config) if config is not None else None
    args = ReplayArgs(video, site, camera, hazard or [], zone or [], zone_kind, fps, decode, start_ts, annotate,
                      as_json, quiet)
    try:
        run_replay(args, console=console)
    except ReplayUsageError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - a bad file is one clear line, not a traceback
        if verbose:
            raise
        console.print(f"[red]replay failed: {type(exc).__name__}: {exc}[/]", highlight=False)
        raise typer.Exit(1) from None


@app.command("mqtt-acl")
def mqtt_acl(config: ConfigOpt = DEFAULT_CONFIG,
             out: Annotated[Path, typer.Option("--out", help="Folder for passwd, acl and auth.conf.")]
             = Path("var/mqtt"),
             users: Annotated[Path | None, typer.Option(help="YAML users file: users: [{username, role, grids, "
                                                       "password}] (docs/operations.md).")] = None,
             db: Annotated[bool | None, typer.Option("--db/--no-db", help="Read the ticket service's users "
                                                     "table (default: when it exists).")] = None,
             broker_dir: Annotated[str | None, typer.Option(help="--out as the broker sees it, for the paths "
                                                            "in auth.conf (e.g. /mosquitto/config/conf.d).")]
             = None,
             generate: Annotated[bool, typer.Option("--generate/--no-generate", help="Make a random password "
                                                    "for a user without one (new-passwords.txt).")] = True,
             emqx: Annotated[bool, typer.Option("--emqx", help="Also write emqx/acl.conf (EMQX file "
                                                "authorizer).")] = False,
             check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the files in --out "
                                                 "are not current (e.g. from cron, before a reload).")]
             = False) -> None:
    """Write the Mosquitto password file and ACL for the workers, the ticket service and the users."""
    from pipeline.mqtt_acl import AclError, db_principals, load_users_file, site_principals, write_broker_files

    site = _load(config)
    try:
        principals = site_principals(site) + (load_users_file(users) if users else [])
        if db is not False:
            try:
                principals += db_principals(site)
            except AclError as exc:
                if db:
                    raise
                console.print(f"[yellow]users table not read: {exc}[/]", highlight=False)
        report = write_broker_files(site, principals, out, broker_dir, generate, emqx, dry_run=check)
    except AclError as exc:
        console.print(f"[red]{exc}[/]", highlight=False)
        raise typer.Exit(2) from None
    for line in report.warnings + [f"no login for {s}" for s in report.skipped]:
        console.print(f"[yellow]warning: {line}[/]", highlight=False)
    if check:
        if report.changed:
            console.print(f"{out} is not current: {', '.join(report.changed)} would change")
            raise typer.Exit(1)
        console.print(f"{out} is current ({len(report.users)} broker users)")
        return
    if report.generated:
        console.print(f"new passwords for {', '.join(sorted(report.generated))}: {out / 'new-passwords.txt'}")
    if report.changed:
        console.print(f"{len(report.users)} broker users; wrote {', '.join(report.changed)} in {out}: "
                      "reload Mosquitto (SIGHUP) to apply")
    else:
        console.print(f"{len(report.users)} broker users; {out} is current (nothing changed)")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
