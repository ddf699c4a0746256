"""The public resident report page (一楼一码), without login: ``/r/<token>`` and ``/r/t/<tracking token>``.

Routes (not in ``/openapi.json``: they are the page's own calls, described in ``docs/api.md``):

* ``GET /r/{token}``: the report page (``static/resident.html``) for an enabled code; 404 otherwise.
* ``GET /r/{token}/info``: the code's place name and the categories (JSON).
* ``POST /r/{token}/reports``: one report, ``multipart/form-data`` (or a URL-encoded form without photo)
  with ``category``, ``description``, ``phone`` (optional) and ``photo`` (optional file); 201 with the
  tracking link, or a refusal counted in ``gridwatch_resident_reports_refused_total{reason}``
  (:mod:`pipeline.tickets.resident`).
* ``GET /r/t/{tracking}``: the tracking page (same HTML, it reads the path); ``GET /r/t/{tracking}/status``:
  its JSON (status, steps and times; no staff names, notes or phone numbers).

Every page answer carries a Content-Security-Policy that allows only this origin's script and style (no
inline script), ``Referrer-Policy: no-referrer`` (the token is in the URL) and ``no-store``. The page
writes every text with ``textContent``, so a description holding markup shows as text.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from pipeline.tickets.models import utcnow
from pipeline.tickets.resident import (
    CATEGORIES,
    RefusalReason,
    ReportRefusedError,
    ResidentMetrics,
    active_code,
    file_report,
    tracking_view,
)
from pipeline.tickets.resident_image import CleanPhoto, PhotoError, clean_photo
from pipeline.web.router import STATIC_DIR

PAGE = STATIC_DIR / "resident.html"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
PHONE_RE = re.compile(r"^\+?[0-9][0-9 -]{4,19}$")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
FORM_OVERHEAD = 64 * 1024
"""Bytes of a report besides the photo (fields, multipart boundaries) allowed in ``Content-Length``."""
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: "
                               "data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
}
NOT_FOUND_PAGE = ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
                  "content=\"width=device-width\"><title>404</title></head><body><h1>二维码无效或已停用</h1>"
                  "<p>This code is unknown or no longer in use. 请联系社区网格员。</p></body></html>")


def _not_found() -> HTMLResponse:
    return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=PAGE_HEADERS)


def _text(value: Any, limit: int) -> str | None:
    """Stripped text without control characters (newlines and tabs kept), or None when it is not that."""
    if value is None:
        return ""
    if not isinstance(value, str) or CONTROL_RE.search(value) or len(value) > limit:
        return None
    return value.strip()


def install_resident_page(app: FastAPI) -> None:
    """Add the routes of the module docstring; the refusal counters go on the ticket service's registry."""
    metrics = ResidentMetrics(app.state.tickets.metrics.registry)
    app.state.resident_metrics = metrics

    def st(request: Request) -> Any:
        return request.app.state.tickets

    def code_exists(request: Request, token: str) -> bool:
        s = st(request)
        if not s.site.api.resident.enabled or not TOKEN_RE.match(token):
            return False
        with s.sessions() as session:
            return active_code(session, token) is not None

    def refuse(reason: RefusalReason, status: int, message: str) -> JSONResponse:
        metrics.refused.labels(reason).inc()
        return JSONResponse({"detail": message, "reason": reason}, status_code=status,
                            headers={"Cache-Control": "no-store"})

    @app.get("/r/{token}", include_in_schema=False)
    async def report_page(request: Request, token: str) -> Response:
        """The report page of an enabled code (404 page otherwise)."""
        if not await run_in_threadpool(code_exists, request, token):
            return _not_found()
        return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/r/{token}/info", include_in_schema=False)
    def code_info(request: Request, token: str) -> JSONResponse:
        """The code's place name, the categories and the limits the page checks before sending."""
        s = st(request)
        cfg = s.site.api.resident
        if not cfg.enabled or not TOKEN_RE.match(token):
            return JSONResponse({"detail": "unknown or disabled report code"}, status_code=404)
        with s.sessions() as session:
            code = active_code(session, token)
            if code is None:
                return JSONResponse({"detail": "unknown or disabled report code"}, status_code=404)
            place = code.place
        return JSONResponse({
            "place": place, "photo_required": cfg.photo_required, "max_description_chars": cfg.max_description_chars,
            "max_photo_bytes": cfg.max_photo_bytes,
            "categories": [{"key": k, "zh": zh, "en": en} for k, (zh, en, _) in CATEGORIES.items()]},
            headers={"Cache-Control": "no-store"})

    @app.post("/r/{token}/reports", include_in_schema=False)
    async def post_report(request: Request, token: str) -> JSONResponse:
        """One report: checked (size, form, text, photo), stored as a ticket, answered with the tracking link."""
        s = st(request)
        cfg = s.site.api.resident
        if not await run_in_threadpool(code_exists, request, token):
            return refuse("unknown_code", 404, "unknown or disabled report code")
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return refuse("form_invalid", 411, "send the report with a Content-Length")
        if int(declared) > cfg.max_photo_bytes + FORM_OVERHEAD:
            return refuse("photo_too_large", 413, f"the photo may have at most {cfg.max_photo_bytes} bytes")
        ctype = request.headers.get("content-type", "").lower()
        if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return refuse("form_invalid", 400, "send the report as a form (multipart/form-data)")
        try:
            form = await request.form(max_files=1, max_fields=8, max_part_size=FORM_OVERHEAD)
        except Exception:  # a malformed body in any way: refused and counted, never a 500
            return refuse("form_invalid", 400, "the form could not be read")
        try:
            category = form.get("category")
            description = _text(form.get("description"), cfg.max_description_chars)
            phone = _text(form.get("phone"), 40)
            if not isinstance(category, str) or category not in CATEGORIES:
                return refuse("text_invalid", 400, f"category must be one of {', '.join(CATEGORIES)}")
            if description is None:
                return refuse("text_invalid", 400, f"the description may have at most {cfg.max_description_chars} "
                              "characters and no control characters")
            if phone is None or (phone and not PHONE_RE.match(phone)):
                return refuse("text_invalid", 400, "the phone number may hold digits, spaces, '-' and a leading '+'")
            upload = form.get("photo")
            photo: CleanPhoto | None = None
            if isinstance(upload, UploadFile):
                data = await upload.read(cfg.max_photo_bytes + 1)
                if len(data) > cfg.max_photo_bytes:
                    return refuse("photo_too_large", 413, f"the photo may have at most {cfg.max_photo_bytes} bytes")
                if data:
                    try:
                        photo = await run_in_threadpool(clean_photo, data, cfg.max_photo_pixels, cfg.photo_max_side)
                    except PhotoError as exc:
                        return refuse(exc.reason, 413 if exc.reason == "photo_pixels" else 415, str(exc))
            elif upload not in (None, ""):
                return refuse("form_invalid", 400, "photo must be a file")
        finally:
            await form.close()
        if photo is None and cfg.photo_required:
            return refuse("photo_missing", 400, "add a photo")
        if photo is None and not description:
            return refuse("text_invalid", 400, "describe the problem or add a photo")

        def store() -> Any:
            with s.sessions() as session, session.begin():
                return file_report(session, token=token, category=category, description=description,
                                   phone=phone or None, photo=photo, client=s.auth.client_address(request),
                                   now=utcnow(), cfg=cfg, ctx=s.case, evidence_dir=s.evidence_dir)

        try:
            filed = await run_in_threadpool(store)
        except ReportRefusedError as exc:
            return refuse(exc.reason, exc.status, str(exc))
        metrics.accepted.labels(category).inc()
        if s.case_loop is not None:
            s.case_loop.kick()  # the new ticket's notification (and an automatic dispatch's) go out now
        return JSONResponse({"tracking_url": f"/r/t/{filed.tracking_token}", "tracking_token": filed.tracking_token,
                             "status": "received"}, status_code=201, headers={"Cache-Control": "no-store"})

    @app.get("/r/t/{tracking}", include_in_schema=False)
    def tracking_page(request: Request, tracking: str) -> Response:
        """The tracking page of a report (404 page for an unknown tracking token)."""
        if not TOKEN_RE.match(tracking):
            return _not_found()
        with st(request).sessions() as session:
            if tracking_view(session, tracking) is None:
                return _not_found()
        return FileResponse(PAGE, media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/r/t/{tracking}/status", include_in_schema=False)
    def tracking_status(request: Request, tracking: str) -> JSONResponse:
        """What the tracking page shows (:func:`~pipeline.tickets.resident.tracking_view`)."""
        view = None
        if TOKEN_RE.match(tracking):
            with st(request).sessions() as session:
                view = tracking_view(session, tracking)
        if view is None:
            return JSONResponse({"detail": "unknown tracking link"}, status_code=404)
        return JSONResponse(view, headers={"Cache-Control": "no-store"})
