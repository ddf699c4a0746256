"""``scenes[]`` of the site YAML: a state-classification scene (a fixed crop + a small image classifier).

A scene is added as configuration, without code: a camera, a crop (``box`` or ``polygon``, normalised), the
classifier's states and which of them are bad, and the timings. ``gridwatch scene collect`` / the worker
gather crops, the labelling page (``/scenes/{id}/label``) labels them, ``gridwatch scene train`` writes the
model; :class:`~pipeline.scenes.rule.StateRule` alerts once a bad state has held for ``dwell_seconds``.

This module imports nothing heavy: :mod:`pipeline.config` imports it.

Example:
    >>> s = SceneConfig(id="lane_east", name="消防通道占用", camera="cam1", box=[0.1, 0.5, 0.6, 1.0],
    ...                 states=["clear", "blocked"], bad_states=["blocked"])
    >>> s.crop_polygon()
    [[0.1, 0.5], [0.6, 0.5], [0.6, 1.0], [0.1, 1.0]]
    >>> s.model_path(), s.data_path()
    ('var/scenes/lane_east/model.onnx', 'var/scenes/lane_east')
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.contract.ids import CONFIG_ID_PATTERN

SCENE_HAZARD = "scene"
"""The hazard of every scene incident (``Hazard.SCENE``), and the zone kind of a scene without ``kind``."""
STATE_PATTERN = r"^[A-Za-z0-9_\-]{1,40}$"
"""A state name: one file-name-safe word (it names label files and appears in incident details)."""

ScenePoint = Annotated[list[float], Field(min_length=2, max_length=2)]


class SceneConfig(BaseModel):
    """One state-classification scene (e.g. fire lane ``clear`` / ``blocked``, bin ``normal`` / ``overflowing``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Scene id, unique in the site (also the incident's zone id), e.g. `fire_lane_3`.",
                    pattern=CONFIG_ID_PATTERN, max_length=64)
    name: str | None = Field(default=None, max_length=100,
                             description="Display name shown to operators, e.g. `消防通道占用` or `垃圾满溢`.")
    kind: str | None = Field(
        default=None, pattern=CONFIG_ID_PATTERN, max_length=40,
        description="What the crop shows, for operators and the alert's zone kind, e.g. `fire_lane` or `bin`; "
        "unset = `scene`.")
    camera: str = Field(description="Id of the camera whose frames are cropped (one of the site YAML's, or one "
                        "added at run time: the scene waits for it).")
    box: list[float] | None = Field(
        default=None, min_length=4, max_length=4,
        description="Crop [x1, y1, x2, y2] in normalised 0..1 image coordinates (or give `polygon`).")
    polygon: list[ScenePoint] | None = Field(
        default=None,
        description="Crop polygon [[x, y], ...] (normalised): the classifier sees its bounding box with the "
        "outside greyed out. Give `box` or `polygon`.")
    states: list[Annotated[str, Field(pattern=STATE_PATTERN)]] = Field(
        min_length=2, description="The classifier's states, e.g. [clear, blocked].")
    bad_states: list[str] = Field(
        min_length=1, description="States that are a hazard (alert once one holds for `dwell_seconds`).")
    model: str | None = Field(
        default=None,
        description="ONNX classifier (written by `gridwatch scene train`), relative to the config file; unset "
        "= `<data_dir>/model.onnx`. Missing = the scene only collects crops.")
    data_dir: str | None = Field(
        default=None, description="Folder of the scene's crops, labels and model card, relative to the config "
        "file; unset = `var/scenes/<id>`.")
    min_score: float = Field(
        default=0.6, ge=0, le=1,
        description="A frame counts as a bad state only when the classifier's probability of the bad states "
        "reaches this.")
    dwell_seconds: float = Field(default=60.0, ge=0,
                                 description="How long a bad state must hold before an alert opens.")
    clear_seconds: float = Field(default=30.0, ge=0,
                                 description="The incident clears after no bad state for this long.")
    confirm_k: int = Field(default=3, ge=1, description="A bad state counts when seen in at least k ...")
    confirm_n: int = Field(default=5, ge=1, description="... of the last n judged frames (k-of-n smoothing).")
    interval_seconds: float = Field(default=2.0, ge=0,
                                    description="Classify at most one frame per this many seconds of video.")
    cooldown_seconds: float = Field(default=300.0, ge=0,
                                    description="After an incident clears, no new one opens for this long.")
    update_interval_seconds: float = Field(default=60.0, ge=0, description="Minimum seconds between `updated` "
                                           "events.")
    severity: int = Field(default=3, ge=1, le=5, description="1 (low) .. 5 (critical).")
    collect_every_seconds: float = Field(
        default=0.0, ge=0,
        description="The worker saves the scene's crop to `<data_dir>/crops` every this many seconds, for "
        "labelling (0 = off).")
    collect_max: int = Field(default=500, ge=1, le=100_000,
                             description="Crops kept in `<data_dir>/crops`; the worker stops saving beyond.")

    @field_validator("box")
    @classmethod
    def _check_box(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            x1, y1, x2, y2 = v
            if not all(0.0 <= c <= 1.0 for c in v):
                raise ValueError(f"box {v} is outside 0..1 (coordinates are normalised)")
            if x2 <= x1 or y2 <= y1:
                raise ValueError(f"box {v} needs x1 < x2 and y1 < y2")
        return v

    @field_validator("polygon")
    @classmethod
    def _check_polygon(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        if v is not None:
            if len(v) < 3:
                raise ValueError("needs at least 3 points")
            for x, y in v:
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise ValueError(f"point [{x}, {y}] is outside 0..1 (coordinates are normalised)")
        return v

    @model_validator(mode="after")
    def _check_scene(self) -> SceneConfig:
        if (self.box is None) == (self.polygon is None):
            raise ValueError("give exactly one of `box` and `polygon`")
        if len(set(self.states)) != len(self.states):
            raise ValueError(f"duplicate state in {self.states}")
        unknown = [s for s in self.bad_states if s not in self.states]
        if unknown:
            raise ValueError(f"bad_states {unknown} are not in states {self.states}")
        if len(set(self.bad_states)) == len(self.states):
            raise ValueError("every state is bad: at least one state must be good")
        if self.confirm_k > self.confirm_n:
            raise ValueError(f"confirm_k ({self.confirm_k}) must be <= confirm_n ({self.confirm_n})")
        return self

    def crop_polygon(self) -> list[list[float]]:
        """The crop as a normalised polygon (a ``box`` as its four corners)."""
        if self.polygon is not None:
            return [list(p) for p in self.polygon]
        assert self.box is not None
        x1, y1, x2, y2 = self.box
        return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]

    def data_path(self) -> str:
        """``data_dir`` or its default, as written (resolve it with ``SiteConfig.resolve_path``)."""
        return self.data_dir if self.data_dir is not None else f"var/scenes/{self.id}"

    def model_path(self) -> str:
        """``model`` or its default, as written (resolve it with ``SiteConfig.resolve_path``)."""
        return self.model if self.model is not None else f"{self.data_path()}/model.onnx"


def scene_errors(scenes: list[SceneConfig], hazards: Collection[str] = ()) -> list[str]:
    """Cross-checks of ``scenes[]`` against the site: unique ids, and ``scene`` named nowhere else (``hazards`` =
    the hazards zones, cameras and ``hazards:`` name; a scene is configured only here).

    A camera the YAML does not list is no error: cameras also come at run time from the database, and the
    worker keeps such a scene waiting until its camera runs (:mod:`pipeline.scenes.waiting`).

    Example:
        >>> s = SceneConfig(id="a", camera="cam9", box=[0, 0, 1, 1], states=["ok", "bad"], bad_states=["bad"])
        >>> scene_errors([s, s])
        ["scenes[1].id: duplicate scene id 'a'"]
    """
    out: list[str] = []
    if SCENE_HAZARD in hazards:
        out.append("hazard 'scene' is not set on zones, cameras or under hazards: add the scene under scenes[] "
                   "(docs/scenes.md)")
    seen: set[str] = set()
    for i, s in enumerate(scenes):
        if s.id in seen:
            out.append(f"scenes[{i}].id: duplicate scene id {s.id!r}")
        seen.add(s.id)
    return out


__all__ = ["SceneConfig", "scene_errors"]
