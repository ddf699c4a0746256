"""Building a scene model as one ONNX graph with the ``onnx`` package (training time only; the `train` extra).

The graph is the first stages of the COCO YOLO11n backbone (frozen, cut with :class:`onnx.utils.Extractor`
at :data:`FEATURE_TAPS`), global average and global max pooling of each (max: a small object in one corner
still shows), then the trained linear head (standardise, MatMul, Add,
Softmax). Input ``crop``: float32 (N, 3, S, S) RGB 0..1 (:func:`pipeline.scenes.crop.to_input`); outputs
``probs`` (N, states) and ``features`` (N, D). Metadata (``metadata_props``) carries the states, the input
size and the scene id, so the runtime (:mod:`pipeline.scenes.classifier`) needs nothing but onnxruntime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.scenes.classifier import MODEL_KIND

FEATURE_TAPS: tuple[str, ...] = ("/model.4/cv2/act/Mul_output_0",)
"""YOLO11n backbone outputs the features are pooled from: the C3k2 block at stride 8 (128 channels). On the
corridor clip (docs/scenes.md) the deeper taps (stride 16, 32) learned "which person stands there" and called
a new passer-by blocked (8 of 41 clean unseen frames); stride 8 alone: 0 of 41, 0-1 of 28 blocked frames missed."""

BACKBONE_INPUT = "images"
INPUT = "crop"
FEATURES = "features"
PROBS = "probs"


def feature_model(backbone: Path, taps: Sequence[str] = FEATURE_TAPS) -> onnx.ModelProto:
    """The frozen feature extractor: the backbone cut at ``taps``, pooled and concatenated into ``features``.

    Args:
        backbone: a YOLO11 detection ONNX (input ``images``, dynamic height/width).
        taps: intermediate tensor names to pool.

    Raises:
        ValueError: ``backbone`` lacks the input or a tap (not a YOLO11 export).
    """
    full = onnx.load(str(backbone))
    names = {o for n in full.graph.node for o in n.output}
    missing = [t for t in taps if t not in names]
    if [i.name for i in full.graph.input] != [BACKBONE_INPUT] or missing:
        raise ValueError(f"{backbone} is not a YOLO11 ONNX export (input {BACKBONE_INPUT!r}, tensors {missing} "
                         "missing)")
    cut = onnx.utils.Extractor(full).extract_model([BACKBONE_INPUT], list(taps))
    graph = cut.graph
    nodes = list(graph.node)
    for n in nodes:  # rename the input so a scene model reads as one: crop -> probs
        n.input[:] = [INPUT if i == BACKBONE_INPUT else i for i in n.input]
    pooled: list[str] = []
    for i, tap in enumerate(taps):
        nodes.append(helper.make_node("GlobalAveragePool", [tap], [f"scene/gap{i}"]))
        nodes.append(helper.make_node("Flatten", [f"scene/gap{i}"], [f"scene/gap{i}/flat"], axis=1))
        pooled.append(f"scene/gap{i}/flat")
        nodes.append(helper.make_node("GlobalMaxPool", [tap], [f"scene/gmp{i}"]))
        nodes.append(helper.make_node("Flatten", [f"scene/gmp{i}"], [f"scene/gmp{i}/flat"], axis=1))
        pooled.append(f"scene/gmp{i}/flat")
    nodes.append(helper.make_node("Concat", pooled, [FEATURES], axis=1))
    inp = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, "height", "width"])
    out = helper.make_tensor_value_info(FEATURES, TensorProto.FLOAT, ["batch", "dims"])
    g = helper.make_graph(nodes, "scene-features", [inp], [out], initializer=list(graph.initializer))
    model = helper.make_model(g, opset_imports=list(full.opset_import))
    model.ir_version = full.ir_version
    onnx.checker.check_model(model)
    return model


def with_head(features: onnx.ModelProto, mean: np.ndarray, std: np.ndarray, weight: np.ndarray,
              bias: np.ndarray, metadata: Mapping[str, object]) -> onnx.ModelProto:
    """``features`` plus a linear softmax head: ``probs = softmax(((f - mean) / std) @ weight + bias)``.

    Args:
        features: the model from :func:`feature_model`.
        mean: (D,) feature mean of the training set.
        std: (D,) feature standard deviation (no zeros).
        weight: (D, K) head weights.
        bias: (K,) head bias.
        metadata: written to ``metadata_props`` (values JSON-encoded unless str), e.g. states, input_size.
    """
    model = onnx.ModelProto()
    model.CopyFrom(features)
    g = model.graph
    for name, arr in (("scene/mean", mean), ("scene/std", std), ("scene/weight", weight), ("scene/bias", bias)):
        g.initializer.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
    g.node.extend([
        helper.make_node("Sub", [FEATURES, "scene/mean"], ["scene/centred"]),
        helper.make_node("Div", ["scene/centred", "scene/std"], ["scene/standard"]),
        helper.make_node("MatMul", ["scene/standard", "scene/weight"], ["scene/logits0"]),
        helper.make_node("Add", ["scene/logits0", "scene/bias"], ["scene/logits"]),
        helper.make_node("Softmax", ["scene/logits"], [PROBS], axis=1),
    ])
    g.output.insert(0, helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, ["batch", int(weight.shape[1])]))
    g.name = "scene-classifier"
    del model.metadata_props[:]
    for k, v in {"kind": MODEL_KIND, **metadata}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    onnx.checker.check_model(model)
    return model


__all__ = ["FEATURE_TAPS", "FEATURES", "INPUT", "MODEL_KIND", "PROBS", "feature_model", "with_head"]
