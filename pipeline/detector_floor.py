"""The score floor a detector runs at, where a rule needs lower boxes than the detector's default floor.

The fire rule takes ``smoke`` boxes from ``hazards.fire.smoke_min_confidence`` (0.1) up, below the detectors'
default ``min_confidence`` (0.25) that drops boxes before any rule sees them. A fire detector whose
``min_confidence`` is left unset therefore runs at the rule's lower floor; one set explicitly above it keeps
its setting, and ``check-config`` warns (:mod:`pipeline.analyze.fire_checks`).

Example:
    >>> from pipeline.config import SiteConfig
    >>> grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    ...     {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
    >>> site = SiteConfig.model_validate({"grid": grid, "detectors": {"fire": {"model": "f.onnx"}}})
    >>> detector_floor(site, "fire", site.detectors["fire"])
    0.1
"""

from __future__ import annotations

from pipeline.analyze.incident import Hazard
from pipeline.config import DetectorConfig, SiteConfig
from pipeline.config_hazards import FireRuleConfig


def fire_smoke_floor(site: SiteConfig, detector: str) -> float | None:
    """The lowest score the fire rule reads from ``detector`` (None: the rule does not use it or is off)."""
    rule = site.hazards.get(Hazard.FIRE)
    if rule is None or not rule.enabled:
        return None
    cfg = FireRuleConfig.of(rule)
    if cfg.detector != detector:
        return None
    if cfg.smoke_min_score is None or cfg.confirm_model is None:
        return float(cfg.min_confidence)
    return float(min(cfg.smoke_min_confidence, cfg.min_confidence))


def detector_floor(site: SiteConfig, name: str, cfg: DetectorConfig) -> float:
    """``cfg.min_confidence``, or the fire rule's lower floor when ``min_confidence`` was left unset."""
    if "min_confidence" in cfg.model_fields_set:
        return cfg.min_confidence
    floor = fire_smoke_floor(site, name)
    return cfg.min_confidence if floor is None else min(cfg.min_confidence, floor)


__all__ = ["detector_floor", "fire_smoke_floor"]
