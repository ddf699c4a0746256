"""Shared pieces of the scene tests: a tiny real scene model (brightness -> state) and a site with one scene."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.config import SiteConfig
from pipeline.scenes.onnx_graph import FEATURES, INPUT, with_head
from tests.fixtures.scene_media import scene_media as scene_media  # noqa: F401 - fixture
from tests.tickets.conftest import CAMERAS, GRID

T0 = 1_796_000_000.25
"""Unix time of the first test frame (float64 matters: a float32 holds only multiples of 128 s here)."""


def brightness_model(path: Path, states: tuple[str, ...] = ("clear", "blocked"), size: int = 32) -> Path:
    """A real scene model (one ONNX graph, the runtime's format) whose features are the crop's mean RGB: a
    bright crop (mean > 0.5) is the last state, a dark one the first."""
    nodes = [helper.make_node("GlobalAveragePool", [INPUT], ["gap"]),
             helper.make_node("Flatten", ["gap"], [FEATURES], axis=1)]
    graph = helper.make_graph(nodes, "brightness",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                              [helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", 3])])
    feats = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    k = len(states)
    weight = np.zeros((3, k), np.float32)
    weight[:, -1], weight[:, 0] = 10.0, -10.0
    bias = np.zeros(k, np.float32)
    bias[-1], bias[0] = -15.0, 15.0  # 3 channels * 10 * 0.5
    model = with_head(feats, np.zeros(3), np.ones(3), weight, bias,
                      {"states": list(states), "input_size": size, "scene": "test"})
    onnx.save(model, str(path))
    return path


def scene_site(tmp_path: Path, **scene: Any) -> SiteConfig:
    """The ticket tests' grid and cameras plus one scene ``lane`` on ``cam1`` (fields overridable)."""
    entry = {"id": "lane", "name": "消防通道占用", "camera": "cam1", "box": [0.0, 0.5, 1.0, 1.0],
             "states": ["clear", "blocked"], "bad_states": ["blocked"], "dwell_seconds": 10, "clear_seconds": 6,
             "confirm_k": 2, "confirm_n": 3, "interval_seconds": 1.0, "data_dir": str(tmp_path / "lane"),
             **scene}
    site = SiteConfig.model_validate({
        "grid": GRID, "cameras": CAMERAS, "scenes": [entry],
        "api": {"database_url": f"sqlite:///{tmp_path}/tickets.db", "evidence_dir": str(tmp_path / "evidence")},
        "mqtt": {"topic_prefix": "gwtest"}})
    site.base_dir = str(tmp_path)
    return site


@pytest.fixture
def site(tmp_path: Path) -> SiteConfig:
    return scene_site(tmp_path)


@pytest.fixture(scope="session")
def floor_model(tmp_path_factory: pytest.TempPathFactory, scene_media: Any, shared_dir: Path) -> Path:
    """A floor scene model trained (library call, no CLI) on the first 70 s of the corridor clip."""
    from pipeline.scenes.crop import cut_crop
    from pipeline.scenes.train import Sample, train_scene
    from tests.fixtures.scene_media import SCENE_BOX, SPLIT_S

    x1, y1, x2, y2 = SCENE_BOX
    poly = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
    samples = [Sample(cut_crop(img, poly), T0 + t, scene_media.state(t)) for t, img in scene_media.frames
               if t < SPLIT_S]
    model, _ = train_scene(samples, ["clear", "blocked"], shared_dir / "models" / "yolo11n-coco.onnx",
                           scene_id="floor")
    path = tmp_path_factory.mktemp("floor_model") / "model.onnx"
    path.write_bytes(model)
    return path
