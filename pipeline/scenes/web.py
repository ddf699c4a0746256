"""The scene labelling page, served by the ticket API (admin and engineer; camera in their grid scope).

| route | what |
|---|---|
| ``GET /scenes`` | the scenes, with crops collected / labelled and the model card's held-out accuracy |
| ``GET /scenes/{scene_id}/label`` | the page (a shell without data, like ``/``): crops newest first, click a state |
| ``GET /scenes/{scene_id}/crops`` | ``{scene, name, states, bad_states, crops: [{name, ts, state}]}`` |
| ``GET /scenes/{scene_id}/crops/{crop}`` | one crop (JPEG) |
| ``PUT /scenes/{scene_id}/labels/{crop}`` | body ``{"state": "<state>" or null}``; saved to ``labels.json`` |

The page is one self-contained HTML file (no build, no CDN) using the same session cookie as the other pages;
it logs in with ``POST /auth/login`` when the cookie is missing. Crops come from the scene's data dir, which
the API must see (same machine or a shared volume as the worker / ``gridwatch scene collect``).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import SiteConfig
from pipeline.scenes.config import STATE_PATTERN, SceneConfig
from pipeline.scenes.store import SceneStore
from pipeline.tickets.api_contract import error_responses
from pipeline.tickets.auth import Principal, require_roles
from pipeline.tickets.auth_routes import AUTH_ERRORS
from pipeline.tickets.camera_store import camera_grid_path
from pipeline.tickets.roles import OPS_ROLES

PAGE = FilePath(__file__).resolve().parents[1] / "web" / "static" / "scene-label.html"
"""The page shell (no data in it; served to anyone, like ``/`` and ``/wall``: it logs in itself)."""
_NO_STORE = {"Cache-Control": "no-store"}
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such scene or crop."}, **AUTH_ERRORS}
SceneId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
CropName = Annotated[str, Path(max_length=40, pattern=r"^\d{10,14}\.jpg$")]
OpsUser = Annotated[Principal, Depends(require_roles(*OPS_ROLES))]


class CropOut(BaseModel):
    """One crop of a scene."""

    name: str = Field(description="File name (Unix ms + .jpg).")
    ts: float = Field(description="Capture time, Unix seconds.")
    state: str | None = Field(description="Its label, or null.")


class SceneCropsOut(BaseModel):
    """A scene and its crops (newest first)."""

    scene: str
    name: str | None
    camera: str
    states: list[str]
    bad_states: list[str]
    crops: list[CropOut]


class SceneOut(BaseModel):
    """A scene in the list."""

    scene: str
    name: str | None
    camera: str
    states: list[str]
    bad_states: list[str]
    crops: int
    labelled: int
    model: bool = Field(description="Whether a trained model file exists.")
    accuracy: float | None = Field(description="Held-out accuracy of the last training (model card), or null.")


class LabelIn(BaseModel):
    """A crop's new label."""

    model_config = ConfigDict(extra="forbid")
    state: str | None = Field(description="A state of the scene, or null to remove the label.",
                              pattern=STATE_PATTERN)


class LabelOut(BaseModel):
    name: str
    state: str | None


def install_scenes(app: FastAPI, site: SiteConfig) -> None:
    """Add the scene labelling routes to ``app``."""
    scenes = {s.id: s for s in site.scenes}

    def camera_path(camera_id: str) -> list[str] | None:
        # The cameras table, not the YAML: a scene's camera may be added or moved at run time.
        with app.state.tickets.sessions() as session:
            return camera_grid_path(session, site, camera_id)

    def store_of(scene_id: str, user: Principal) -> tuple[SceneConfig, SceneStore]:
        scene = scenes.get(scene_id)
        if scene is None:
            raise HTTPException(404, f"unknown scene {scene_id!r}")
        if not user.covers(camera_path(scene.camera)):
            raise HTTPException(403, f"scene {scene_id!r} is on a camera outside your grid scope")
        return scene, SceneStore(scene, site.resolve_path(scene.data_path()))

    @app.get("/scenes", response_model=list[SceneOut], tags=["scenes"], responses=AUTH_ERRORS)
    def list_scenes(user: OpsUser) -> list[SceneOut]:
        """The scenes on cameras in your scope (admin, engineer)."""
        out: list[SceneOut] = []
        for s in scenes.values():
            if not user.covers(camera_path(s.camera)):
                continue
            store = SceneStore(s, site.resolve_path(s.data_path()))
            crops = store.crops()
            card = store.card() or {}
            ev = card.get("evaluation")
            acc = ev.get("accuracy") if isinstance(ev, dict) else None
            out.append(SceneOut(scene=s.id, name=s.name, camera=s.camera, states=s.states, bad_states=s.bad_states,
                                crops=len(crops), labelled=sum(1 for c in crops if c.state),
                                model=site.resolve_path(s.model_path()).is_file(),
                                accuracy=float(acc) if isinstance(acc, int | float) else None))
        return out

    @app.get("/scenes/{scene_id}/label", response_class=HTMLResponse, include_in_schema=False)
    def label_page(scene_id: SceneId) -> FileResponse:
        """The labelling page of a scene: a shell without data (its script loads the crops as the logged-in
        admin or engineer, or shows a login form), so it answers the same for every id."""
        return FileResponse(PAGE, media_type="text/html", headers=_NO_STORE)

    @app.get("/scenes/{scene_id}/crops", response_model=SceneCropsOut, tags=["scenes"], responses=_ERRORS)
    async def scene_crops(scene_id: SceneId, user: OpsUser) -> SceneCropsOut:
        """The scene's crops, newest first, with their labels."""
        scene, store = store_of(scene_id, user)
        try:
            crops = await run_in_threadpool(store.crops)
        except ValueError as e:  # a corrupt labels.json: say which file, lose nothing
            raise HTTPException(500, str(e)) from None
        return SceneCropsOut(scene=scene.id, name=scene.name, camera=scene.camera, states=scene.states,
                             bad_states=scene.bad_states,
                             crops=[CropOut(name=c.name, ts=c.ts, state=c.state) for c in reversed(crops)])

    @app.get("/scenes/{scene_id}/crops/{crop}", response_class=FileResponse, tags=["scenes"],
             responses={200: {"content": {"image/jpeg": {}}, "description": "The crop."}, **_ERRORS})
    def crop_image(scene_id: SceneId, crop: CropName, user: OpsUser) -> FileResponse:
        """One crop of the scene (JPEG)."""
        _, store = store_of(scene_id, user)
        try:
            path = store.crop_path(crop)
        except KeyError:
            raise HTTPException(404, f"scene {scene_id!r} has no crop {crop!r}") from None
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.put("/scenes/{scene_id}/labels/{crop}", response_model=LabelOut, tags=["scenes"],
             responses={**error_responses(400), 422: {"description": "Not a state of the scene."}, **_ERRORS})
    def set_label(scene_id: SceneId, crop: CropName, body: LabelIn, user: OpsUser) -> LabelOut:
        """Label one crop with a state of the scene (null removes the label)."""
        _, store = store_of(scene_id, user)
        try:
            state = store.set_label(crop, body.state)
        except KeyError:
            raise HTTPException(404, f"scene {scene_id!r} has no crop {crop!r}") from None
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return LabelOut(name=crop, state=state)


__all__ = ["install_scenes"]
