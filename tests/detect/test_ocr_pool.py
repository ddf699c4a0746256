"""The poster rules of a site's cameras share a pool of OCR engines (one per analysis thread)."""

from __future__ import annotations

from pipeline.analyze.analyzer import CameraAnalyzer
from pipeline.analyze.poster import PosterRule
from pipeline.config import SiteConfig
from pipeline.detect.ocr import TextDetector

WALL = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]


def site(cameras: int, threads: int) -> SiteConfig:
    return SiteConfig.model_validate({
        "grid": [{"code": "T", "name": "t", "children": [{"code": "D", "name": "d", "children": [
            {"code": "C", "name": "c", "children": [{"code": "G", "name": "g"}]}]}]}],
        "cameras": [{"id": f"cam{i}", "url": "x.mp4", "grid": "G",
                     "zones": [{"id": "wall", "kind": "wall", "polygon": WALL}]} for i in range(cameras)],
        "worker": {"analysis_threads": threads}})


def engines(s: SiteConfig) -> list[TextDetector]:
    out = []
    for cam in s.cameras:
        rules = [r for r in CameraAnalyzer(s, cam).rules if isinstance(r, PosterRule)]
        assert len(rules) == 1
        out.append(rules[0].detector)
    return out


def test_cameras_of_one_site_share_at_most_one_engine_per_analysis_thread() -> None:
    s = site(12, 2)
    first = engines(s)
    assert len({id(e) for e in first}) == 2
    assert [id(e) for e in engines(s)] == [id(e) for e in first], "a camera keeps its engine"
    other = engines(site(12, 2))
    assert not {id(e) for e in first} & {id(e) for e in other}, "two sites never share"
    assert not any(e.loaded for e in first)  # lazy until a poster frame
