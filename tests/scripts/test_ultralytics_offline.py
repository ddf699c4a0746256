"""The linked training copy of a data set: labels remapped to COCO ids, nothing written into the source set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.scripts_loader import load_script

uo = load_script("_ultralytics_offline")


def _make_set(root: Path, names: list[str]) -> Path:
    for split, rows in (("train", {"a": "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.05 0.05\n", "b": ""}),
                        ("val", {"c": "1 0.3 0.3 0.1 0.1\n"})):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for stem, text in rows.items():
            (root / "images" / split / f"{stem}.jpg").write_bytes(b"\xff\xd8fake")
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "nc": len(names),
                                    "names": names}))
    return data


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("coco_head", "names", "want_train_a", "want_nc"), [
    (True, ["car", "bicycle"], ["2 0.5 0.5 0.2 0.2", "1 0.1 0.1 0.05 0.05"], 80),
    (False, ["fire", "smoke"], ["0 0.5 0.5 0.2 0.2", "1 0.1 0.1 0.05 0.05"], 2),
])
def test_linked_copy_remaps_labels_and_links_images(tmp_path: Path, coco_head: bool, names: list[str],
                                                    want_train_a: list[str], want_nc: int) -> None:
    src = tmp_path / "set"
    data = _make_set(src, names)
    before = _snapshot(src)
    out = uo.linked_data_yaml(data, tmp_path / "copy", coco_head=coco_head)
    doc = yaml.safe_load(out.read_text())
    assert doc["nc"] == want_nc and doc["path"] == str(tmp_path / "copy")
    if coco_head:
        assert doc["names"][2] == "car" and doc["names"][1] == "bicycle" and doc["names"][0] == "person"
    else:
        assert doc["names"] == {0: "fire", 1: "smoke"}
    lab = tmp_path / "copy" / "labels"
    assert (lab / "train" / "a.txt").read_text().splitlines() == want_train_a
    assert (lab / "train" / "b.txt").read_text() == ""  # a negative stays a negative
    img = tmp_path / "copy" / "images" / "train" / "a.jpg"
    # a file symlink inside a real folder: Ultralytics resolve()s split folders, never the files in them
    assert img.is_symlink() and not img.parent.is_symlink()
    assert img.resolve() == (src / "images" / "train" / "a.jpg").resolve()
    # a second call (a re-run) gives the same copy, and the source set is untouched
    uo.linked_data_yaml(data, tmp_path / "copy", coco_head=coco_head)
    assert sorted(p.name for p in (lab / "train").iterdir()) == ["a.txt", "b.txt"]
    assert _snapshot(src) == before


def test_coco_head_refuses_a_class_that_is_not_in_coco(tmp_path: Path) -> None:
    data = _make_set(tmp_path / "set", ["car", "fire"])
    with pytest.raises(ValueError, match="fire"):
        uo.linked_data_yaml(data, tmp_path / "copy", coco_head=True)


def test_unfolding_batchnorm_keeps_eval_output_and_makes_train_mode_agree(tmp_path: Path) -> None:
    """A conv + placeholder BN (folded: mean 0, var 1, weight 1, bias = folded bias) is exact in eval mode
    but not in train mode; after :func:`unfold_batchnorm` both modes agree and eval is unchanged."""
    torch = pytest.importorskip("torch")
    import cv2
    import numpy as np

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8, eps=1e-3),
                              torch.nn.SiLU(), torch.nn.Conv2d(8, 4, 3, padding=1, bias=False),
                              torch.nn.BatchNorm2d(4, eps=1e-3))
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.normal_(0, 2)  # the folded bias; stats stay at their defaults (0 / 1 / 1)
    assert uo.bn_is_folded(net)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.jpg"
        cv2.imwrite(str(p), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        paths.append(p)
    x = torch.rand(4, 3, 32, 32)
    net.eval()
    before = net(x).detach()
    import copy

    probe = copy.deepcopy(net).train()  # a train-mode pass updates the running stats: use a copy
    folded_train = probe(x).detach()
    assert (folded_train - before).abs().max() > 0.5  # train mode is a different network
    assert uo.unfold_batchnorm(net, paths, imgsz=32, batch=4) == 2
    assert not uo.bn_is_folded(net)
    net.eval()
    assert torch.allclose(net(x), before, atol=1e-4)
    unfolded_train = copy.deepcopy(net).train()(x).detach()
    assert (unfolded_train - before).abs().mean() < (folded_train - before).abs().mean() / 3


def test_merged_sets_keep_each_val_split_out_of_train(tmp_path: Path) -> None:
    a = _make_set(tmp_path / "fire", ["fire", "smoke"])
    b = _make_set(tmp_path / "fire2", ["fire", "smoke"])
    out = uo.merged_data_yaml([a, b], tmp_path / "merged")
    doc = yaml.safe_load(out.read_text())
    assert doc["train"] == ["fire/images/train", "fire2/images/train"]
    assert doc["val"] == ["fire/images/val", "fire2/images/val"]
    assert doc["names"] == {0: "fire", 1: "smoke"} and doc["nc"] == 2
    root = Path(doc["path"])
    train = {p.resolve() for t in doc["train"] for p in (root / t).iterdir()}
    val = {p.resolve() for v in doc["val"] for p in (root / v).iterdir()}
    assert len(train) == 4 and len(val) == 2 and not train & val
    assert (root / "fire2" / "labels" / "train" / "b.txt").read_text() == ""  # negatives stay in train


def test_merging_sets_with_other_classes_is_refused(tmp_path: Path) -> None:
    a = _make_set(tmp_path / "fire", ["fire", "smoke"])
    b = _make_set(tmp_path / "cars", ["car", "bus"])
    with pytest.raises(ValueError, match="differ"):
        uo.merged_data_yaml([a, b], tmp_path / "merged")


def test_checkpoint_rebuilt_from_the_deployed_fire_onnx_computes_the_same(tmp_path: Path) -> None:
    """models/fire.onnx (BatchNorm fused) back into a trainable checkpoint: same scores, placeholder BN."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import importlib.util

    import numpy as np
    import onnxruntime as ort

    repo = Path(__file__).resolve().parents[2]
    onnx_path = repo / "models" / "fire.onnx"
    if not (onnx_path.is_file() and uo.BASE_PT.is_file()):
        pytest.skip("needs models/fire.onnx and the shared base checkpoint")
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("needs ultralytics (the train extra)")
    uo.setup()  # before ultralytics is imported: offline settings, torchvision stub
    out = uo.pt_from_onnx(onnx_path, uo.BASE_PT, tmp_path / "fire.init.pt")
    ck = torch.load(str(out), map_location="cpu", weights_only=False)
    model = ck["model"].eval()
    assert model.names == {0: "fire", 1: "smoke"} and uo.bn_is_folded(model)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ours = model(x)[0].numpy()
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    assert ours.shape == ref.shape
    assert np.abs(ours[:, 4:] - ref[:, 4:]).max() < 1e-4  # class scores
    assert np.abs(ours[:, :4] - ref[:, :4]).max() < 0.05  # boxes in input pixels
    with torch.no_grad():  # a wrong weight would show: zero one conv and the scores move
        model.model[0].conv.weight.zero_()
        assert np.abs(model(x)[0].numpy()[:, 4:] - ref[:, 4:]).max() > 1e-3
