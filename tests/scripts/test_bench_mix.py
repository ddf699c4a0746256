"""The realistic-mix benchmark's site: demo.yaml's hazards and camera layouts, the gate as asked, valid config."""

from __future__ import annotations

from pathlib import Path

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.incident import Hazard
from pipeline.config import SiteConfig
from tests.scripts_loader import load_script


def test_camera_plan_is_half_lots_half_corridors_one_in_five_busy() -> None:
    plan = load_script("bench_mix").camera_plan(100, 0.2)
    kinds = [key for _, key in plan]
    assert len(plan) == 100 and len({cam for cam, _ in plan}) == 100
    assert kinds.count("lot-busy") == kinds.count("corridor-busy") == 10
    assert kinds.count("lot-still") == kinds.count("corridor-still") == 40


def test_site_is_demo_hazards_on_every_camera_with_the_gate(tmp_path: Path) -> None:
    mix = load_script("bench_mix")
    urls = {cam: f"rtsp://127.0.0.1:1/{cam}" for cam, _ in mix.camera_plan(4, 0.5)}
    for gate in (False, True):
        site = SiteConfig.model_validate(mix.mix_site_spec(urls, 1883, tmp_path, gate))
        assert site.worker.motion_gate.enabled is gate
        lot, corridor = (CameraAnalyzer(site, site.camera(c)) for c in ("lot000", "corridor001"))
        assert {r.hazard for r in lot.rules} == {Hazard.PARKING}
        assert {r.hazard for r in corridor.rules} == {Hazard.FIRE, Hazard.CLUTTER, Hazard.POSTER}
        assert (lot.motion_gate is not None) is gate
        if corridor.motion_gate is not None:
            assert corridor.motion_gate.never_gated == frozenset({"fire"})
