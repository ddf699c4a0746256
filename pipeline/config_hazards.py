"""Per-hazard rule configs: the shared :class:`~pipeline.config.HazardRule` fields plus each rule's own knobs.

``hazards.<hazard>`` in the site YAML validates into the class of that hazard (:data:`HAZARD_CONFIGS`), so
every tuning knob of a rule (fire flicker and person cover, clutter person cover, poster wall learning
...) can be set there, with a description and the rule's own default. The rule factories of
:mod:`pipeline.analyze.analyzer` pass them to the rule constructors.

Example:
    >>> from pipeline.config import SiteConfig
    >>> grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    ...     {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
    >>> site = SiteConfig.model_validate({"grid": grid, "hazards": {"fire": {"min_flicker": 0.08}}})
    >>> fire = site.hazards[Hazard.FIRE]
    >>> type(fire).__name__, fire.min_flicker, fire.window_seconds, fire.confirm_k
    ('FireRuleConfig', 0.08, 10.0, 3)
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from pipeline.analyze.incident import Hazard
from pipeline.config import HazardRule

SMOKE_MIN_CONFIDENCE = 0.1
SMOKE_MIN_SCORE: float | None = 0.29
SMOKE_TILES_MODEL: str | None = None
SMOKE_TILE_MIN_SCORE = 0.91
# Smoke defaults: calibrated on train-side frames by scripts/smoke_operating_point.py (p(smoke) 0.289 keeps the
# smoke channel alone at <= 0.5 % of train and held-out negatives; docs/detectors.md, Smoke proposals).


class _Knobs(HazardRule):
    @classmethod
    def of(cls, rule: HazardRule) -> Self:
        """``rule`` as this class: itself when it already is one, else its fields with default knobs."""
        return rule if isinstance(rule, cls) else cls.model_validate(rule.model_dump())


class ParkingRuleConfig(_Knobs):
    """`hazards.parking`: the shared rule fields plus the no-parking rule's own knobs."""

    stationary_tolerance: float = Field(
        default=0.15, gt=0,
        description="A vehicle counts as standing still while its box centre stays within this fraction of "
        "its box size of where it came to rest; moving farther restarts its dwell.")
    occupancy_window: int = Field(
        default=5, ge=1,
        description="Analysed frames the occupancy count of `parking` zones with a `capacity` is a median of "
        "(a car hidden for a frame does not change it).")


class FireRuleConfig(_Knobs):
    """`hazards.fire`: the shared rule fields plus the fire/smoke rule's own knobs."""

    window_seconds: float = Field(
        default=10.0, gt=0,
        description="The `confirm_k` of `confirm_n` frames must lie within this many seconds; a flame track "
        "survives this long unseen.")
    min_flicker: float = Field(
        default=0.04, ge=0,
        description="Variation a tracked box needs to count (max of the coefficients of variation of box area "
        "and brightness, and the mean change of its content); a red lamp or sunset is static. 0 = off.")
    min_fire_colour: float = Field(
        default=0.05, ge=0, le=1,
        description="Share of fire-coloured pixels (red..yellow, saturated and bright, or white flame core) a "
        "`fire` box needs; drops blue or grey objects read as fire. 0 = off.")
    person_cover: float = Field(
        default=0.5, ge=0,
        description="A fire/smoke box covered at least this much by one person box is ignored (orange "
        "clothing, a red helmet); above 1 turns it off.")
    person_detector: str = Field(
        default="coco", description="Detector whose `person` boxes hide fire boxes (used when it ran).")
    person_min_confidence: float = Field(
        default=0.35, ge=0, le=1, description="Person boxes below this confidence hide nothing.")
    confirm_model: str | None = Field(
        default="fire-confirm",
        description="Second-stage crop classifier (fire / smoke / neither) that must confirm each box: a "
        "`models/manifest.yaml` entry name or an ONNX path relative to the config; null = off. On by default: "
        "it cuts frame false alarms at `min_confidence` 0.4 from 5 % to 1 % (docs/detectors.md, Fire second "
        "stage).")
    confirm_min_score: float = Field(
        default=0.6, ge=0, le=1,
        description="With `confirm_model`: a box counts only when the classifier's p(fire) + p(smoke) on "
        "its crop reaches this.")
    smoke_min_confidence: float = Field(
        default=SMOKE_MIN_CONFIDENCE, ge=0, le=1,
        description="With `confirm_model` and `smoke_min_score`: detector floor of `smoke` boxes, below "
        "`min_confidence` (the detector scores real smoke low). The fire detector's own `min_confidence` "
        "(detectors.fire.min_confidence) must not be above it, or the low boxes never reach the rule.")
    smoke_min_score: float | None = Field(
        default=SMOKE_MIN_SCORE, ge=0, le=1,
        description="With `confirm_model`: a `smoke` box (from `smoke_min_confidence` up) counts when the "
        "classifier's p(smoke) on its crop reaches this; calibrated on training frames to <= 0.5 % false "
        "frames (docs/detectors.md, Smoke proposals). null = smoke boxes are judged like fire boxes.")
    smoke_tiles_model: str | None = Field(
        default=SMOKE_TILES_MODEL,
        description="Smoke tile classifier (scripts/train_smoke_tiles.py; a manifest entry name or an ONNX "
        "path relative to the config): fixed overlapping tiles of the frame whose p(smoke) reaches "
        "`smoke_tile_min_score` are smoke candidates, for smoke the detector does not propose. null = off.")
    smoke_tile_min_score: float = Field(
        default=SMOKE_TILE_MIN_SCORE, ge=0, le=1,
        description="With `smoke_tiles_model`: p(smoke) a tile needs; calibrated on training frames "
        "(docs/detectors.md, Smoke proposals).")


class ClutterRuleConfig(_Knobs):
    """`hazards.clutter`: the shared rule fields plus the clutter rule's own knobs."""

    clutter_detector: str = Field(
        default="clutter",
        description="Dedicated clutter detector whose `garbage` / `overflowing_bin` boxes count too (when the "
        "site defines it).")
    person_detector: str = Field(
        default="coco",
        description="Detector whose `person` boxes are masked out of the model-free path and hide the "
        "detected objects they cover.")
    person_cover: float = Field(
        default=0.6, ge=0,
        description="A detected object covered at least this much by one person box is ignored (a bag being "
        "carried, a dark coat read as a bin); above 1 turns it off.")
    model_free: bool = Field(
        default=True, description="Also find unknown objects without a detector (static-object path).")
    stationary_tolerance: float = Field(
        default=0.15, gt=0,
        description="A detected object counts as standing still while its box centre stays within this "
        "fraction of its box size of where it came to rest.")
    work_width: int = Field(
        default=320, ge=8, le=4096,
        description="Static-object path: the frame is scaled to this width (px) for its working images "
        "(never up-scaled); sizes below are in these working pixels.")
    min_object_px: int = Field(
        default=40, ge=1,
        description="Static-object path: smallest unknown object, in working pixels (40 at the default "
        "width is a ~13x13 px object on a 640 px wide frame), whatever the zone's size.")
    change_threshold: float = Field(
        default=30.0, gt=0,
        description="Static-object path: per-pixel difference (grey levels, after gain compensation, "
        "outside the background's range within 1 working px) that counts as changed.")
    learn_frames: int = Field(
        default=5, ge=1,
        description="Static-object path: judged frames whose person-masked median is the empty zone; "
        "detector boxes seen on 2 of them are scene furniture.")
    hold_seconds: float = Field(
        default=60.0, ge=0,
        description="Static-object path: an object hidden by a person or a passer-by keeps its timer this long.")
    removal_score: float = Field(
        default=0.35, ge=0, le=1,
        description="Static-object path: a blob whose object score (0..1, how much of its outline the current "
        "frame rather than the background holds) is at most this is a removal (ghost): healed, never alerted.")
    furniture: bool = Field(
        default=True,
        description="Detector boxes seen while the zone is learned (cabinets, bins) never hide a new object.")
    not_clutter: list[str] = Field(
        default_factory=lambda: ["person", "bin", "car", "truck", "bus"],
        description="Classes whose confident box (`min_confidence`) over a static blob explains it as not "
        "clutter; other classes (a bag read as `handbag` or `cat`) never hide one.")


class PosterRuleConfig(_Knobs):
    """`hazards.poster`: the shared rule fields plus the poster rule's own knobs."""

    learn_frames: int = Field(
        default=5, ge=1, description="Judged frames whose per-pixel median is the clean wall.")
    min_confirm_k: int = Field(
        default=2, ge=1,
        description="Floor of the per-flyer confirmation: a flyer is seen in at least max(`confirm_k`, this) "
        "...")
    min_confirm_n: int = Field(
        default=3, ge=1, description="... of the last max(`confirm_n`, this) judged frames.")
    min_changed: float = Field(
        default=0.2, ge=0, le=1,
        description="Share of a text box's pixels that must differ from the learned wall for it to be a "
        "candidate.")
    change_threshold: float = Field(
        default=28.0, gt=0,
        description="Per-pixel difference (grey levels, after gain compensation) that counts as changed.")
    adapt_step: float = Field(
        default=1.0, ge=0,
        description="Grey levels per judged frame the wall background moves towards the image outside "
        "flyers (slow dirt and lighting drift); 0 = never adapt.")
    reread_seconds: float = Field(
        default=600.0, gt=0, description="How often a confirmed flyer is read again with full OCR.")

    @model_validator(mode="after")
    def _floor_k_le_n(self) -> PosterRuleConfig:
        if self.min_confirm_k > self.min_confirm_n:
            raise ValueError(f"min_confirm_k ({self.min_confirm_k}) must be <= min_confirm_n ({self.min_confirm_n})")
        return self


HAZARD_CONFIGS: dict[Hazard, type[HazardRule]] = {
    Hazard.PARKING: ParkingRuleConfig,
    Hazard.FIRE: FireRuleConfig,
    Hazard.CLUTTER: ClutterRuleConfig,
    Hazard.POSTER: PosterRuleConfig,
}
"""The config class of each hazard's ``hazards.<hazard>`` entry."""


def as_hazard_config(hazard: Hazard, rule: HazardRule | dict[str, Any]) -> HazardRule:
    """``rule`` (fields or a model) validated as the config class of ``hazard``."""
    cls = HAZARD_CONFIGS.get(hazard, HazardRule)
    if isinstance(rule, cls):
        return rule
    return cls.model_validate(rule.model_dump() if isinstance(rule, HazardRule) else rule)


def hazards_json_schema(schema: dict[str, Any]) -> None:
    """Make the JSON Schema of ``hazards`` list each hazard's own config class (with its knobs)."""
    schema["properties"] = {h.value: cls.model_json_schema() for h, cls in HAZARD_CONFIGS.items()}


__all__ = ["ClutterRuleConfig", "FireRuleConfig", "HAZARD_CONFIGS", "ParkingRuleConfig", "PosterRuleConfig",
           "as_hazard_config", "hazards_json_schema"]
