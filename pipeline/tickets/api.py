"""Ticket REST API and command-centre host: ``create_app(site)``.

The app migrates the database when it is created (``init_db``) and its lifespan starts and stops the
MQTT :class:`~pipeline.tickets.consumer.AlertConsumer`. Endpoints are listed in ``docs/api.md``.

Example:
    >>> app = create_app(site, start_consumer=False)  # doctest: +SKIP
    >>> uvicorn.run(app, host=site.api.host, port=site.api.port)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from pipeline.config import GRID_LEVELS, GridNode, SiteConfig
from pipeline.scenes.web import install_scenes
from pipeline.tickets.api_contract import (
    BAD_EVIDENCE,
    EVIDENCE_200,
    HOST_REFUSED,
    PLAIN_TEXT,
    SAFE_NAME,
    EvidenceName,
    HazardList,
    OffsetQuery,
    StatusList,
    TicketIdPath,
    error_responses,
    evidence_media_type,
    install_host_check,
    install_validation_errors,
)
from pipeline.tickets.auth import AnyPrincipal, Authenticator, AuthMetrics, CurrentUser, Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS, install_auth_routes
from pipeline.tickets.camera_check import CheckTimeoutCollector
from pipeline.tickets.camera_routes import install_camera_routes
from pipeline.tickets.camera_store import database_cameras
from pipeline.tickets.casework_routes import install_casework_routes
from pipeline.tickets.consumer import AlertConsumer
from pipeline.tickets.db import init_db, session_factory
from pipeline.tickets.deadlines import CaseContext
from pipeline.tickets.escalation import CaseLoop
from pipeline.tickets.metrics import TicketMetrics
from pipeline.tickets.models import CameraCheck, CameraHealthRow, DeadLetter, IncidentAlias, Ticket, TicketStatus
from pipeline.tickets.query_guard import single_valued_query
from pipeline.tickets.resident_codes import install_report_code_routes
from pipeline.tickets.roles import OPS_ROLES, move_refusal, prune_grid, ticket_scope
from pipeline.tickets.schemas import (
    NO_NUL_PATTERN,
    TIME_PATTERN,
    CameraOut,
    DeadLetterOut,
    EventOut,
    GridNodeOut,
    HealthOut,
    HealthzOut,
    OptionalQueryTime,
    TicketDetail,
    TicketOut,
    TicketPage,
    TransitionConflict,
    TransitionConflictOut,
    TransitionIn,
    dead_letter_out,
)
from pipeline.tickets.service import TicketNotFoundError, TransitionError, transition
from pipeline.tickets.stats import CaseStatsCollector
from pipeline.tickets.users import TokenKind, audit
from pipeline.tickets.verdict_routes import install_verdict_routes
from pipeline.tickets.webhook_routes import install_webhook_routes
from pipeline.tickets.webhook_sender import setup_webhooks
from pipeline.web.debug import install_debug
from pipeline.web.events import install_events
from pipeline.web.resident import install_resident_page
from pipeline.web.router import install_web
from pipeline.web.site_plan import install_site_plan_routes
from pipeline.web.wall_api import install_wall_api

log = logging.getLogger(__name__)

EVIDENCE_FILES = {"snapshot": "snapshot.jpg", "clip": "clip.mp4", "frame": "frame.jpg"}
INACTIVE = (TicketStatus.CLOSED.value, TicketStatus.FALSE_ALARM.value)


@dataclass
class TicketState:
    """Everything the routes need, kept on ``app.state.tickets``."""

    site: SiteConfig
    engine: Engine
    sessions: sessionmaker[Session]
    metrics: TicketMetrics
    evidence_dir: Path
    auth: Authenticator
    case: CaseContext
    consumer: AlertConsumer | None = None
    case_loop: CaseLoop | None = None
    """The escalation / outbox loop (started with the consumer, which it publishes through)."""
    initial_admin_password: str | None = None
    """The one-time password of the first admin when this start created it (shown once by the CLI)."""


def database_url(site: SiteConfig) -> str:
    """The configured database URL (:meth:`SiteConfig.database_url`: SQLite path resolved, driver pinned)."""
    return site.database_url()


def _without_credentials(health: HealthOut) -> HealthOut:
    from pipeline.redact import redact_text

    if not health.last_error:
        return health
    return health.model_copy(update={"last_error": redact_text(health.last_error)})


def _state(request: Request) -> TicketState:
    st: TicketState = request.app.state.tickets
    return st


def _split(values: list[str] | None) -> list[str]:
    """Multi-value query parameter; ``?status=a,b`` and ``?status=a&status=b`` both work."""
    return [v for item in values or [] for v in item.split(",") if v]


def safe_evidence_path(evidence_dir: Path, incident_id: str, name: str) -> Path:
    """``<evidence_dir>/<incident_id>/<name>``, refusing anything that could leave ``evidence_dir``.

    Raises:
        HTTPException: 400 for an unsafe id or name, 404 when the file does not exist (yet).
    """
    if not SAFE_NAME.match(incident_id) or not SAFE_NAME.match(name) or ".." in incident_id + name:
        raise HTTPException(400, "invalid evidence path")
    root = evidence_dir.resolve()
    path = (root / incident_id / name).resolve()
    if not path.is_relative_to(root):
        raise HTTPException(400, "invalid evidence path")
    if not path.is_file():
        raise HTTPException(404, "evidence not available (yet)")
    return path


def _grid_tree(nodes: list[GridNode], counts: dict[str, int], parent: list[str]) -> list[GridNodeOut]:
    out: list[GridNodeOut] = []
    for n in nodes:
        path = [*parent, n.code]
        prefix = "/".join(path)
        active = sum(c for p, c in counts.items() if p == prefix or p.startswith(prefix + "/"))
        level = GRID_LEVELS[len(path) - 1] if len(path) <= len(GRID_LEVELS) else "cell"
        out.append(GridNodeOut(code=n.code, name=n.name, level=level, path=path, patrol=n.patrol,
                               active_tickets=active, children=_grid_tree(n.children, counts, path)))
    return out


def create_app(site: SiteConfig, start_consumer: bool = True) -> FastAPI:
    """Build the ticket API for ``site``.

    Args:
        site: the site config (``api.database_url``, ``api.evidence_dir``, ``mqtt``, grid, cameras).
        start_consumer: start the MQTT consumer in the app's lifespan.

    Returns:
        The FastAPI app; ``app.state.tickets`` is its :class:`TicketState`.
    """
    engine = init_db(database_url(site))
    sessions = session_factory(engine)
    ticket_metrics = TicketMetrics(sessions)
    st = TicketState(site=site, engine=engine, sessions=sessions, metrics=ticket_metrics,
                     evidence_dir=site.resolve_path(site.api.evidence_dir),
                     auth=Authenticator(site.api.auth, sessions, AuthMetrics(ticket_metrics.registry)),
                     case=CaseContext(site.casework, site.mqtt.topic_prefix))  # cameras: the database
    ticket_metrics.registry.register(CaseStatsCollector(sessions))
    ticket_metrics.registry.register(CheckTimeoutCollector(sessions))
    st.initial_admin_password = st.auth.ensure_admin()
    webhooks = setup_webhooks(site, sessions, ticket_metrics.registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_consumer:
            app.state.camera_config.start()  # retained run-time camera config for the workers
            st.consumer = AlertConsumer(site.mqtt, sessions, st.metrics, ctx=st.case)
            st.consumer.start()
            st.case_loop = CaseLoop(sessions, st.case, st.consumer.publish)
            st.consumer.handler.on_casework = st.case_loop.kick
            st.case_loop.start()
        if webhooks is not None:
            webhooks.start()
        try:
            yield
        finally:
            if st.case_loop is not None:
                st.case_loop.stop()
                st.case_loop = None
            if st.consumer is not None:
                st.consumer.stop()
                st.consumer = None
            if webhooks is not None:
                webhooks.stop()
            app.state.camera_config.stop()
            engine.dispose()

    app = FastAPI(title="gridwatch tickets", version="1", lifespan=lifespan, responses=HOST_REFUSED,
                  description="Hazard tickets from gridwatch alerts; see docs/api.md.",
                  dependencies=[Depends(single_valued_query)])  # a repeated one-value query parameter: 422
    app.state.tickets = st
    app.state.webhooks = webhooks
    install_host_check(app, site)
    install_validation_errors(app)

    @app.get("/healthz", response_model=HealthzOut, tags=["ops"],
             responses={503: {"model": HealthzOut, "description": "Not ready: the same body, status degraded."}})
    def healthz(request: Request) -> JSONResponse:
        """200 only while a message arriving now would be processed; 503 otherwise.

        ``database`` is false when the store is unreachable or its last write failed; ``mqtt`` is
        ``connected`` only while the consumer thread runs, is connected and subscribed and not stuck.
        """
        s = _state(request)
        try:
            with s.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            db_ok = True
        except SQLAlchemyError:
            db_ok = False
        mqtt: Literal["connected", "disconnected", "disabled"] = "disabled"
        if s.consumer is not None:
            db_ok = db_ok and not s.consumer.store_failing
            ready = s.consumer.connected and s.consumer.wait_subscribed(0) and not s.consumer.stalled
            mqtt = "connected" if ready else "disconnected"
        ok = db_ok and mqtt != "disconnected"
        body = HealthzOut(status="ok" if ok else "degraded", database=db_ok, mqtt=mqtt)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"description": "Prometheus text format.", "content": PLAIN_TEXT}, **AUTH_ERRORS})
    def metrics(request: Request, principal: AnyPrincipal) -> Response:
        """Prometheus metrics (admin, engineer or a metrics token)."""
        if principal.token_kind is not TokenKind.METRICS and principal.role not in OPS_ROLES:
            raise HTTPException(403, "metrics need role admin or engineer, or a metrics token")
        return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/tickets", response_model=TicketPage, tags=["tickets"], responses=AUTH_ERRORS)
    def list_tickets(
        request: Request,
        user: CurrentUser,
        status: Annotated[StatusList | None, Query(description="Status(es), repeatable or comma-separated.")
                          ] = None,
        hazard: Annotated[HazardList | None, Query(description="Hazard(s), repeatable or comma-separated.")
                          ] = None,
        grid: Annotated[str | None, Query(description="Grid path prefix, e.g. `T1/D1`.", max_length=1000,
                                          pattern=NO_NUL_PATTERN)] = None,
        camera: Annotated[str | None, Query(description="Camera id.", max_length=200,
                                            pattern=NO_NUL_PATTERN)] = None,
        since: Annotated[OptionalQueryTime, Query(description="Opened at or after (ISO-8601, years 1970-2999; "
                                                  "no zone = UTC).", json_schema_extra={"pattern": TIME_PATTERN})
                         ] = None,
        until: Annotated[OptionalQueryTime, Query(description="Opened before (ISO-8601, years 1970-2999; "
                                                  "no zone = UTC).", json_schema_extra={"pattern": TIME_PATTERN})
                         ] = None,
        overdue: Annotated[bool | None, Query(description="Only overdue (true) or only not overdue (false) "
                                              "tickets; see docs/operations.md, deadlines.")] = None,
        manual_check: Annotated[bool | None, Query(description="Only tickets whose camera check timed out "
                                                   "and wait for a manual check (true), or the others.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
        offset: OffsetQuery = 0,
    ) -> TicketPage:
        """Tickets matching every given filter inside the user's grid scope, newest first."""
        q = select(Ticket).where(ticket_scope(user))
        if statuses := _split(status):
            q = q.where(Ticket.status.in_(statuses))
        if hazards := _split(hazard):
            q = q.where(Ticket.hazard.in_(hazards))
        if grid and (g := grid.strip("/")):
            if not user.overlaps(g):
                raise HTTPException(403, f"grid {g!r} is outside your grid scope")
            q = q.where(or_(Ticket.grid_path == g, Ticket.grid_path.startswith(g + "/", autoescape=True)))
        if camera:
            q = q.where(Ticket.camera_id == camera)
        if since is not None:
            q = q.where(Ticket.opened_at >= since)
        if until is not None:
            q = q.where(Ticket.opened_at < until)
        if overdue is not None:
            q = q.where(Ticket.overdue.is_(overdue))
        if manual_check is not None:
            q = q.where(Ticket.manual_check.is_(manual_check))
        with _state(request).sessions() as session:
            total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = session.scalars(q.order_by(Ticket.opened_at.desc(), Ticket.id.desc())
                                   .limit(limit).offset(offset)).all()
            return TicketPage(items=[TicketOut.of(t) for t in rows], total=total, limit=limit, offset=offset)

    def _detail(session: Session, ticket_id: int, user: Principal) -> TicketDetail:
        t = session.scalars(select(Ticket).options(selectinload(Ticket.events))
                            .where(Ticket.id == ticket_id)).first()
        if t is None:
            raise HTTPException(404, f"ticket {ticket_id} not found")
        if not user.covers(t.grid_path):
            raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
        return TicketDetail(**TicketOut.of(t).model_dump(), events=[EventOut.of(e) for e in t.events])

    @app.get("/tickets/{ticket_id}", response_model=TicketDetail, tags=["tickets"],
             responses={**error_responses(404), **AUTH_ERRORS})
    def get_ticket(request: Request, user: CurrentUser, ticket_id: TicketIdPath) -> TicketDetail:
        """One ticket with its history."""
        with _state(request).sessions() as session:
            return _detail(session, ticket_id, user)

    @app.post("/tickets/{ticket_id}/transition", response_model=TicketDetail, tags=["tickets"],
              responses={**error_responses(400, 404), **AUTH_ERRORS,
                         409: {"model": TransitionConflictOut, "description": "Not allowed from the current "
                               "status; `detail.allowed` lists the allowed next statuses."}})
    def post_transition(request: Request, user: CurrentUser, ticket_id: TicketIdPath,
                        body: TransitionIn) -> TicketDetail:
        """Move a ticket along its life cycle; the actor is the logged-in user (roles: docs/operations.md)."""
        s = _state(request)
        with s.sessions() as session:
            try:
                with session.begin():
                    # Locked before the checks, so the role check and the move see the same status.
                    ticket = session.scalars(select(Ticket).where(Ticket.id == ticket_id).with_for_update()).first()
                    if ticket is not None and (refusal := move_refusal(user, ticket, body.to.value)):
                        raise HTTPException(403, refusal)
                    before = ticket.status if ticket is not None else None
                    transition(session, ticket_id, body.to.value, actor=user.username, note=body.note,
                               assignee=body.assignee, ctx=s.case)
                    audit(session, user.username, "ticket.transition", f"ticket:{ticket_id}",
                          s.auth.client_address(request), from_status=before, to_status=body.to.value,
                          note=body.note, assignee=body.assignee)
            except TicketNotFoundError as exc:
                raise HTTPException(404, f"ticket {ticket_id} not found") from exc
            except TransitionError as exc:
                conflict = TransitionConflict(current=exc.current, requested=exc.requested,
                                              allowed=exc.allowed, reason=exc.reason)
                raise HTTPException(409, conflict.model_dump()) from exc
            if s.case_loop is not None:
                s.case_loop.kick()  # notifications / a camera check request queued by the move go out now
            return _detail(session, ticket_id, user)

    @app.get("/tickets/{ticket_id}/evidence/{kind}", tags=["evidence"], response_class=FileResponse,
             responses={**EVIDENCE_200, **error_responses(400, 404, bad_request=BAD_EVIDENCE), **AUTH_ERRORS})
    def ticket_evidence(request: Request, user: CurrentUser, ticket_id: TicketIdPath,
                        kind: Literal["snapshot", "clip", "frame"]) -> FileResponse:
        """The ticket's annotated snapshot or raw frame (JPEG) or clip (MP4); 404 until written."""
        s = _state(request)
        with s.sessions() as session:
            row = session.execute(select(Ticket.incident_id, Ticket.grid_path).where(Ticket.id == ticket_id)).first()
        if row is None:
            raise HTTPException(404, f"ticket {ticket_id} not found")
        incident_id, grid_path = row.tuple()
        if not user.covers(grid_path):
            raise HTTPException(403, f"ticket {ticket_id} is outside your grid scope")
        path = safe_evidence_path(s.evidence_dir, incident_id, EVIDENCE_FILES[kind])
        return FileResponse(path, media_type=evidence_media_type(path))

    @app.get("/evidence/{incident_id}/{name}", tags=["evidence"], response_class=FileResponse,
             responses={**EVIDENCE_200, **error_responses(400, 404, bad_request=BAD_EVIDENCE), **AUTH_ERRORS})
    def evidence(request: Request, user: CurrentUser, incident_id: EvidenceName, name: EvidenceName) -> FileResponse:
        """An evidence file by the URL the worker puts into alerts (scope: the incident's ticket; a file of an
        incident without a ticket yet is for admins only)."""
        s = _state(request)
        path = safe_evidence_path(s.evidence_dir, incident_id, name)
        if not user.site_wide:
            with s.sessions() as session:
                grid_path = session.scalar(select(Ticket.grid_path).where(Ticket.incident_id == incident_id)) \
                    or session.scalar(select(Ticket.grid_path).join(IncidentAlias, IncidentAlias.ticket_id == Ticket.id)
                                      .where(IncidentAlias.incident_id == incident_id)) \
                    or session.scalar(select(Ticket.grid_path).join(CameraCheck, CameraCheck.ticket_id == Ticket.id)
                                      .where(CameraCheck.check_id == incident_id))  # a check's snapshot
            if not user.covers(grid_path):
                raise HTTPException(403, f"incident {incident_id!r} is outside your grid scope")
        return FileResponse(path, media_type=evidence_media_type(path))

    @app.get("/cameras", response_model=list[CameraOut], tags=["cameras"], responses=AUTH_ERRORS)
    def cameras(request: Request, user: CurrentUser) -> list[CameraOut]:
        """Configured cameras in the user's scope with their latest health (plus, for admin and engineer,
        unknown cameras that report health)."""
        s = _state(request)
        with s.sessions() as session:
            # Health comes from workers (any version): mask URL credentials quoted in their errors.
            health = {h.camera_id: _without_credentials(HealthOut.of(h))
                      for h in session.scalars(select(CameraHealthRow))}
            configured = database_cameras(session)  # the run-time config (seeded from the site YAML)
        out: list[CameraOut] = []
        for c in configured:
            if not user.covers(s.site.grid_path(c.grid)):
                health.pop(c.id, None)
                continue
            out.append(CameraOut(id=c.id, name=c.name, grid=c.grid, grid_path=s.site.grid_path(c.grid),
                                 enabled=c.enabled, configured=True, zones=[z.id for z in c.zones],
                                 health=health.pop(c.id, None)))
        for cam_id, h in sorted(health.items()) if user.role in OPS_ROLES else []:
            out.append(CameraOut(id=cam_id, name=None, grid=None, grid_path=[], enabled=True,
                                 configured=False, zones=[], health=h))
        return out

    @app.get("/dead-letters", response_model=list[DeadLetterOut], tags=["ops"], responses=AUTH_ERRORS)
    def dead_letters(request: Request, user: Annotated[Principal, Depends(require_roles(*OPS_ROLES))],
                     limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
                     offset: OffsetQuery = 0) -> list[DeadLetterOut]:
        """Messages the consumer could not use, newest first (admin, engineer: they carry no trusted grid)."""
        with _state(request).sessions() as session:
            rows = session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc())
                                   .limit(limit).offset(offset)).all()
            return [dead_letter_out(d) for d in rows]

    @app.get("/grid", response_model=list[GridNodeOut], tags=["grid"], responses=AUTH_ERRORS)
    def grid_tree(request: Request, user: CurrentUser) -> list[GridNodeOut]:
        """The grid tree down to and inside the user's scopes, with active ticket counts (in scope) per node."""
        s = _state(request)
        with s.sessions() as session:
            counts = {p: int(n) for p, n in session.execute(
                select(Ticket.grid_path, func.count()).where(Ticket.status.not_in(INACTIVE), ticket_scope(user))
                .group_by(Ticket.grid_path)).all()}
        return prune_grid(_grid_tree(s.site.grid, counts, []), user)

    install_auth_routes(app)
    install_camera_routes(app)
    install_casework_routes(app)
    install_webhook_routes(app)
    install_verdict_routes(app)
    install_report_code_routes(app)
    install_resident_page(app)
    install_web(app)
    install_debug(app, site)
    install_scenes(app, site)
    install_events(app)
    install_wall_api(app)
    install_site_plan_routes(app)
    return app
