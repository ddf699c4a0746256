"""Checks of one camera entry against its site, shared by the ticket API and the worker.

A camera of the run-time config is validated with the site YAML's own model
(:class:`~pipeline.config.CameraConfig`), and then, like ``SiteConfig``'s cross checks do for the YAML,
against the site it joins: its grid cell must exist, and every hazard it judges must have its detector.

Example:
    >>> from pipeline.config import SiteConfig
    >>> site = SiteConfig.model_validate({"grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d",
    ...     "children": [{"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}]})
    >>> camera_errors(site, {"id": "cam1", "url": "a.mp4", "grid": "nope"})[0]["loc"]
    ('grid',)
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pipeline.analyze.incident import Hazard
from pipeline.config import CameraConfig, SiteConfig

Errors = list[dict[str, Any]]
"""Pydantic-style errors: ``{"loc": (...), "msg": ..., "type": ...}``."""


def site_errors(site: SiteConfig, camera: CameraConfig) -> Errors:
    """What makes a valid ``camera`` unusable in ``site``: an unknown grid cell, a hazard without detector."""
    errors: Errors = []
    if camera.grid not in site._cells():
        errors.append({"loc": ("grid",), "msg": f"grid cell {camera.grid!r} is not in the site's grid",
                       "type": "value_error", "input": camera.grid})
    for hazard in sorted(camera.used_hazards()):
        rule = site.hazards.get(hazard)
        if rule is not None and rule.enabled and hazard is not Hazard.POSTER and rule.detector not in site.detectors:
            errors.append({"loc": ("hazards",), "type": "value_error", "input": hazard.value,
                           "msg": f"hazard {hazard.value!r} needs detector {rule.detector!r}, which the site does "
                           f"not define ({', '.join(site.detectors)})"})
    return errors


def camera_errors(site: SiteConfig, data: Any) -> Errors:
    """Every problem of the camera entry ``data`` (field errors first, then :func:`site_errors`)."""
    try:
        camera = CameraConfig.model_validate(data)
    except ValidationError as exc:
        return [{k: v for k, v in e.items() if k in ("loc", "msg", "type", "input")} for e in exc.errors()]
    return site_errors(site, camera)


def error_text(errors: Errors) -> str:
    """One line per error: ``loc.path: message``."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())) or '(camera)'}: {e.get('msg')}" for e in errors)
