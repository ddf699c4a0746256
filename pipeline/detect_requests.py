"""Turn an analyzer's :class:`~pipeline.analyze.analyzer.DetectRequest` list into detector runs.

Shared by the live worker (which batches full-frame runs over cameras) and ``gridwatch replay`` (one
frame at a time), so a replayed clip is detected exactly as a live camera is.

Example:
    >>> from pipeline.analyze.analyzer import DetectRequest
    >>> plan = split_requests([DetectRequest("coco", None), DetectRequest("fire", (0, 0, 64, 64)),
    ...                        DetectRequest("coco", (0, 0, 8, 8)), DetectRequest("bad", None)], {"bad"})
    >>> plan.whole, plan.regions, plan.blocked
    ({'coco'}, {'fire': [(0, 0, 64, 64)]}, ['bad'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipeline.detect.detections import Detections

if TYPE_CHECKING:
    from pipeline.analyze.analyzer import DetectRequest
    from pipeline.detect.registry import DetectorRegistry

Region = tuple[int, int, int, int]


@dataclass
class RequestPlan:
    """What to run on one frame.

    Attributes:
        whole: detectors to run on the whole frame (a full-frame request wins over that detector's regions).
        regions: detector -> crop regions (x1, y1, x2, y2 pixels), for detectors not in ``whole``.
        blocked: requested detectors left out because they are broken, in request order.
    """

    whole: set[str] = field(default_factory=set)
    regions: dict[str, list[Region]] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)


def split_requests(requests: Iterable[DetectRequest], broken: Iterable[str] = ()) -> RequestPlan:
    """Group ``requests`` into whole-frame runs and per-detector crop regions, leaving out ``broken`` ones."""
    bad = set(broken)
    plan = RequestPlan()
    for req in requests:
        if req.detector in bad:
            if req.detector not in plan.blocked:
                plan.blocked.append(req.detector)
            continue
        if req.region is None:
            plan.whole.add(req.detector)
        else:
            plan.regions.setdefault(req.detector, []).append(req.region)
    for name in plan.whole:
        plan.regions.pop(name, None)
    return plan


def detect_requests(registry: DetectorRegistry, image: np.ndarray, requests: Sequence[DetectRequest],
                    broken: Iterable[str] = ()) -> tuple[dict[str, Detections], list[str]]:
    """Run ``requests`` on one BGR frame as the worker does.

    Whole-frame detectors go through ``detect_batch`` (as the worker's cross-camera batches do), crops
    through ``detect_regions``.

    Returns:
        ({detector name: Detections in full-frame pixels}, names left out because they are in ``broken``).
    """
    plan = split_requests(requests, broken)
    out: dict[str, Detections] = {}
    for name in sorted(plan.whole):
        out[name] = registry.get(name).detect_batch([image])[0]
    for name, regs in plan.regions.items():
        out[name] = registry.get(name).detect_regions(image, regs)
    return out, plan.blocked
