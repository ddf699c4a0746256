"""``GET /cameras/{camera_id}/debug.jpg``: a camera's latest analysed frame with detections, zones and rule
state drawn, fetched on demand from the worker running it (see :mod:`pipeline.debug_view`)."""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from pipeline.config import SiteConfig
from pipeline.debug_view import DebugRequester, DebugUnavailable
from pipeline.tickets.auth import Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.camera_store import camera_grid_path
from pipeline.tickets.roles import DEBUG_ROLES

DEFAULT_TIMEOUT_S = 5.0
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such camera, or its worker had no analysed frame within the wait."},
    503: {"description": "The API is not connected to the MQTT broker."},
    504: {"description": "No worker answered in time (is the camera's worker running?)."},
}


def _requester(request: Request, site: SiteConfig) -> DebugRequester:
    req: DebugRequester | None = getattr(request.app.state, "debug_requester", None)
    if req is None:
        req = DebugRequester(site.mqtt, f"gridwatch-api-debug-{os.getpid()}-{id(request.app)}")
        request.app.state.debug_requester = req
    return req


def install_debug(app: FastAPI, site: SiteConfig) -> None:
    """Add the debug picture route to ``app`` (its MQTT client connects on the first request)."""
    @app.get("/cameras/{camera_id}/debug.jpg", tags=["cameras"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "The debug picture."}, **_ERRORS,
                        **AUTH_ERRORS})
    async def camera_debug(request: Request, user: Annotated[Principal, Depends(require_roles(*DEBUG_ROLES))],
                           camera_id: Annotated[str, Path(max_length=128)],
                           timeout: Annotated[float, Query(ge=0.1, le=30, description="Seconds to wait for "
                                                           "the worker.")] = DEFAULT_TIMEOUT_S) -> Response:
        """The camera's latest analysed frame with every detection box, its zones (red while an incident
        is open there) and one line of state per rule, drawn by the worker running the camera (admin,
        engineer, dispatcher; camera in scope)."""
        with request.app.state.tickets.sessions() as session:  # the run-time camera config
            grid_path = camera_grid_path(session, site, camera_id)
        if grid_path is None:
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        if not user.covers(grid_path):
            raise HTTPException(403, f"camera {camera_id!r} is outside your grid scope")
        try:
            jpeg = await run_in_threadpool(_requester(request, site).fetch, camera_id, timeout)
        except DebugUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        if jpeg is None:
            raise HTTPException(504, f"no worker answered for camera {camera_id!r} within {timeout:g} s "
                                "(is its worker running and connected to the broker?)")
        if not jpeg:
            raise HTTPException(404, f"camera {camera_id!r} has no analysed frame yet (is it streaming?)")
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
