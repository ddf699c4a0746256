"""The fire second-stage classifier (models/fire-confirm.onnx) on real held-out crops, and its loading.

The crops come from the VAL splits of ../shared/datasets/fire and fire2 (never trained on: the classifier
trains on the train splits, which are independent by source video/camera).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.detect.fire_confirm import NEITHER, FireConfirmClassifier, crop_box, resolve_model
from pipeline.detect.registry import ModelHashMismatch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "fire-confirm.onnx"


@pytest.fixture(scope="module")
def clf() -> FireConfirmClassifier:
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} not built (scripts/train_fire_confirm.py)")
    return FireConfirmClassifier(MODEL, threads=1)


def _labelled(shared_dir: Path, ds: str, stem: str) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.imread(str(shared_dir / "datasets" / ds / "images" / "val" / f"{stem}.jpg"))
    if img is None:
        pytest.skip(f"{ds}/{stem} missing")
    lab = shared_dir / "datasets" / ds / "labels" / "val" / f"{stem}.txt"
    rows = np.loadtxt(lab, ndmin=2).reshape(-1, 5) if lab.stat().st_size else np.zeros((0, 5))
    h, w = img.shape[:2]
    xyxy = np.c_[rows[:, 0], (rows[:, 1] - rows[:, 3] / 2) * w, (rows[:, 2] - rows[:, 4] / 2) * h,
                 (rows[:, 1] + rows[:, 3] / 2) * w, (rows[:, 2] + rows[:, 4] / 2) * h]
    return img, xyxy


def _val_crops(shared_dir: Path, ds: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Up to n labelled fire/smoke crops and n random crops of negative frames of one val split."""
    rng = np.random.default_rng(1)
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    for p in sorted((shared_dir / "datasets" / ds / "images" / "val").glob("*.jpg")):
        img, gt = _labelled(shared_dir, ds, p.stem)
        h, w = img.shape[:2]
        if len(gt) and len(pos) < n:
            pos += [c for b in gt[:2, 1:] if (c := crop_box(img, b, 0.15)) is not None and min(c.shape[:2]) >= 8]
        elif not len(gt) and len(neg) < n:
            for _ in range(3):
                side = rng.uniform(0.1, 0.4, 2) * (w, h)
                x, y = rng.uniform(0, 1, 2) * ((w, h) - side)
                neg.append(img[int(y):int(y + side[1]), int(x):int(x + side[0])])
    return pos[:n], neg[:n]


def test_fire_crop_scores_above_negative_crop(shared_dir: Path, clf: FireConfirmClassifier) -> None:
    """A labelled fire in a held-out video frame vs. a garbage-compound frame without fire."""
    fire_img, fire_gt = _labelled(shared_dir, "fire", "AdhyaksaWP__20-fire")
    neg_img, neg_gt = _labelled(shared_dir, "fire", "ATANU0023__000174")
    assert len(fire_gt) and not len(neg_gt)
    box = fire_gt[np.argmax((fire_gt[:, 3] - fire_gt[:, 1]) * (fire_gt[:, 4] - fire_gt[:, 2])), 1:]
    h, w = neg_img.shape[:2]
    p_fire = clf.score_boxes(fire_img, box[None])
    p_neg = clf.score_boxes(neg_img, np.array([[w * 0.3, h * 0.3, w * 0.7, h * 0.7]]))
    assert np.allclose(p_fire.sum(1), 1, atol=1e-4) and np.allclose(p_neg.sum(1), 1, atol=1e-4)
    assert 1 - p_fire[0, NEITHER] > 0.5 > 1 - p_neg[0, NEITHER], (p_fire, p_neg)


@pytest.mark.parametrize("ds", ["fire", "fire2"])
def test_val_fire_crops_rank_above_negative_crops(shared_dir: Path, clf: FireConfirmClassifier, ds: str) -> None:
    """Crop-level ranking on one held-out split: labelled boxes vs. random crops of negative frames."""
    pos, neg = _val_crops(shared_dir, ds, 40)
    assert len(pos) >= 20 and len(neg) >= 20
    sp, sn = 1 - clf.classify(pos)[:, NEITHER], 1 - clf.classify(neg)[:, NEITHER]
    auc = float((sp[:, None] > sn[None, :]).mean() + 0.5 * (sp[:, None] == sn[None, :]).mean())
    assert auc >= 0.8, f"{ds}: crop AUC {auc:.3f} (pos median {np.median(sp):.2f}, neg median {np.median(sn):.2f})"


def test_empty_and_degenerate_boxes_are_neither(clf: FireConfirmClassifier) -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    assert clf.score_boxes(img, np.zeros((0, 4))).shape == (0, 3)
    p = clf.score_boxes(img, np.array([[10, 10, 10, 30], [60, 60, 70, 70]], float))  # zero width; outside
    assert p.tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]


def test_a_detector_is_not_a_classifier() -> None:
    with pytest.raises(ValueError, match="expected classes"):
        FireConfirmClassifier(REPO / "models" / "fire.onnx")
    with pytest.raises(FileNotFoundError):
        FireConfirmClassifier(REPO / "models" / "no-such.onnx")


def test_resolve_by_manifest_name_checks_the_hash(tmp_path: Path, clf: FireConfirmClassifier) -> None:
    copy = tmp_path / "fc.onnx"
    shutil.copyfile(MODEL, copy)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(f"models:\n  - name: fc\n    file: fc.onnx\n    sha256: '{'0' * 64}'\n", encoding="utf-8")
    with pytest.raises(ModelHashMismatch):
        resolve_model("fc", manifest)
    assert resolve_model(str(copy), manifest) == copy  # a plain path needs no entry
    with pytest.raises(FileNotFoundError):
        resolve_model("nope", manifest)
