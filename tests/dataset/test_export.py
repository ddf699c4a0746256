"""Verdicts (API) -> `gridwatch dataset export`: YOLO and COCO files, split by camera, negatives, manifest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.dataset.export import camera_fraction, split_by_camera
from pipeline.tickets.users import AuditEvent
from pipeline.tickets.verdicts import TicketVerdict
from tests.dataset.support import World, build_world, image_size, shared_frames
from tests.fixtures.auth import bearer, user_token

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One judged store for the tests that only read it (and write their exports elsewhere)."""
    w = build_world(tmp_path_factory.mktemp("world"))
    yield w
    w.client.__exit__(None, None, None)


@pytest.fixture
def own_world(tmp_path: Path) -> Iterator[World]:
    """A judged store of this test's own (it changes the evidence)."""
    w = build_world(tmp_path)
    yield w
    w.client.__exit__(None, None, None)


def _export(world: World, out: Path, *extra: str) -> dict[str, object]:
    r = runner.invoke(cli_app, ["dataset", "export", "--config", str(world.config), "--out", str(out),
                                "--classes", "fire=fire,smoke", *extra])
    assert r.exit_code == 0, r.output
    manifest: dict[str, object] = json.loads((out / "fire" / "manifest.json").read_text())
    return manifest


def test_verdict_api_stores_boxes_with_the_raw_frame_hash_and_audits(world: World) -> None:
    tid = world.ids["c1_corrected"]
    r = world.client.get(f"/tickets/{tid}/verdicts", headers=bearer(world.engineer))
    assert r.status_code == 200
    (v,) = r.json()
    assert v["verdict"] == "confirmed" and v["source"] == "api" and v["actor"] == "eng"
    assert v["frame_sha256"] == hashlib.sha256(world.frames["c1_corrected"].read_bytes()).hexdigest()
    assert v["boxes"][-1] == {"label": "smoke", "xyxy": [0.0, 0.0, 0.25, 0.2]}
    with world.app.state.tickets.sessions() as s:
        audits = s.scalars(select(AuditEvent).where(AuditEvent.action == "ticket.verdict")).all()
        assert {a.target for a in audits} == {f"ticket:{world.ids[n]}" for n in
                                              ("c1_corrected", "c1_fake", "c3_corrected", "c3_fake")}
        assert s.scalars(select(TicketVerdict)).all()  # stored in the ticket store
    # the ticket did not move: a verdict is a label, the case is the dispatcher's
    assert world.client.get(f"/tickets/{tid}").json()["status"] == "received"


@pytest.mark.parametrize(("body", "code"), [
    ({"verdict": "false_alarm", "boxes": [{"label": "fire", "xyxy": [0.1, 0.1, 0.2, 0.2]}]}, 400),
    ({"verdict": "confirmed", "boxes": []}, 422),
    ({"verdict": "confirmed", "boxes": [{"label": "fire", "xyxy": [0.5, 0.1, 0.2, 0.2]}]}, 422),
    ({"verdict": "confirmed", "boxes": [{"label": "fire", "xyxy": [0.1, 0.1, 1.2, 0.2]}]}, 422),
    ({"verdict": "confirmed", "boxes": [{"label": "fi re", "xyxy": [0.1, 0.1, 0.2, 0.2]}]}, 422),
    ({"verdict": "maybe"}, 422),
])
def test_bad_verdicts_are_refused_and_store_nothing(world: World, body: dict[str, object], code: int) -> None:
    tid = world.ids["c2_open"]
    r = world.client.post(f"/tickets/{tid}/verdict", json=body, headers=bearer(world.engineer))
    assert r.status_code == code, r.text
    assert world.client.get(f"/tickets/{tid}/verdicts").json() == []


def test_roles_and_scope_of_verdicts(world: World) -> None:
    tid = world.ids["c2_open"]
    for role in ("viewer", "patrol"):
        token = user_token(world.app, role, role, ["T1"])
        r = world.client.post(f"/tickets/{tid}/verdict", json={"verdict": "false_alarm"}, headers=bearer(token))
        assert r.status_code == 403, (role, r.text)
    outsider = user_token(world.app, "far", "dispatcher", ["T1/D2"])  # cam2 is in T1/D1
    r = world.client.post(f"/tickets/{tid}/verdict", json={"verdict": "false_alarm"}, headers=bearer(outsider))
    assert r.status_code == 403 and "scope" in r.text
    assert world.client.post("/tickets/999999/verdict", json={"verdict": "false_alarm"}).status_code == 404


def test_export_writes_yolo_and_coco_split_by_camera_with_negatives(world: World, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    m = _export(world, out, "--val-camera", "cam2")
    s = out / "fire"
    assert m["classes"] == ["fire", "smoke"]
    frames = {f["file"]: f for f in m["frames"]}  # type: ignore[attr-defined]
    # c2_open was never judged; c3_person has only a box of a class the set lacks
    assert len(frames) == 7
    assert m["skipped"] == {"no_box_of_classes": 1} and m["dropped_boxes"] == {"person": 1}
    # split by camera: cam2 in val only, cam1/cam3 in train only; no camera on both sides
    for f in frames.values():
        assert f["split"] == ("val" if f["camera_id"] == "cam2" else "train")
        assert (s / "images" / f["split"] / f["file"]).is_file()
    counts = m["counts"]
    assert counts["val"]["cameras"] == ["cam2"] and counts["train"]["cameras"] == ["cam1", "cam3"]  # type: ignore[index]
    assert counts["train"]["negatives"] == 2 and counts["val"]["negatives"] == 1  # type: ignore[index]
    assert counts["train"]["positives"] == 3 and counts["val"]["positives"] == 1  # type: ignore[index]
    # the images are the raw frames, byte for byte
    name = f"cam1__{world.ids['c1_corrected']}.jpg"
    assert (s / "images/train" / name).read_bytes() == world.frames["c1_corrected"].read_bytes()
    # YOLO: corrected boxes (true fire boxes + the added smoke box); negatives are empty files
    true_boxes = shared_frames(9)[0][1]
    lines = (s / "labels/train" / name.replace(".jpg", ".txt")).read_text().splitlines()
    assert len(lines) == len(true_boxes) + 1 and lines[-1] == "1 0.125000 0.100000 0.250000 0.200000"
    cls, cx, cy, bw, bh = (float(v) for v in lines[0].split())
    _, x1, y1, x2, y2 = true_boxes[0]
    assert cls == 0 and cx == pytest.approx((x1 + x2) / 2, abs=1e-6) and bw == pytest.approx(x2 - x1, abs=1e-6)
    fake = f"cam1__{world.ids['c1_fake']}.txt"
    assert (s / "labels/train" / fake).read_text() == ""
    assert (s / "labels/val" / f"cam2__{world.ids['c2_fake']}.txt").read_text() == ""  # false alarm by status
    # the alert's own (uncorrected) box on a ticket verified by a move
    status = (s / "labels/val" / f"cam2__{world.ids['c2_status']}.txt").read_text().splitlines()
    assert len(status) == 1 and status[0].startswith("0 ")
    # COCO: the same boxes in pixels of the real image size
    coco = json.loads((s / "annotations/instances_train.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["fire", "smoke"]
    img = next(i for i in coco["images"] if i["file_name"] == name)
    w, h = image_size(world.frames["c1_corrected"])
    assert (img["width"], img["height"]) == (w, h)
    anns = [a for a in coco["annotations"] if a["image_id"] == img["id"]]
    assert len(anns) == len(true_boxes) + 1
    assert anns[0]["category_id"] == 1 and anns[0]["bbox"] == pytest.approx(
        [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h], abs=0.01)
    assert {i["file_name"] for i in coco["images"]} == {f for f, v in frames.items() if v["split"] == "train"}
    assert not [a for a in coco["annotations"] if a["image_id"] in
                {i["id"] for i in coco["images"] if i["file_name"] == fake.replace(".txt", ".jpg")}]
    data = yaml.safe_load((s / "data.yaml").read_text())
    assert data["names"] == ["fire", "smoke"] and Path(data["path"]) == s.resolve()
    # sources: which ticket, and whether a person gave the boxes
    assert frames[name]["corrected"] and frames[name]["source"] == "verdict:api"
    assert frames[f"cam2__{world.ids['c2_status']}.jpg"]["source"] == "status:verified"


def test_export_by_hash_split_never_shares_a_camera_and_is_stable(world: World, tmp_path: Path) -> None:
    a = _export(world, tmp_path / "a", "--val-fraction", "0.34")
    b = _export(world, tmp_path / "b", "--val-fraction", "0.34")
    ca, cb = a["counts"], b["counts"]
    assert ca["train"]["cameras"] and ca["val"]["cameras"]  # type: ignore[index]
    assert not set(ca["train"]["cameras"]) & set(ca["val"]["cameras"])  # type: ignore[index]
    assert ca == cb  # same verdicts, same split


def test_raw_frame_replaced_after_the_verdict_is_skipped_not_mislabelled(own_world: World, tmp_path: Path) -> None:
    incident = own_world.client.get(f"/tickets/{own_world.ids['c3_corrected']}").json()["incident_id"]
    frame = own_world.app.state.tickets.evidence_dir / incident / "frame.jpg"
    frame.write_bytes(own_world.frames["c1_status"].read_bytes())
    m = _export(own_world, tmp_path / "ds")
    assert m["skipped"] == {"no_box_of_classes": 1, "frame_changed": 1}


def test_split_by_camera_rules() -> None:
    cams = [f"cam{i}" for i in range(40)]
    split = split_by_camera(cams, 0.25)
    val = [c for c in cams if split[c] == "val"]
    assert val == [c for c in cams if camera_fraction(c) < 0.25] and 3 < len(val) < 20
    two = ["cam1", "cam2"]
    for fraction in (0.0001, 0.9999):  # none / all under the fraction: one camera each side anyway
        assert sorted(split_by_camera(two, fraction).values()) == ["train", "val"]
    assert split_by_camera(["only"], 0.5) in ({"only": "train"}, {"only": "val"})
    assert split_by_camera(two, 0.5, ["cam2"]) == {"cam1": "train", "cam2": "val"}
    with pytest.raises(ValueError, match="cam7"):
        split_by_camera(two, 0.5, ["cam7"])


def test_export_cli_errors_are_one_line(world: World, tmp_path: Path) -> None:
    r = runner.invoke(cli_app, ["dataset", "export", "--config", str(world.config), "--out", str(tmp_path / "x"),
                                "--val-camera", "cam7"])
    assert r.exit_code == 2 and "cam7" in r.output
    r = runner.invoke(cli_app, ["dataset", "export", "--config", str(world.config), "--out", str(tmp_path / "x"),
                                "--classes", "fire=fire,fire"])
    assert r.exit_code == 2 and "distinct" in r.output


def test_api_export_script_writes_the_same_set_as_the_store_export(world: World, tmp_path: Path) -> None:
    from tests.scripts_loader import load_script

    db = tmp_path / "db"
    _export(world, db, "--val-camera", "cam2")
    counts = load_script("export_dataset").export(world.client, "fire", ["fire", "smoke"], tmp_path / "api")
    assert counts == {"positives": 4, "negatives": 3, "skipped": 1}
    api = json.loads((tmp_path / "api" / "manifest.json").read_text())
    ours = json.loads((db / "fire" / "manifest.json").read_text())
    keys = ("file", "boxes", "verdict", "corrected", "source", "camera_id")
    assert sorted([{k: f[k] for k in keys} for f in api["frames"]], key=str) == sorted(
        [{k: f[k] for k in keys} for f in ours["frames"]], key=str)
    for f in ours["frames"]:
        split_api = next(g["split"] for g in api["frames"] if g["file"] == f["file"])
        assert (tmp_path / "api" / "labels" / split_api / f["file"].replace(".jpg", ".txt")).read_text() == (
            db / "fire" / "labels" / f["split"] / f["file"].replace(".jpg", ".txt")).read_text()
