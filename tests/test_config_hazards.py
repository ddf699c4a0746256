"""Per-hazard rule configs: every rule knob reaches the site YAML, with the rule's own default."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.clutter import ClutterRule
from pipeline.analyze.fire import FireRule
from pipeline.analyze.incident import Hazard
from pipeline.analyze.parking import NoParkingRule
from pipeline.analyze.poster import PosterRule
from pipeline.config import HazardRule, SiteConfig
from pipeline.config_hazards import (
    HAZARD_CONFIGS,
    ClutterRuleConfig,
    FireRuleConfig,
    ParkingRuleConfig,
    PosterRuleConfig,
)

GRID = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
BOX = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]


def site(hazards: dict[str, Any] | None = None) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": GRID, "hazards": hazards or {},
        "detectors": {"coco": {"model": "m.onnx"}, "fire": {"model": "f.onnx"}},
        "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G", "hazards": ["fire"], "zones": [
            {"id": "lane", "kind": "no_parking", "polygon": BOX},
            {"id": "hall", "kind": "corridor", "polygon": BOX},
            {"id": "wall", "kind": "wall", "polygon": BOX},
            {"id": "bays", "kind": "parking", "capacity": 3, "polygon": BOX}]}]})


# knob -> (rule class, constructor argument); the knob's default must be the constructor's
KNOBS: dict[type[HazardRule], tuple[type, dict[str, str]]] = {
    ParkingRuleConfig: (NoParkingRule, {"stationary_tolerance": "stationary_tolerance"}),
    FireRuleConfig: (FireRule, {k: k for k in ("window_seconds", "min_flicker", "min_fire_colour", "person_cover",
                                                "person_detector", "person_min_confidence")}),
    ClutterRuleConfig: (ClutterRule, {k: k for k in ("clutter_detector", "person_detector", "person_cover",
                                                      "model_free", "stationary_tolerance")}),
    PosterRuleConfig: (PosterRule, {k: k for k in ("learn_frames", "min_changed", "reread_seconds",
                                                    "change_threshold", "adapt_step")}),
}


@pytest.mark.parametrize("cfg_cls", list(KNOBS))
def test_knob_defaults_are_the_rule_constructor_defaults(cfg_cls: type[HazardRule]) -> None:
    rule_cls, args = KNOBS[cfg_cls]
    params = inspect.signature(rule_cls.__init__).parameters
    cfg = cfg_cls()
    for knob, arg in args.items():
        assert getattr(cfg, knob) == params[arg].default, (cfg_cls.__name__, knob)
    for name, field in cfg_cls.model_fields.items():
        if name not in HazardRule.model_fields:
            assert field.description, f"{cfg_cls.__name__}.{name} has no description"


def test_poster_confirm_floor_default() -> None:
    default = inspect.signature(PosterRule.__init__).parameters["min_confirm"].default
    assert (PosterRuleConfig().min_confirm_k, PosterRuleConfig().min_confirm_n) == default


def test_each_hazard_validates_into_its_class_with_the_old_defaults() -> None:
    s = site()
    assert {h: type(r) for h, r in s.hazards.items()} == HAZARD_CONFIGS
    fire = s.hazards[Hazard.FIRE]
    assert (fire.detector, fire.confirm_k, fire.confirm_n, fire.severity) == ("fire", 3, 5, 5)
    assert s.hazards[Hazard.POSTER].analysis_interval_seconds == 5.0


def test_yaml_knobs_reach_the_rules() -> None:
    s = site({"parking": {"stationary_tolerance": 0.3, "occupancy_window": 9},
              "fire": {"window_seconds": 6, "min_flicker": 0.1, "min_fire_colour": 0.2, "person_cover": 0.7,
                       "person_min_confidence": 0.5},
              "clutter": {"person_cover": 0.9, "model_free": False, "clutter_detector": "coco"},
              "poster": {"learn_frames": 3, "min_confirm_k": 3, "min_confirm_n": 4, "min_changed": 0.4,
                         "change_threshold": 40, "adapt_step": 0, "reread_seconds": 60}})
    a = CameraAnalyzer(s, s.cameras[0])
    by = {type(r).__name__: r for r in a.rules}
    park, fire, clutter, poster = by["NoParkingRule"], by["FireRule"], by["ClutterRule"], by["PosterRule"]
    assert isinstance(park, NoParkingRule) and park.tracker.stationary_tolerance == 0.3
    assert a.counters[0].counts.maxlen == 9
    assert isinstance(fire, FireRule)
    assert (fire.window_seconds, fire.min_flicker, fire.min_fire_colour, fire.person_cover,
            fire.person_min_confidence) == (6.0, 0.1, 0.2, 0.7, 0.5)
    assert isinstance(clutter, ClutterRule) and clutter.person_cover == 0.9 and clutter.model_free is False
    assert clutter.clutter_detector == "coco"
    assert isinstance(poster, PosterRule)
    assert (poster.reference.learn_frames, poster.k, poster.n, poster.min_changed) == (3, 3, 4, 0.4)
    assert (poster.reference.change_threshold, poster.reference.adapt_step, poster.reread_seconds) == (40, 0, 60)


def test_zone_overrides_keep_the_knobs() -> None:
    s = SiteConfig.model_validate({"grid": GRID, "hazards": {"parking": {"stationary_tolerance": 0.25}},
                                   "cameras": [{"id": "cam1", "url": "x.mp4", "grid": "G", "zones": [
                                       {"id": "lane", "kind": "no_parking", "polygon": BOX,
                                        "overrides": {"parking": {"dwell_seconds": 5}}}]}]})
    (r,) = CameraAnalyzer(s, s.cameras[0]).rules
    assert isinstance(r, NoParkingRule) and r.rule.dwell_seconds == 5 and r.tracker.stationary_tolerance == 0.25


@pytest.mark.parametrize(("hazards", "loc", "msg"), [
    ({"fire": {"min_flicker": -1}}, ("hazards", "fire", "min_flicker"), "greater than or equal to 0"),
    ({"parking": {"min_flicker": 0.1}}, ("hazards", "parking", "min_flicker"), "Extra inputs"),
    ({"poster": {"min_confirm_k": 4}}, ("hazards", "poster"), "min_confirm_k (4) must be <= min_confirm_n (3)"),
    ({"parking": {"confirm_k": 4, "confirm_n": 2}}, ("hazards", "parking"), "confirm_k (4) must be <= confirm_n"),
])
def test_bad_knobs_name_their_path(hazards: dict[str, Any], loc: tuple[str, ...], msg: str) -> None:
    with pytest.raises(ValidationError) as e:
        site(hazards)
    errors = e.value.errors()
    assert any(err["loc"] == loc and msg in err["msg"] for err in errors), errors


def test_dump_and_reload_keeps_the_knobs() -> None:
    s = site({"fire": {"min_flicker": 0.09}})
    dumped = s.model_dump(mode="json")
    assert dumped["hazards"]["fire"]["min_flicker"] == 0.09
    again = SiteConfig.model_validate(dumped)
    assert again.hazards[Hazard.FIRE] == s.hazards[Hazard.FIRE]


def test_json_schema_lists_each_hazards_knobs() -> None:
    props = SiteConfig.model_json_schema()["properties"]["hazards"]["properties"]
    assert set(props) == {h.value for h in HAZARD_CONFIGS}
    assert props["fire"]["properties"]["min_flicker"]["default"] == 0.04
    assert "min_flicker" not in props["parking"]["properties"]
    assert props["poster"]["additionalProperties"] is False


def test_a_base_rule_gets_default_knobs() -> None:
    base = HazardRule(detector="fire", confirm_k=2, confirm_n=4)
    cfg = FireRuleConfig.of(base)
    assert (cfg.confirm_k, cfg.confirm_n, cfg.min_flicker) == (2, 4, 0.04)
    assert FireRuleConfig.of(cfg) is cfg
