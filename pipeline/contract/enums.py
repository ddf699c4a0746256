"""Leaf enums shared by every message: which hazard, which incident event.

They live here (not in :mod:`pipeline.analyze.incident`, which re-exports them) so that the message
models and everything that reads them depend on nothing else in ``pipeline``.

Example:
    >>> Hazard("fire"), IncidentEvent.CLEARED.value
    (<Hazard.FIRE: 'fire'>, 'cleared')
"""

from __future__ import annotations

from enum import StrEnum


class Hazard(StrEnum):
    """The hazards gridwatch detects."""

    PARKING = "parking"
    FIRE = "fire"
    CLUTTER = "clutter"
    POSTER = "poster"
    SCENE = "scene"
    """A state-classification scene of the site config (``scenes[]``: its id is the zone id, details name it)."""


class IncidentEvent(StrEnum):
    """What happened to an incident: it was opened, is still present (updated), or is gone (cleared)."""

    OPENED = "opened"
    UPDATED = "updated"
    CLEARED = "cleared"
