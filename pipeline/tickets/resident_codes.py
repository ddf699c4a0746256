"""Admin routes of the resident report codes (一楼一码): create, list, disable, print.

* ``POST /report-codes``: a code bound to a grid cell and a place name (``3号楼2单元``); its token is 128
  random bits (``secrets.token_urlsafe(16)``), its URL ``<public base URL>/r/<token>``.
* ``GET /report-codes``: the codes in the user's grid scope (filter by grid prefix, enabled).
* ``PATCH /report-codes/{id}``: rename it or disable / enable it (a disabled code's page answers 404).
* ``GET /report-codes/sheet.html``: a printable A4 sheet, one QR code per enabled code with its place name
  (print it from the browser, or save it as PDF there; the QR codes are inline SVG from ``segno``).
* ``GET /report-codes/{id}/qr.png``: one code as a PNG.

Admins and dispatchers may call them, each for the cells in their scope; every change is audited.
"""

from __future__ import annotations

import html
import io
import secrets
from datetime import datetime
from typing import Annotated, Any

import segno
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, StrictBool
from sqlalchemy import func, or_, select

from pipeline.config import GridNode, SiteConfig
from pipeline.tickets.api_contract import error_responses
from pipeline.tickets.auth import Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.models import utcnow
from pipeline.tickets.resident_models import ReportCode, ResidentReport
from pipeline.tickets.schemas import ID_MAX, NO_NUL_PATTERN
from pipeline.tickets.users import Role, audit

CODE_ROLES = (Role.ADMIN, Role.DISPATCHER)
CodeManager = Annotated[Principal, Depends(require_roles(*CODE_ROLES))]
CodeIdPath = Annotated[int, PathParam(ge=1, le=ID_MAX, description="Report code id.")]
SHEET_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; frame-ancestors 'none'"


class ReportCodeIn(BaseModel):
    """A new report code."""

    grid: str = Field(max_length=300, pattern=NO_NUL_PATTERN,
                      description="The grid cell's path, town to cell, e.g. `T1/D1/C1/G1`.")
    place: str = Field(min_length=1, max_length=100, pattern=NO_NUL_PATTERN,
                       description="Where the code hangs, shown to residents and printed under it, e.g. 3号楼2单元.")


class ReportCodePatch(BaseModel):
    """A change to a report code."""

    enabled: StrictBool | None = Field(default=None, description="false: disable (its page answers 404).")
    place: str | None = Field(default=None, min_length=1, max_length=100, pattern=NO_NUL_PATTERN,
                              description="A new place name.")


class ReportCodeOut(BaseModel):
    """A report code."""

    id: int
    grid_path: list[str] = Field(description="Grid codes town -> cell.")
    place: str
    enabled: bool
    url: str = Field(description="What the QR code holds: `<public base URL>/r/<token>`.")
    created_at: datetime
    created_by: str | None
    disabled_at: datetime | None
    reports: int = Field(description="Reports accepted through it.")


def grid_names(nodes: list[GridNode], parent: tuple[list[str], list[str]] = ([], [])) -> dict[str, list[str]]:
    """Cell path (``T1/D1/C1/G1``) -> the names town to cell, for every cell of the grid."""
    out: dict[str, list[str]] = {}
    for n in nodes:
        codes, names = [*parent[0], n.code], [*parent[1], n.name]
        if len(codes) == 4:
            out["/".join(codes)] = names
        out.update(grid_names(n.children, (codes, names)))
    return out


def public_base(site: SiteConfig, request: Request) -> str:
    """Base URL printed into the QR codes (``api.resident.public_base_url``, ``api.public_url``, the request)."""
    return (site.api.resident.public_base_url or site.api.public_url or str(request.base_url)).rstrip("/")


def _out(code: ReportCode, base: str, reports: int) -> ReportCodeOut:
    return ReportCodeOut(id=code.id, grid_path=code.grid_path.split("/"), place=code.place, enabled=code.enabled,
                         url=f"{base}/r/{code.token}", created_at=code.created_at, created_by=code.created_by,
                         disabled_at=code.disabled_at, reports=reports)


def _scoped(user: Principal) -> Any:
    if user.site_wide:
        return True
    return or_(*(or_(ReportCode.grid_path == s, ReportCode.grid_path.startswith(s + "/", autoescape=True))
                 for s in user.scopes)) if user.scopes else False


def _sheet(codes: list[ReportCode], base: str, names: dict[str, list[str]]) -> str:
    cards = []
    for c in codes:
        url = f"{base}/r/{c.token}"
        svg = segno.make(url, error="m").svg_inline(scale=5, border=2, title=None)
        where = " · ".join(names.get(c.grid_path, c.grid_path.split("/"))[2:])
        cards.append(f'<div class="card"><div class="head">扫码上报 · 您扫我办</div>{svg}'
                     f'<div class="place">{html.escape(c.place)}</div><div class="grid">{html.escape(where)}</div>'
                     f'<div class="hint">堆物 · 小广告 · 违停 · 消防隐患 — 拍照上报，进度可查</div></div>')
    body = "".join(cards) or '<p class="empty">没有可打印的二维码 (no enabled codes)</p>'
    return ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>一楼一码 二维码</title><style>"
            "@page{size:A4;margin:10mm}body{font-family:sans-serif;margin:0}"
            ".sheet{display:grid;grid-template-columns:repeat(3,1fr);gap:6mm}"
            ".card{border:1px dashed #999;padding:4mm;text-align:center;break-inside:avoid}"
            ".card svg{width:45mm;height:45mm}.head{font-weight:bold;font-size:13pt;color:#c00}"
            ".place{font-size:16pt;font-weight:bold;margin-top:2mm}.grid,.hint{font-size:9pt;color:#444}"
            f"</style></head><body><div class=\"sheet\">{body}</div></body></html>")


def install_report_code_routes(app: FastAPI) -> None:
    """Add the routes of the module docstring (``app.state.tickets`` is the TicketState)."""

    def st(request: Request) -> Any:
        return request.app.state.tickets

    def counts(session: Any, ids: list[int]) -> dict[int, int]:
        if not ids:
            return {}
        return dict(session.execute(select(ResidentReport.code_id, func.count()).where(
            ResidentReport.code_id.in_(ids)).group_by(ResidentReport.code_id)).tuples().all())

    def load(session: Any, code_id: int, user: Principal) -> ReportCode:
        code = session.get(ReportCode, code_id)
        if code is None:
            raise HTTPException(404, f"report code {code_id} not found")
        if not user.covers(code.grid_path):
            raise HTTPException(403, f"report code {code_id} is outside your grid scope")
        assert isinstance(code, ReportCode)
        return code

    @app.post("/report-codes", response_model=ReportCodeOut, status_code=201, tags=["resident"],
              responses={**error_responses(400, 404), **AUTH_ERRORS})
    def create_code(request: Request, user: CodeManager, body: ReportCodeIn) -> ReportCodeOut:
        """Create a QR report code for a building unit of a grid cell in your scope."""
        s = st(request)
        path = body.grid.strip("/")
        if path not in grid_names(s.site.grid):
            raise HTTPException(404, f"grid cell {path!r} not found (town/district/community/cell codes)")
        if not user.covers(path):
            raise HTTPException(403, f"grid {path!r} is outside your grid scope")
        with s.sessions() as session, session.begin():
            code = ReportCode(token=secrets.token_urlsafe(16), grid_path=path, place=body.place.strip() or body.place,
                              enabled=True, created_at=utcnow(), created_by=user.username)
            session.add(code)
            session.flush()
            audit(session, user.username, "report_code.create", f"report_code:{code.id}",
                  s.auth.client_address(request), grid=path, place=code.place)
            return _out(code, public_base(s.site, request), 0)

    @app.get("/report-codes", response_model=list[ReportCodeOut], tags=["resident"], responses=AUTH_ERRORS)
    def list_codes(request: Request, user: CodeManager,
                   grid: Annotated[str | None, Query(max_length=300, pattern=NO_NUL_PATTERN,
                                                     description="Grid path prefix, e.g. `T1/D1`.")] = None,
                   enabled: Annotated[bool | None, Query(description="Only enabled (true) or disabled (false).")
                                      ] = None) -> list[ReportCodeOut]:
        """The report codes in your grid scope, by id."""
        s = st(request)
        q = select(ReportCode).where(_scoped(user))
        if grid and (g := grid.strip("/")):
            q = q.where(or_(ReportCode.grid_path == g, ReportCode.grid_path.startswith(g + "/", autoescape=True)))
        if enabled is not None:
            q = q.where(ReportCode.enabled.is_(enabled))
        with s.sessions() as session:
            rows = list(session.scalars(q.order_by(ReportCode.id)))
            n = counts(session, [c.id for c in rows])
            base = public_base(s.site, request)
            return [_out(c, base, n.get(c.id, 0)) for c in rows]

    @app.get("/report-codes/sheet.html", tags=["resident"], response_class=HTMLResponse,
             responses={200: {"description": "A printable A4 sheet (HTML with inline SVG QR codes).",
                              "content": {"text/html": {}}}, **AUTH_ERRORS})
    def sheet(request: Request, user: CodeManager,
              grid: Annotated[str | None, Query(max_length=300, pattern=NO_NUL_PATTERN,
                                                description="Grid path prefix, e.g. `T1/D1/C1`.")] = None,
              ids: Annotated[str | None, Query(max_length=2000, pattern=r"^[0-9]{1,10}(,[0-9]{1,10})*$",
                                               description="Only these code ids, comma-separated.")] = None,
              ) -> HTMLResponse:
        """Print sheet of the enabled codes in your scope (optionally one grid node's, or the given ids)."""
        s = st(request)
        q = select(ReportCode).where(_scoped(user), ReportCode.enabled.is_(True))
        if grid and (g := grid.strip("/")):
            q = q.where(or_(ReportCode.grid_path == g, ReportCode.grid_path.startswith(g + "/", autoescape=True)))
        if ids:
            q = q.where(ReportCode.id.in_([int(i) for i in ids.split(",") if int(i) <= ID_MAX]))
        with s.sessions() as session:
            rows = list(session.scalars(q.order_by(ReportCode.grid_path, ReportCode.id)))
        page = _sheet(rows, public_base(s.site, request), grid_names(s.site.grid))
        return HTMLResponse(page, headers={"Content-Security-Policy": SHEET_CSP, "Cache-Control": "no-store"})

    @app.get("/report-codes/{code_id}/qr.png", tags=["resident"], response_class=Response,
             responses={200: {"description": "The QR code (PNG).", "content": {"image/png": {}}},
                        **error_responses(404), **AUTH_ERRORS})
    def qr_png(request: Request, user: CodeManager, code_id: CodeIdPath) -> Response:
        """One code's QR image (its URL), e.g. for a poster of your own."""
        s = st(request)
        with s.sessions() as session:
            code = load(session, code_id, user)
            url = f"{public_base(s.site, request)}/r/{code.token}"
        buf = io.BytesIO()
        segno.make(url, error="m").save(buf, kind="png", scale=10, border=4)
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.patch("/report-codes/{code_id}", response_model=ReportCodeOut, tags=["resident"],
               responses={**error_responses(400, 404), **AUTH_ERRORS})
    def patch_code(request: Request, user: CodeManager, code_id: CodeIdPath, body: ReportCodePatch) -> ReportCodeOut:
        """Disable (or enable again) or rename a code."""
        s = st(request)
        with s.sessions() as session, session.begin():
            code = load(session, code_id, user)
            changes: dict[str, Any] = {}
            if body.enabled is not None and body.enabled != code.enabled:
                code.enabled = body.enabled
                code.disabled_at = None if body.enabled else utcnow()
                changes["enabled"] = body.enabled
            if body.place is not None and body.place != code.place:
                changes["place"] = [code.place, body.place]
                code.place = body.place
            if changes:
                audit(session, user.username, "report_code.update", f"report_code:{code.id}",
                      s.auth.client_address(request), **changes)
            session.flush()
            return _out(code, public_base(s.site, request), counts(session, [code.id]).get(code.id, 0))
