"""The command-centre web page: static HTML/JS/CSS served by the ticket API.

``install_web(app)`` adds ``GET /`` (the page) and ``/static/*`` (its script and style sheet). The page
is dependency-free (no CDN: sites often have no internet) and only calls the public REST API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["web"])


APP_INDEX = STATIC_DIR / "app" / "index.html"
"""The built front end (``web/``: ``npm ci && npm run build``), served for its screens below."""


@router.get("/wall", response_class=FileResponse, include_in_schema=False)
@router.get("/m", response_class=FileResponse, include_in_schema=False)
def app_screen() -> FileResponse:
    """The command-centre wall (``/wall``) and the patrol phone page (``/m``): one built single-page app."""
    return FileResponse(APP_INDEX, media_type="text/html", headers=_NO_CACHE)


@router.get("/", response_class=FileResponse, include_in_schema=False)
def index() -> FileResponse:
    """The command-centre page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)


def install_web(app: FastAPI) -> None:
    """Mount the page and its static files on ``app``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
