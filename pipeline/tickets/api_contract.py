"""What the ticket API accepts and answers besides its 200 bodies: bounded parameters, declared errors.

Every bound here is also written into the OpenAPI document, so a client (or schemathesis) reads the
same contract the server enforces; the numbers and patterns themselves live in
:mod:`pipeline.tickets.schemas`. Besides the parameter types this module holds the ``responses=``
declarations of the 400/404 answers, the Host check (``api.allowed_hosts`` through Starlette's
``TrustedHostMiddleware``) and the 422 handler that keeps a validation answer encodable whatever the
request held (lone surrogates, NaN).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import StringConstraints
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.config import SiteConfig
from pipeline.contract.ids import SAFE_ID_RE
from pipeline.tickets.schemas import DB_INT_MAX, HAZARD_LIST_PATTERN, ID_MAX, STATUS_LIST_PATTERN, ErrorOut

log = logging.getLogger(__name__)

SAFE_NAME = SAFE_ID_RE
"""An incident id or file name of the evidence store (``..`` inside is refused separately)."""
EVIDENCE_MEDIA_TYPES = {".jpg": "image/jpeg", ".mp4": "video/mp4"}
"""What the worker writes; any other file in the evidence store is served as octet-stream, never as HTML."""
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

TicketIdPath = Annotated[int, PathParam(ge=1, le=ID_MAX, description="Ticket id.")]
OffsetQuery = Annotated[int, Query(ge=0, le=DB_INT_MAX, description="Rows to skip (paging).")]
StatusList = list[Annotated[str, StringConstraints(pattern=STATUS_LIST_PATTERN)]]
HazardList = list[Annotated[str, StringConstraints(pattern=HAZARD_LIST_PATTERN)]]
# Documented, not enforced by FastAPI (that would be a 422): a name outside the pattern is a 400 from
# safe_evidence_path, which also refuses ".." inside an otherwise matching name.
EvidenceName = Annotated[str, PathParam(json_schema_extra={"pattern": SAFE_NAME.pattern},
                                        description="A file or directory name of the evidence store.")]

Responses = dict[int | str, dict[str, Any]]
PLAIN_TEXT: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
HOST_REFUSED: Responses = {
    400: {"description": "The Host header is not in `api.allowed_hosts` (plain text `Invalid host header`).",
          "content": PLAIN_TEXT}}
"""Declared on every route: ``TrustedHostMiddleware`` answers before any route runs."""
BAD_BODY = "A body that is not JSON, or a Host header not allowed (plain text)."
BAD_EVIDENCE = "Unsafe evidence path (`..`, a leading `.`), or a Host header not allowed (plain text)."
EVIDENCE_200: Responses = {
    200: {"description": "The file: JPEG snapshot/frame or MP4 clip.",
          "content": {"image/jpeg": {}, "video/mp4": {}, "application/octet-stream": {}}}}


def error_responses(*codes: int, bad_request: str = BAD_BODY) -> Responses:
    """``responses=`` entries for a route's 400 and 404 answers (``ErrorOut``; a 400 may be plain text)."""
    out: Responses = {}
    if 400 in codes:
        out[400] = {"model": ErrorOut, "description": bad_request, "content": PLAIN_TEXT}
    if 404 in codes:
        out[404] = {"model": ErrorOut, "description": "No such ticket, or its evidence file is not written yet."}
    return out


def evidence_media_type(path: Path) -> str:
    """Media type of an evidence file from its suffix (octet-stream for anything unexpected)."""
    return EVIDENCE_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def install_host_check(app: FastAPI, site: SiteConfig) -> None:
    """Answer 400 to a Host header outside ``api.allowed_hosts``; warn when unchecked on a public bind."""
    hosts = site.api.allowed_hosts
    if "*" in hosts and site.api.host not in LOOPBACK_HOSTS:
        log.warning("api.allowed_hosts is ['*'] while the API listens on %s: the Host header is not checked; "
                    "list the names clients use (docs/api.md)", site.api.host)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)


def _finite(value: Any) -> Any:
    """``value`` with NaN/Infinity as strings (JSON has no such numbers; a request may still send them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that renders whatever a bad request echoed: lone surrogates escaped, NaN as a string."""

    def render(self, content: Any) -> bytes:
        """UTF-8 JSON like ``JSONResponse``; ``\\uXXXX`` escapes only when that cannot be encoded."""
        try:
            return super().render(content)
        except (UnicodeEncodeError, ValueError):
            return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body (``{"detail": [errors]}``), rendered so it never fails itself."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else [{"msg": str(exc)}]
    return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(errors)})


def install_validation_errors(app: FastAPI) -> None:
    """Route request validation errors through :func:`validation_error`."""
    app.add_exception_handler(RequestValidationError, validation_error)
