"""`gridwatch dataset import`: CVAT YOLO 1.1 zip and Label Studio COCO JSON back into an exported set."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.dataset.label_import import LabelImportError, read_export
from tests.dataset.support import World, build_world, image_size

runner = CliRunner()


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[World, Path]]:
    w = build_world(tmp_path)
    r = runner.invoke(cli_app, ["dataset", "export", "--config", str(w.config), "--out", str(tmp_path / "ds"),
                                "--classes", "fire=fire,smoke", "--val-camera", "cam2"])
    assert r.exit_code == 0, r.output
    yield w, tmp_path / "ds" / "fire"
    w.client.__exit__(None, None, None)


def _manifest(set_dir: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((set_dir / "manifest.json").read_text())
    return doc


def test_cvat_yolo_zip_relabels_frames_and_records_verdicts(exported: tuple[World, Path], tmp_path: Path) -> None:
    w, s = exported
    fake, status = f"cam1__{w.ids['c1_fake']}", f"cam2__{w.ids['c2_status']}"
    # CVAT "YOLO 1.1": obj.names, obj.data, train.txt and one label file per frame in obj_train_data/
    cvat = tmp_path / "task_1-yolo.zip"
    with zipfile.ZipFile(cvat, "w") as z:
        z.writestr("obj.names", "fire\nsmoke\n")
        z.writestr("obj.data", "classes = 2\nnames = data/obj.names\ntrain = data/train.txt\n")
        z.writestr("train.txt", f"data/obj_train_data/{fake}.jpg\ndata/obj_train_data/{status}.jpg\n")
        z.writestr(f"obj_train_data/{fake}.txt", "1 0.500000 0.400000 0.200000 0.100000\n")  # smoke after all
        z.writestr(f"obj_train_data/{status}.txt", "")  # the verified alert was nothing
        z.writestr("obj_train_data/cam7__999.txt", "0 0.5 0.5 0.1 0.1\n")  # a frame of another task
    r = runner.invoke(cli_app, ["dataset", "import", str(s), str(cvat), "--config", str(w.config)])
    assert r.exit_code == 0, r.output
    assert "cvat yolo; 2 frames matched, 2 changed" in r.output and "cam7__999" in r.output
    assert (s / "labels/train" / f"{fake}.txt").read_text() == "1 0.500000 0.400000 0.200000 0.100000\n"
    assert (s / "labels/val" / f"{status}.txt").read_text() == ""
    m = _manifest(s)
    (imp,) = m["imports"]  # type: ignore[misc]
    assert imp["unmatched"] == ["cam7__999"] and imp["verdicts_recorded"] == 2 and imp["tool"] == "cvat"
    assert m["counts"]["train"]["negatives"] == 1 and m["counts"]["val"]["negatives"] == 2  # type: ignore[index]
    coco = json.loads((s / "annotations/instances_train.json").read_text())
    img = next(i for i in coco["images"] if i["file_name"] == f"{fake}.jpg")
    (ann,) = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
    wpx, hpx = image_size(w.frames["c1_fake"])
    assert ann["category_id"] == 2 and ann["bbox"] == pytest.approx([0.4 * wpx, 0.35 * hpx, 0.2 * wpx, 0.1 * hpx],
                                                                      abs=0.01)
    # recorded as verdicts: a fresh export from the ticket store keeps the relabelling
    verdicts = w.client.get(f"/tickets/{w.ids['c1_fake']}/verdicts").json()
    assert verdicts[-1]["verdict"] == "confirmed" and verdicts[-1]["source"] == "import:cvat-yolo"
    assert verdicts[-1]["boxes"] == [{"label": "smoke", "xyxy": [0.4, 0.35, 0.6, 0.45]}]
    again = tmp_path / "again"
    r = runner.invoke(cli_app, ["dataset", "export", "--config", str(w.config), "--out", str(again),
                                "--classes", "fire=fire,smoke", "--val-camera", "cam2"])
    assert r.exit_code == 0, r.output
    assert (again / "fire/labels/train" / f"{fake}.txt").read_text() == "1 0.500000 0.400000 0.200000 0.100000\n"
    assert (again / "fire/labels/val" / f"{status}.txt").read_text() == ""


def test_label_studio_coco_json_matches_by_name_and_reports_unknown_classes(
        exported: tuple[World, Path], tmp_path: Path) -> None:
    w, s = exported
    pos, neg = f"cam3__{w.ids['c3_corrected']}", f"cam3__{w.ids['c3_fake']}"
    pw, ph = image_size(w.frames["c3_corrected"])
    nw, nh = image_size(w.frames["c3_fake"])
    # Label Studio's COCO export: result.json, 0-based category ids, upload prefix on the file names
    doc = {"info": {"contributor": "Label Studio", "description": ""},
           "images": [{"id": 0, "file_name": f"images/1a2b3c4d-{pos}.jpg", "width": pw, "height": ph},
                      {"id": 1, "file_name": f"images/9f8e7d6c-{neg}.jpg", "width": nw, "height": nh},
                      {"id": 2, "file_name": "images/00aa11bb-unknown.jpg", "width": 10, "height": 10}],
           "categories": [{"id": 0, "name": "fire"}, {"id": 1, "name": "smoke"}, {"id": 2, "name": "person"}],
           "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "bbox": [pw * 0.1, ph * 0.2, pw * 0.3, ph * 0.4]},
                           {"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]}]}
    ls = tmp_path / "result.json"
    ls.write_text(json.dumps(doc))
    before = (s / "labels/train" / f"{neg}.txt").read_text()
    r = runner.invoke(cli_app, ["dataset", "import", str(s), str(ls)])
    assert r.exit_code == 1, r.output  # a frame left unchanged because of a class the set lacks
    assert "label-studio coco; 1 frames matched, 1 changed" in r.output and "person" in r.output
    assert (s / "labels/train" / f"{pos}.txt").read_text() == "0 0.250000 0.400000 0.300000 0.400000\n"
    assert (s / "labels/train" / f"{neg}.txt").read_text() == before == ""
    (imp,) = _manifest(s)["imports"]  # type: ignore[misc]
    assert imp["unmatched"] == ["unknown"] and imp["unknown_labels"] == {f"{neg}.jpg": ["person"]}
    assert imp["verdicts_recorded"] == 0  # no --config: the set only


def test_unreadable_exports_are_clear_errors(exported: tuple[World, Path], tmp_path: Path) -> None:
    _, s = exported
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("readme.md", "nothing")
    with pytest.raises(LabelImportError, match="no YOLO label files"):
        read_export(empty, ["fire", "smoke"])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = runner.invoke(cli_app, ["dataset", "import", str(s), str(broken)])
    assert r.exit_code == 2 and "not JSON" in r.output
    r = runner.invoke(cli_app, ["dataset", "import", str(tmp_path), str(broken)])
    assert r.exit_code == 2 and "manifest.json" in r.output
    bad_class = tmp_path / "ultra"
    (bad_class / "labels").mkdir(parents=True)
    (bad_class / "data.yaml").write_text("names: [fire, smoke]\n")
    (bad_class / "labels" / "x.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelImportError, match="x.txt .class 5 not in the 2 names"):
        read_export(bad_class, ["fire", "smoke"])
    (bad_class / "labels" / "y.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    parsed = read_export(bad_class, ["fire", "smoke"])
    assert parsed.tool == "ultralytics" and list(parsed.frames) == ["y"] and "class 5" in parsed.ignored[0]
