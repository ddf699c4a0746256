"""Routes of the run-time camera config: cameras and zones in the database, pushed to the workers.

Admin and engineer (:data:`~pipeline.tickets.roles.OPS_ROLES`) read and change cameras inside their grid
scope (an admin: site-wide); other roles get 403. Bodies are validated with the site YAML's own models
(``CameraConfig``, ``ZoneConfig``) plus the site checks of :mod:`pipeline.camera_spec`; a 422 names the
location of each error. Every change is one audit event (``camera.create``, ``camera.replace``,
``camera.zones``, ``camera.delete``, ``cameras.import``) and goes out as retained MQTT config
(:mod:`pipeline.tickets.camera_publisher`). Endpoints are listed in docs/api.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.orm import Session

from pipeline.camera_spec import camera_errors
from pipeline.config import CameraConfig, SiteConfig, ZoneConfig
from pipeline.contract.ids import CONFIG_ID_PATTERN
from pipeline.tickets.api_contract import error_responses
from pipeline.tickets.auth import Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS, Responses
from pipeline.tickets.camera_bulk import (
    BulkFormatError,
    export_csv,
    export_yaml,
    parse_csv,
    parse_yaml,
    plan_import,
    restore_url,
    shown_spec,
)
from pipeline.tickets.camera_publisher import CameraConfigPublisher
from pipeline.tickets.camera_store import (
    CameraRow,
    camera_write_lock,
    current_revision,
    delete_camera,
    get_camera,
    list_cameras,
    put_camera,
    seed_from_site,
)
from pipeline.tickets.roles import OPS_ROLES
from pipeline.tickets.schemas import ErrorOut
from pipeline.tickets.users import Role, audit

OpsUser = Annotated[Principal, Depends(require_roles(*OPS_ROLES))]
CameraIdPath = Annotated[str, PathParam(max_length=200, pattern=CONFIG_ID_PATTERN, description="Camera id.")]
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such camera."}}
INVALID: Responses = {**error_responses(400),
                      422: {"description": "Invalid camera or zones: `detail` lists each error with its `loc`."}}
TEXT_FILES = {"application/yaml": {"schema": {}}, "text/csv": {"schema": {"type": "string"}}}
"""Media types of export and import (a YAML document parses to any value, so its schema says nothing)."""
MAX_IMPORT_BYTES = 2 * 1024 * 1024


class ZonesIn(BaseModel):
    """A camera's complete zone list (replaces the stored one)."""

    model_config = ConfigDict(extra="forbid")
    zones: list[ZoneConfig] = Field(description="Zones, polygons in normalised 0..1 image coordinates.")


class ImportReport(BaseModel):
    """What an import changed (or, with ``dry_run``, would change)."""

    dry_run: bool = Field(description="True: nothing was stored.")
    created: list[str] = Field(description="Camera ids that are new.")
    replaced: list[str] = Field(description="Camera ids whose entry changes.")
    unchanged: list[str] = Field(description="Camera ids whose entry is the same.")
    deleted: list[str] = Field(description="Camera ids deleted (only with `delete_missing`).")
    revision: int = Field(description="The config revision after the import.")


def _invalid(errors: list[dict[str, Any]], *prefix: Any) -> RequestValidationError:
    return RequestValidationError([{**e, "loc": (*prefix, *e.get("loc", ()))} for e in errors])


def _site(request: Request) -> SiteConfig:
    site: SiteConfig = request.app.state.tickets.site
    return site


def _in_scope(request: Request, user: Principal, camera: CameraConfig) -> bool:
    site = _site(request)
    return user.site_wide or (camera.grid in site._cells() and user.covers(site.grid_path(camera.grid)))


def _checked(request: Request, data: Any, stored: CameraConfig | None, *loc: Any) -> CameraConfig:
    """``data`` as a camera of this site (stored URL restored), or a 422 naming each error under ``loc``."""
    try:
        data = restore_url(data, stored) if isinstance(data, dict) else data
    except BulkFormatError as exc:
        raise _invalid([{"loc": exc.loc, "msg": str(exc), "type": "value_error"}], *loc) from None
    errors = camera_errors(_site(request), data)
    if errors:
        raise _invalid(errors, *loc)
    return CameraConfig.model_validate(data)


def _stored(session: Session, request: Request, user: Principal, camera_id: str) -> CameraRow:
    row = get_camera(session, camera_id)
    if row is None:
        raise HTTPException(404, f"camera {camera_id!r} not found")
    if not _in_scope(request, user, row.camera()):
        raise HTTPException(403, f"camera {camera_id!r} is outside your grid scope")
    return row


def _write(request: Request, change: Callable[[Session], list[CameraRow]]) -> list[CameraRow]:
    """Run ``change`` in one transaction under the camera write lock, then push the rows it changed."""
    with request.app.state.tickets.sessions() as session, session.begin(), camera_write_lock(session):
        rows = change(session)
    publisher: CameraConfigPublisher | None = request.app.state.camera_config
    if publisher is not None:
        publisher.push(rows)
    return rows


def _client(request: Request) -> str | None:
    client: str | None = request.app.state.tickets.auth.client_address(request)
    return client


def install_camera_routes(app: FastAPI) -> CameraConfigPublisher:
    """Seed the ``cameras`` table from the site YAML when the database has never had cameras, add the routes,
    and return the (not yet started) publisher, also kept on ``app.state.camera_config``."""
    st = app.state.tickets
    with st.sessions() as session, session.begin():
        seed_from_site(session, st.site)
    publisher = CameraConfigPublisher(st.site.mqtt, st.sessions, st.metrics.registry)
    app.state.camera_config = publisher

    @app.get("/cameras/export", tags=["cameras"], response_class=Response, responses={
        200: {"description": "The cameras in scope as YAML (`cameras:` list) or CSV.",
              "content": TEXT_FILES},
        **AUTH_ERRORS})
    def export_cameras(request: Request, user: OpsUser,
                       format: Annotated[Literal["yaml", "csv"], Query(description="yaml or csv.")] = "yaml",
                       credentials: Annotated[bool, Query(description="Include stream passwords (admin only); "
                                                          "default: URLs redacted (`***@`).")] = False) -> Response:
        """Every camera in the user's scope, in the site YAML's shape or as CSV (docs/api.md)."""
        if credentials and user.role is not Role.ADMIN:
            raise HTTPException(403, "only an admin may export stream credentials")
        with st.sessions() as session:
            cams = [c for c in (r.camera() for r in list_cameras(session)) if _in_scope(request, user, c)]
        if format == "csv":
            return Response(export_csv(cams, credentials), media_type="text/csv",
                            headers={"Content-Disposition": 'attachment; filename="cameras.csv"'})
        return Response(export_yaml(cams, credentials), media_type="application/yaml",
                        headers={"Content-Disposition": 'attachment; filename="cameras.yaml"'})

    @app.post("/cameras/import", response_model=ImportReport, tags=["cameras"], responses={**INVALID, **AUTH_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": TEXT_FILES}})
    async def import_cameras(
        request: Request, user: OpsUser,
        format: Annotated[Literal["yaml", "csv"] | None, Query(
            description="yaml or csv; default from the Content-Type (text/csv: csv, else yaml).")] = None,
        dry_run: Annotated[bool, Query(description="Only report what would change.")] = False,
        delete_missing: Annotated[bool, Query(description="Also delete the cameras in your scope that the file "
                                              "does not list.")] = False,
    ) -> ImportReport:
        """Create and replace the cameras of a YAML or CSV file (export's format); report what changed."""
        raw = await request.body()
        if len(raw) > MAX_IMPORT_BYTES:
            raise _invalid([{"loc": (), "msg": "larger than 2 MiB", "type": "value_error"}], "body")
        kind = format or ("csv" if "csv" in request.headers.get("content-type", "") else "yaml")
        try:
            entries = parse_csv(raw) if kind == "csv" else parse_yaml(raw)
        except BulkFormatError as exc:
            raise _invalid([{"loc": exc.loc, "msg": str(exc), "type": "value_error"}], "body") from None
        return _import(request, user, entries, dry_run, delete_missing)

    def _import(request: Request, user: Principal, entries: list[Any], dry_run: bool,
                delete_missing: bool) -> ImportReport:
        with st.sessions() as session:
            stored = {r.id: r.camera() for r in list_cameras(session)}
        incoming: list[CameraConfig] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            cid = entry.get("id") if isinstance(entry, dict) else None
            camera = _checked(request, entry, stored.get(cid) if isinstance(cid, str) else None, "body", "cameras", i)
            if camera.id in seen:
                raise _invalid([{"loc": ("id",), "msg": f"camera {camera.id!r} is listed twice",
                                 "type": "value_error"}], "body", "cameras", i)
            seen.add(camera.id)
            old = stored.get(camera.id)
            if not _in_scope(request, user, camera) or (old is not None and not _in_scope(request, user, old)):
                raise HTTPException(403, f"camera {camera.id!r} is outside your grid scope")
            incoming.append(camera)
        deletable = {cid for cid, c in stored.items() if _in_scope(request, user, c)}
        plan = plan_import(incoming, stored, delete_missing, deletable)

        def change(session: Session) -> list[CameraRow]:
            for camera in plan.writes:
                put_camera(session, camera, user.username)
            for cid in plan.deleted:
                delete_camera(session, cid, user.username)
            changed = [*(c.id for c in plan.writes), *plan.deleted]
            audit(session, user.username, "cameras.import", "cameras", _client(request), created=plan.created,
                  replaced=plan.replaced, deleted=plan.deleted, revision=current_revision(session))
            return [r for cid in changed if (r := session.get(CameraRow, cid)) is not None]

        if not dry_run and (plan.writes or plan.deleted):
            _write(request, change)
        with st.sessions() as session:
            revision = current_revision(session)
        return ImportReport(dry_run=dry_run, created=plan.created, replaced=plan.replaced, unchanged=plan.unchanged,
                            deleted=plan.deleted, revision=revision)

    @app.get("/cameras/{camera_id}/config", response_model=CameraConfig, tags=["cameras"],
             responses={**NOT_FOUND, **AUTH_ERRORS})
    def camera_config(request: Request, user: OpsUser, camera_id: CameraIdPath) -> dict[str, Any]:
        """The camera as the site YAML's camera entry (zones included; URL credentials redacted)."""
        with st.sessions() as session:
            return shown_spec(_stored(session, request, user, camera_id).camera())

    @app.put("/cameras/{camera_id}/zones", response_model=list[ZoneConfig], tags=["cameras"],
             responses={**NOT_FOUND, **INVALID, **AUTH_ERRORS})
    def put_zones(request: Request, user: OpsUser, camera_id: CameraIdPath, body: ZonesIn) -> list[ZoneConfig]:
        """Replace the camera's zones; stored, audited and pushed to its worker. Returns the saved list."""
        saved: list[ZoneConfig] = []

        def change(session: Session) -> list[CameraRow]:
            row = _stored(session, request, user, camera_id)
            try:
                camera = CameraConfig.model_validate({**row.spec, "zones": [z.model_dump(mode="json")
                                                                            for z in body.zones]})
            except ValidationError as exc:  # e.g. a zone id used twice
                raise _invalid([{"loc": (), "msg": e["msg"], "type": e["type"]} for e in exc.errors()],
                               "body", "zones") from None
            revision = put_camera(session, camera, user.username)
            audit(session, user.username, "camera.zones", f"camera:{camera_id}", _client(request),
                  revision=revision, zones=[z.id for z in camera.zones])
            saved.extend(camera.zones)
            return [row]

        _write(request, change)
        return saved

    @app.post("/cameras", response_model=CameraConfig, status_code=201, tags=["cameras"], responses={
        409: {"model": ErrorOut, "description": "A camera with this id exists."}, **INVALID, **AUTH_ERRORS})
    def create_camera(request: Request, user: OpsUser, body: CameraConfig) -> dict[str, Any]:
        """Add a camera (the site YAML's camera entry); its shard's worker starts it."""
        camera = _checked(request, body.model_dump(mode="json"), None, "body")
        if not _in_scope(request, user, camera):
            raise HTTPException(403, f"grid cell {camera.grid!r} is outside your grid scope")

        def change(session: Session) -> list[CameraRow]:
            if get_camera(session, camera.id) is not None:
                raise HTTPException(409, f"camera {camera.id!r} exists; PUT /cameras/{camera.id} replaces it")
            revision = put_camera(session, camera, user.username)
            audit(session, user.username, "camera.create", f"camera:{camera.id}", _client(request),
                  revision=revision, grid=camera.grid)
            return [r for r in [session.get(CameraRow, camera.id)] if r is not None]

        _write(request, change)
        return shown_spec(camera)

    @app.put("/cameras/{camera_id}", response_model=CameraConfig, tags=["cameras"],
             responses={**NOT_FOUND, **INVALID, **AUTH_ERRORS})
    def replace_camera(request: Request, user: OpsUser, camera_id: CameraIdPath, body: CameraConfig) -> dict[str, Any]:
        """Replace a camera's whole entry (a URL left redacted keeps the stored one); only it restarts."""
        if body.id != camera_id:
            raise _invalid([{"loc": ("id",), "msg": f"must be the path's camera id {camera_id!r}",
                             "type": "value_error"}], "body")
        saved: list[CameraConfig] = []

        def change(session: Session) -> list[CameraRow]:
            row = _stored(session, request, user, camera_id)
            camera = _checked(request, body.model_dump(mode="json"), row.camera(), "body")
            if not _in_scope(request, user, camera):
                raise HTTPException(403, f"grid cell {camera.grid!r} is outside your grid scope")
            before = row.camera()
            revision = put_camera(session, camera, user.username)
            audit(session, user.username, "camera.replace", f"camera:{camera_id}", _client(request), revision=revision,
                  fields=sorted(k for k, v in camera.model_dump(mode="json").items()
                                if before.model_dump(mode="json").get(k) != v))
            saved.append(camera)
            return [row]

        _write(request, change)
        return shown_spec(saved[0])

    @app.delete("/cameras/{camera_id}", status_code=204, response_class=Response, tags=["cameras"],
                responses={**NOT_FOUND, **AUTH_ERRORS})
    def remove_camera(request: Request, user: OpsUser, camera_id: CameraIdPath) -> Response:
        """Delete a camera; its worker stops its reader (an empty retained config message)."""

        def change(session: Session) -> list[CameraRow]:
            row = _stored(session, request, user, camera_id)
            revision = delete_camera(session, camera_id, user.username)
            audit(session, user.username, "camera.delete", f"camera:{camera_id}", _client(request), revision=revision)
            return [row]

        _write(request, change)
        return Response(status_code=204)

    return publisher
