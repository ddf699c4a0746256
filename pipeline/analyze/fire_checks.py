"""Site checks of the fire rule's settings that validation alone cannot see (printed by ``check-config``).

Example:
    >>> from pipeline.config import SiteConfig
    >>> grid = [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
    ...     {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]
    >>> site = SiteConfig.model_validate({"grid": grid, "detectors": {"fire": {"model": "f.onnx",
    ...                                                                    "min_confidence": 0.25}}})
    >>> smoke_floor_warnings(site)[0].startswith("detectors.fire.min_confidence 0.25")
    True
"""

from __future__ import annotations

from pipeline.analyze.incident import Hazard
from pipeline.config import SiteConfig
from pipeline.config_hazards import FireRuleConfig
from pipeline.detector_floor import detector_floor


def smoke_floor_warnings(site: SiteConfig) -> list[str]:
    """A warning when the fire detector's own score floor, set explicitly, hides the rule's smoke proposals.

    The fire rule takes ``smoke`` boxes from ``hazards.fire.smoke_min_confidence`` (0.1) up, but a detector
    drops every box below its ``min_confidence`` before any rule sees it. Left unset, the fire detector runs
    at the rule's floor (:func:`pipeline.detector_floor.detector_floor`); set above it, it keeps its setting.
    """
    rule = site.hazards.get(Hazard.FIRE)
    if rule is None or not rule.enabled:
        return []
    cfg = FireRuleConfig.of(rule)
    det = site.detectors.get(cfg.detector)
    if det is None or cfg.smoke_min_score is None or cfg.confirm_model is None:
        return []
    floor = min(cfg.smoke_min_confidence, cfg.min_confidence)
    if detector_floor(site, cfg.detector, det) <= floor:
        return []
    return [f"detectors.{cfg.detector}.min_confidence {det.min_confidence:g} is above "
            f"hazards.fire.smoke_min_confidence {floor:g}: smoke boxes scoring between them never reach the "
            f"fire rule (set detectors.{cfg.detector}.min_confidence to {floor:g}; docs/detectors.md, Smoke "
            "proposals)"]


__all__ = ["smoke_floor_warnings"]
