"""Site plans (平面图) with camera pins, for command centres without internet map tiles.

* ``GET /site-plans``: the plans the user may see (the whole site's, and those of grid nodes that overlap
  the user's scope), each with its pins (only cameras in the user's scope).
* ``PUT /site-plans/image?grid=<node>``: an admin uploads the plan of a grid node (``grid`` empty or left
  out: the whole site) as a raw PNG or JPEG body. A new upload for the same node replaces the image and
  keeps the pins. The image is judged by its content (:func:`pipeline.tickets.resident_image.clean_photo`:
  JPEG/PNG by its bytes, pixel cap read from the header before decoding, no markup or appended archive,
  decoded with OpenCV) and stored re-encoded as a JPEG in the evidence store
  (``<evidence_dir>/site-plans/``). Refusals count in ``gridwatch_site_plan_uploads_refused_total{reason}``.
* ``GET /site-plans/{id}/image``: the stored image.
* ``PUT /site-plans/{id}/pins``: an admin places the camera pins (``x``, ``y`` normalised 0..1 of the image;
  every camera at most once, configured, and inside the plan's node).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from prometheus_client import Counter
from pydantic import BaseModel, Field
from sqlalchemy import select

from pipeline.config import GridNode
from pipeline.tickets.api_contract import error_responses
from pipeline.tickets.auth import CurrentUser, Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.camera_store import database_cameras
from pipeline.tickets.models import utcnow
from pipeline.tickets.resident_image import PhotoError, clean_photo
from pipeline.tickets.schemas import ID_MAX, NO_NUL_PATTERN
from pipeline.tickets.site_plan_models import SitePlan
from pipeline.tickets.users import Role, audit

MAX_PLAN_BYTES = 15 * 1024 * 1024
"""Largest upload accepted (a scanned A3 plan as PNG is a few MB)."""
MAX_PLAN_PIXELS = 40_000_000
"""Largest width x height accepted, read from the header before decoding (about 150 MB decoded)."""
MAX_PLAN_SIDE = 4096
"""The stored JPEG's long side at most (a wall tile is far smaller)."""
MAX_PINS = 500
UPLOAD_TYPES = ("image/jpeg", "image/png")
RefusalReason = Literal["type", "size", "pixels", "polyglot"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("type", "size", "pixels", "polyglot")
PlanIdPath = Annotated[int, PathParam(ge=1, le=ID_MAX, description="Site plan id.")]
PlanAdmin = Annotated[Principal, Depends(require_roles(Role.ADMIN))]


class Pin(BaseModel):
    """A camera on the plan."""

    camera_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)
    x: float = Field(ge=0, le=1, description="From the image's left edge, 0..1.")
    y: float = Field(ge=0, le=1, description="From the image's top edge, 0..1.")


class PinsIn(BaseModel):
    """Every pin of a plan (replaces the ones it had)."""

    pins: list[Pin] = Field(max_length=MAX_PINS)


class SitePlanOut(BaseModel):
    """A site plan."""

    id: int
    grid_path: list[str] = Field(description="The grid node's codes (empty: the whole site).")
    width: int
    height: int
    size_bytes: int = Field(description="Bytes of the stored JPEG.")
    sha256: str = Field(description="Of the stored JPEG (changes with every new image).")
    image_url: str
    uploaded_at: datetime
    uploaded_by: str | None
    pins: list[Pin] = Field(description="The pins of cameras in your scope.")


class SitePlanMetrics:
    """``gridwatch_site_plan_uploads_total`` and ``gridwatch_site_plan_uploads_refused_total{reason}``."""

    def __init__(self, registry: Any) -> None:
        self.accepted = Counter("gridwatch_site_plan_uploads_total", "Site plan images stored.", registry=registry)
        self.refused = Counter("gridwatch_site_plan_uploads_refused_total", "Site plan uploads refused, by reason.",
                               ["reason"], registry=registry)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)


def node_paths(nodes: list[GridNode], parent: tuple[str, ...] = ()) -> set[str]:
    """Every grid node's path (``T1``, ``T1/D1``, ... down to the cells)."""
    out: set[str] = set()
    for n in nodes:
        here = (*parent, n.code)
        out.add("/".join(here))
        out |= node_paths(n.children, here)
    return out


def _visible(user: Principal, grid_path: str) -> bool:
    return grid_path == "" or user.overlaps(grid_path)


def _under(path: str, node: str) -> bool:
    return not node or path == node or path.startswith(node + "/")


def install_site_plan_routes(app: FastAPI) -> None:
    """Add the routes of the module docstring (``app.state.tickets`` is the TicketState)."""
    metrics = SitePlanMetrics(app.state.tickets.metrics.registry)

    def st(request: Request) -> Any:
        return request.app.state.tickets

    def folder(request: Request) -> Path:
        out: Path = st(request).evidence_dir / "site-plans"
        return out

    def camera_paths(request: Request) -> dict[str, str]:
        s = st(request)
        with s.sessions() as session:
            return {c.id: "/".join(s.site.grid_path(c.grid)) for c in database_cameras(session)}

    def out(plan: SitePlan, user: Principal, cameras: dict[str, str]) -> SitePlanOut:
        pins = [Pin.model_validate(p) for p in plan.pins or []
                if p.get("camera_id") in cameras and user.covers(cameras[p["camera_id"]])]
        return SitePlanOut(id=plan.id, grid_path=plan.grid_path.split("/") if plan.grid_path else [],
                           width=plan.width, height=plan.height, size_bytes=plan.size_bytes, sha256=plan.sha256,
                           image_url=f"/site-plans/{plan.id}/image", uploaded_at=plan.uploaded_at,
                           uploaded_by=plan.uploaded_by, pins=pins)

    def load(session: Any, plan_id: int, user: Principal) -> SitePlan:
        plan = session.get(SitePlan, plan_id)
        if plan is None:
            raise HTTPException(404, f"site plan {plan_id} not found")
        if not _visible(user, plan.grid_path):
            raise HTTPException(403, f"site plan {plan_id} is outside your grid scope")
        assert isinstance(plan, SitePlan)
        return plan

    def refuse(reason: RefusalReason, status: int, message: str) -> HTTPException:
        metrics.refused.labels(reason).inc()
        return HTTPException(status, message)

    @app.get("/site-plans", response_model=list[SitePlanOut], tags=["grid"], responses=AUTH_ERRORS)
    def list_plans(request: Request, user: CurrentUser) -> list[SitePlanOut]:
        """The site plans you may see (the whole site's first, then by grid path)."""
        cameras = camera_paths(request)
        with st(request).sessions() as session:
            plans = session.scalars(select(SitePlan).order_by(SitePlan.grid_path)).all()
            return [out(p, user, cameras) for p in plans if _visible(user, p.grid_path)]

    @app.put("/site-plans/image", response_model=SitePlanOut, tags=["grid"],
             responses={**error_responses(404), **AUTH_ERRORS,
                        413: {"description": f"More than {MAX_PLAN_BYTES} bytes or {MAX_PLAN_PIXELS} pixels."},
                        415: {"description": "Not a plain JPEG or PNG (judged by its content)."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES}}})
    async def upload_plan(request: Request, user: PlanAdmin,
                          grid: Annotated[str | None, Query(max_length=300, pattern=NO_NUL_PATTERN, description=(
                              "The grid node, e.g. `T1/D1` (empty or left out: the whole site)."))] = None,
                          ) -> SitePlanOut:
        """Upload (or replace) the plan image of a grid node or the whole site (raw PNG/JPEG body)."""
        s = st(request)
        node = (grid or "").strip("/")
        if node and node not in node_paths(s.site.grid):
            raise HTTPException(404, f"grid node {node!r} not found (town/district/community/cell codes)")
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in UPLOAD_TYPES:
            raise refuse("type", 415, f"send the plan as image/png or image/jpeg, not {ctype or 'nothing'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_PLAN_BYTES:
            raise refuse("size", 413, f"a site plan may have at most {MAX_PLAN_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_PLAN_BYTES:
                raise refuse("size", 413, f"a site plan may have at most {MAX_PLAN_BYTES} bytes")
        try:
            image = clean_photo(bytes(body), MAX_PLAN_PIXELS, MAX_PLAN_SIDE)
        except PhotoError as exc:
            reason: RefusalReason = {"photo_pixels": "pixels", "photo_polyglot": "polyglot"}.get(
                exc.reason, "type")  # type: ignore[assignment]
            raise refuse(reason, 413 if reason == "pixels" else 415, str(exc)) from None
        digest = hashlib.sha256(image.jpeg).hexdigest()
        target = folder(request)
        target.mkdir(parents=True, exist_ok=True)
        cameras = camera_paths(request)
        old_name = None
        with s.sessions() as session, session.begin():
            plan = session.scalars(select(SitePlan).where(SitePlan.grid_path == node)).first()
            if plan is None:
                plan = SitePlan(grid_path=node, pins=[])
                session.add(plan)
            else:
                old_name = plan.name
            plan.width, plan.height, plan.size_bytes, plan.sha256 = image.width, image.height, len(image.jpeg), digest
            plan.uploaded_at, plan.uploaded_by = utcnow(), user.username
            plan.name = f"plan-{hashlib.sha256(node.encode()).hexdigest()[:12]}-{digest[:16]}.jpg"
            tmp = target / f".{plan.name}.{os.getpid()}.tmp"
            tmp.write_bytes(image.jpeg)
            os.replace(tmp, target / plan.name)
            session.flush()
            audit(session, user.username, "site_plan.upload", f"site_plan:{plan.id}", s.auth.client_address(request),
                  grid=node, sha256=digest, size=len(image.jpeg), source_type=image.source_type)
            result = out(plan, user, cameras)
        if old_name and old_name != plan.name:
            (target / old_name).unlink(missing_ok=True)
        metrics.accepted.inc()
        return result

    @app.get("/site-plans/{plan_id}/image", tags=["grid"], response_class=FileResponse,
             responses={200: {"description": "The plan image (JPEG).", "content": {"image/jpeg": {}}},
                        **error_responses(404), **AUTH_ERRORS})
    def plan_image(request: Request, user: CurrentUser, plan_id: PlanIdPath) -> FileResponse:
        """The plan's stored image."""
        with st(request).sessions() as session:
            plan = load(session, plan_id, user)
            path = folder(request) / plan.name
        if not path.is_file():
            raise HTTPException(404, "the plan image is missing from the evidence store")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.put("/site-plans/{plan_id}/pins", response_model=SitePlanOut, tags=["grid"],
             responses={**error_responses(400, 404), **AUTH_ERRORS})
    def put_pins(request: Request, user: PlanAdmin, plan_id: PlanIdPath, body: PinsIn) -> SitePlanOut:
        """Place the camera pins of a plan (every pin it keeps; an empty list removes them all)."""
        s = st(request)
        cameras = camera_paths(request)
        with s.sessions() as session, session.begin():
            plan = load(session, plan_id, user)
            seen: set[str] = set()
            for p in body.pins:
                if p.camera_id not in cameras:
                    raise HTTPException(400, f"camera {p.camera_id!r} is not configured")
                if not _under(cameras[p.camera_id], plan.grid_path):
                    raise HTTPException(400, f"camera {p.camera_id!r} is not inside grid node {plan.grid_path!r}")
                if p.camera_id in seen:
                    raise HTTPException(400, f"camera {p.camera_id!r} is pinned twice")
                seen.add(p.camera_id)
            plan.pins = [p.model_dump() for p in body.pins]
            plan.pins_updated_at = utcnow()
            audit(session, user.username, "site_plan.pins", f"site_plan:{plan.id}", s.auth.client_address(request),
                  pins=len(body.pins))
            session.flush()
            return out(plan, user, cameras)
