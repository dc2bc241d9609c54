"""Export of a reviewed case: nnU-Net layout and geometry, label-map rules, LUNA16 tables and
merging, COCO for 2D, case names, and all-or-nothing behaviour (cancel, failure, roll forward)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.export import dataset as dataset_module
from napari_medcad.core.export import export_case
from napari_medcad.core.findings import Finding, Findings, Status
from napari_medcad.core.image import Geometry, MedicalImage

sitk = pytest.importorskip("SimpleITK")

OBLIQUE = tuple(np.array([[0.96, -0.28, 0.0], [0.28, 0.96, 0.0], [0.0, 0.0, 1.0]]).ravel())


def ct_case(seed: int = 0, direction=OBLIQUE):
    """A small anisotropic, oblique CT with two model components (ids 1, 2) in its label map."""
    geometry = Geometry((0.7, 0.8, 2.5), (-40.0, 25.0, 110.0), direction)
    rng = np.random.default_rng(seed)
    image = MedicalImage(rng.integers(-1000, 400, (12, 40, 36)).astype(np.int16), geometry, modality="CT")
    labels = np.zeros(image.array.shape, np.uint16)
    labels[5:8, 10:15, 10:14] = 1
    labels[2:4, 30:35, 20:25] = 2
    findings = Findings(geometry=geometry, shape_zyx=image.spatial_shape)
    findings.add(Finding(1, "nodule", 0.9, tuple(image.index_to_world((6, 12, 11.5))), 5.0, status=Status.ACCEPTED))
    findings.add(Finding(2, "nodule", 0.6, tuple(image.index_to_world((2.5, 32, 22))), 4.0, status=Status.REJECTED))
    findings.add(Finding(3, "nodule", 1.0, tuple(image.index_to_world((9, 25, 5))), 6.0, status=Status.ADDED,
                         source="reader"))
    findings.add(Finding(4, "nodule", 0.3, tuple(image.index_to_world((9, 5, 30))), 6.0))  # pending
    return image, findings, image.with_array(labels)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the dataset except staging folders (which the next export removes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not str(p.relative_to(root)).startswith(dataset_module.STAGING_PREFIX)}


def read_labels(root: Path, case: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / f"{case}.nii.gz")))


def test_nnunet_layout_keeps_world_geometry(tmp_path):
    nib = pytest.importorskip("nibabel")
    image, findings, labels = ct_case()
    result = export_case(image, findings, tmp_path / "ds", labels=labels)
    root = tmp_path / "ds"
    assert result.case == "case_0001"
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["case_0001_0000.nii.gz"]
    for path in (root / "imagesTr" / "case_0001_0000.nii.gz", root / "labelsTr" / "case_0001.nii.gz"):
        written = sitk.ReadImage(str(path))
        np.testing.assert_allclose(written.GetSpacing(), image.geometry.spacing_xyz, atol=1e-6)
        np.testing.assert_allclose(written.GetOrigin(), image.geometry.origin_xyz, atol=1e-5)
        np.testing.assert_allclose(written.GetDirection(), image.geometry.direction, atol=1e-6)
        ras = nib.load(str(path)).affine  # nibabel reports RAS: LPS with x and y negated
        np.testing.assert_allclose(np.diag([-1, -1, 1, 1]) @ image.geometry.affine_xyz, ras, atol=1e-4)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / "case_0001_0000.nii.gz"))), image.array)
    dataset = json.loads((root / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"}
    assert dataset["labels"] == {"background": 0, "nodule": 1}
    assert dataset["numTraining"] == 1 and dataset["file_ending"] == ".nii.gz"


def test_label_map_follows_decisions(tmp_path):
    image, findings, labels = ct_case()
    export_case(image, findings, tmp_path, labels=labels)
    written = read_labels(tmp_path, "case_0001")
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written[labels.array == 1], 1)  # accepted: its component
    np.testing.assert_array_equal(written[labels.array == 2], 0)  # rejected: background
    added_centre = tuple(np.round(image.world_to_index(findings[3].centre_world_mm)).astype(int))
    assert written[added_centre] == 1  # reader's point: a ball
    pending_centre = tuple(np.round(image.world_to_index(findings[4].centre_world_mm)).astype(int))
    assert written[pending_centre] == 0
    manifest = json.loads((tmp_path / "medcad_export.json").read_text())
    drawn = {f["id"]: f["label_map"] for f in manifest["cases"]["case_0001"]["findings"]}
    assert drawn[1] == "mask" and drawn[3] == "ball" and drawn[2] == "background"
    assert "pending" in manifest["cases"]["case_0001"]["pending_policy"]


def test_ball_is_round_in_world_mm(tmp_path):
    """Anisotropic voxels (0.5 x 0.5 x 3 mm): the ball is 10 mm across in every world direction."""
    geometry = Geometry((0.5, 0.5, 3.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    image = MedicalImage(np.zeros((12, 40, 40), np.int16), geometry, modality="CT")
    centre = (10.0, 10.0, 16.5)  # voxel (5.5, 20, 20) in z, y, x
    findings = Findings(items=[Finding(1, "nodule", 1.0, centre, 10.0, status=Status.ADDED, source="reader")])
    export_case(image, findings, tmp_path)
    written = read_labels(tmp_path, "case_0001")
    index = np.argwhere(written == 1)
    world = geometry.index_to_world(index)
    assert np.linalg.norm(world - np.asarray(centre), axis=1).max() <= 5.0 + 1e-9
    volume_mm3 = len(index) * 0.5 * 0.5 * 3.0
    assert abs(volume_mm3 - 4 / 3 * np.pi * 5.0**3) / (4 / 3 * np.pi * 5.0**3) < 0.2
    extent_x = (index[:, 2].max() - index[:, 2].min() + 1) * 0.5
    extent_z = (index[:, 0].max() - index[:, 0].min() + 1) * 3.0
    assert 9.0 <= extent_x <= 10.5 and 6.0 <= extent_z <= 12.0
    outside = np.argwhere(written == 0)
    near = np.linalg.norm(geometry.index_to_world(outside) - np.asarray(centre), axis=1) < 4.0
    assert not near.any()  # every voxel well inside the ball is labelled


def test_moved_finding_leaves_its_old_component(tmp_path):
    image, findings, labels = ct_case()
    findings[1].centre_world_mm = tuple(image.index_to_world((9.0, 30.0, 30.0)))
    findings[1].status = Status.EDITED
    export_case(image, findings, tmp_path, labels=labels)
    written = read_labels(tmp_path, "case_0001")
    assert not written[labels.array == 1].any()
    assert written[9, 30, 30] == 1


def _rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def test_luna_tables_merge_and_replace(tmp_path):
    image_a, findings_a, labels_a = ct_case(seed=1)
    image_b, findings_b, labels_b = ct_case(seed=2)
    assert export_case(image_a, findings_a, tmp_path, labels=labels_a).case == "case_0001"
    assert export_case(image_b, findings_b, tmp_path, labels=labels_b).case == "case_0002"
    annotations = _rows(tmp_path / "annotations.csv")
    assert annotations[0] == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert [r[0] for r in annotations[1:]] == ["case_0001"] * 2 + ["case_0002"] * 2
    candidates = _rows(tmp_path / "candidates.csv")
    assert candidates[0] == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    by_case = [(r[0], r[4]) for r in candidates[1:] if r[0] == "case_0001"]
    assert sorted(by_case) == [("case_0001", "0"), ("case_0001", "0"), ("case_0001", "1"), ("case_0001", "1")]
    x, y, z = findings_a[2].centre_world_mm  # the rejected one, world mm
    assert ["case_0001", f"{x:.3f}", f"{y:.3f}", f"{z:.3f}", "0"] in candidates

    findings_a[2].status = Status.ACCEPTED  # the reader changes their mind; same image again
    again = export_case(image_a, findings_a, tmp_path, labels=labels_a, pending="omit")
    assert again.case == "case_0001" and again.replaced == []
    annotations = _rows(tmp_path / "annotations.csv")
    assert sum(r[0] == "case_0001" for r in annotations) == 3
    assert sum(r[0] == "case_0002" for r in annotations) == 2
    candidates = _rows(tmp_path / "candidates.csv")
    assert sorted(r[4] for r in candidates if r[0] == "case_0001") == ["1", "1", "1"]  # pending omitted
    assert json.loads((tmp_path / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == ["case_0001.nii.gz", "case_0002.nii.gz"]


def test_same_image_under_a_new_name_replaces_its_case(tmp_path):
    image, findings, labels = ct_case()
    export_case(image, findings, tmp_path, labels=labels)
    result = export_case(image, findings, tmp_path, labels=labels, case_name="lung 7")
    assert result.case == "lung_7" and result.replaced == ["case_0001"]
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == ["lung_7_0000.nii.gz"]
    assert {r[0] for r in _rows(tmp_path / "annotations.csv")[1:]} == {"lung_7"}
    manifest = json.loads((tmp_path / "medcad_export.json").read_text())
    assert list(manifest["cases"]) == ["lung_7"]


@pytest.mark.parametrize("name", ["../evil", "..", "/tmp/abs", "a/b", "a\\b", ".hidden", "", "x" * 65, "c:evil",
                                  "case\x00"])
def test_case_names_cannot_escape(tmp_path, name):
    image, findings, labels = ct_case()
    root = tmp_path / "inner" / "ds"
    with pytest.raises(MedcadError, match="invalid case name"):
        export_case(image, findings, root, labels=labels, case_name=name)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.name != dataset_module.LOCK_NAME] == []


def test_cancel_leaves_dataset_unchanged(tmp_path):
    image, findings, labels = ct_case(seed=1)
    export_case(image, findings, tmp_path, labels=labels)
    before = snapshot(tmp_path)
    other, other_findings, other_labels = ct_case(seed=2)
    seen = []

    def cancel_when_writing_labels(item):
        seen.append(item.message)
        if item.message == "writing COCO":
            raise Cancelled()

    with pytest.raises(Cancelled):
        export_case(other, other_findings, tmp_path, labels=other_labels, progress=cancel_when_writing_labels)
    assert "writing the label map" in seen
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.glob(dataset_module.STAGING_PREFIX + "*"))


def test_failure_leaves_dataset_unchanged(tmp_path):
    image, findings, labels = ct_case(seed=1)
    export_case(image, findings, tmp_path, labels=labels)
    before = snapshot(tmp_path)
    other, other_findings, _ = ct_case(seed=2)
    wrong_grid = MedicalImage(np.zeros((3, 4, 5), np.uint16), Geometry.identity(3))
    with pytest.raises(MedcadError, match="grid"):
        export_case(other, other_findings, tmp_path, labels=wrong_grid)
    assert snapshot(tmp_path) == before



def export_killed_after_one_move(monkeypatch, image, findings, folder, labels):
    """Export whose commit dies after its first move (KeyboardInterrupt stands in for SIGKILL:
    nothing after it runs)."""
    real_move, calls = dataset_module._move, []

    def move_once_then_die(source, target):
        if calls:
            raise KeyboardInterrupt
        calls.append(target)
        real_move(source, target)

    monkeypatch.setattr(dataset_module, "_move", move_once_then_die)
    with pytest.raises(KeyboardInterrupt):
        export_case(image, findings, folder, labels=labels)
    monkeypatch.setattr(dataset_module, "_move", real_move)

def test_kill_during_renames_is_rolled_forward(tmp_path, monkeypatch):
    """A commit stopped after its first rename: the next export finishes it first."""
    image_a, findings_a, labels_a = ct_case(seed=1)
    image_b, findings_b, labels_b = ct_case(seed=2)
    export_case(image_a, findings_a, tmp_path, labels=labels_a)
    export_killed_after_one_move(monkeypatch, image_b, findings_b, tmp_path, labels_b)
    assert json.loads((tmp_path / "dataset.json").read_text())["numTraining"] == 1  # half done
    assert len(list(tmp_path.glob(dataset_module.STAGING_PREFIX + "*"))) == 1

    image_c, findings_c, labels_c = ct_case(seed=3)
    result = export_case(image_c, findings_c, tmp_path, labels=labels_c)
    assert result.recovered == {"rolled_forward": 1, "removed_stale": 0}
    assert result.case == "case_0003"
    assert json.loads((tmp_path / "dataset.json").read_text())["numTraining"] == 3
    assert sorted(p.name for p in (tmp_path / "labelsTr").iterdir()) == [f"case_000{i}.nii.gz" for i in (1, 2, 3)]
    assert {r[0] for r in _rows(tmp_path / "annotations.csv")[1:]} == {"case_0001", "case_0002", "case_0003"}
    assert not list(tmp_path.glob(dataset_module.STAGING_PREFIX + "*"))


def test_stale_staging_folder_is_removed(tmp_path):
    image, findings, labels = ct_case()
    stale = tmp_path / f"{dataset_module.STAGING_PREFIX}deadbeef" / "files" / "imagesTr"
    stale.mkdir(parents=True)
    (stale / "case_0009_0000.nii.gz").write_bytes(b"half")
    result = export_case(image, findings, tmp_path, labels=labels)
    assert result.recovered == {"rolled_forward": 0, "removed_stale": 1}
    assert not (tmp_path / f"{dataset_module.STAGING_PREFIX}deadbeef").exists()
    assert not (tmp_path / "imagesTr" / "case_0009_0000.nii.gz").exists()


def test_refuses_foreign_folder_mixed_dimensions_and_other_images(tmp_path):
    image, findings, labels = ct_case()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(MedcadError, match="not a napari-medcad dataset"):
        export_case(image, findings, tmp_path / "foreign", labels=labels)
    export_case(image, findings, tmp_path / "ds", labels=labels)
    flat = MedicalImage(np.zeros((20, 30), np.uint8), Geometry.identity(2), modality="DX")
    with pytest.raises(MedcadError, match="3D images"):
        export_case(flat, Findings(), tmp_path / "ds")
    other = Findings(items=list(findings), image_signature="0" * 32)
    with pytest.raises(MedcadError, match="different image"):
        export_case(image, other, tmp_path / "ds2")


def test_provenance_records_model_and_review(tmp_path):
    image, findings, labels = ct_case()
    findings.provenance = {"model": "lung-nodule-ct", "model_version": "1.0", "threshold": 0.5,
                           "image_path": "/data/DOE_JOHN/ct.nii.gz",
                           "review": {"file": "x.review.json", "actions": 3, "decisions": {
                               "1": {"status": "accepted", "action": "accept", "time": "2025-01-02T03:04:05.000+00:00"}}}}
    findings[1].note = "looks like Mr Doe's old scar"
    export_case(image, findings, tmp_path, labels=labels)
    text = (tmp_path / "medcad_export.json").read_text()
    entry = json.loads(text)["cases"]["case_0001"]
    assert entry["model"] == {"model": "lung-nodule-ct", "model_version": "1.0", "threshold": 0.5}
    assert entry["image_signature"] == image.content_signature()
    assert entry["review"] == {"reviewed": True, "actions": 3}
    first = next(f for f in entry["findings"] if f["id"] == 1)
    assert first["decided_at"] == "2025-01-02T03:04:05.000+00:00" and first["decided_by_action"] == "accept"
    assert "numpy" in entry["software"] and "napari-medcad" in entry["software"]
    assert "DOE" not in text and "scar" not in text


def flat_case():
    """A 2D uint16 radiograph with two model components and a reader's point."""
    geometry = Geometry((0.3, 0.4), (-12.0, 7.0), (1.0, 0.0, 0.0, 1.0))
    rng = np.random.default_rng(5)
    image = MedicalImage(rng.integers(0, 4000, (50, 60)).astype(np.uint16), geometry, modality="DX")
    labels = np.zeros((50, 60), np.uint16)
    labels[10:20, 5:12] = 1
    labels[14:16, 8:10] = 0  # a hole: RLE keeps it
    labels[30:40, 40:55] = 2
    findings = Findings(geometry=geometry, shape_zyx=(50, 60))
    findings.add(Finding(1, "nodule", 0.8, (*image.index_to_world((15, 8)), 0.0), 3.0, status=Status.ACCEPTED))
    findings.add(Finding(2, "mass", 0.7, (*image.index_to_world((35, 47)), 0.0), 5.0, status=Status.EDITED))
    findings.add(Finding(3, "nodule", 1.0, tuple(image.index_to_world((42, 10))), 4.0, status=Status.ADDED,
                         source="reader"))
    findings.add(Finding(4, "nodule", 0.4, tuple(image.index_to_world((5, 50))), 4.0, status=Status.REJECTED))
    return image, findings, image.with_array(labels)


def test_2d_export_with_coco(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.coco")
    from pycocotools import mask as mask_utils

    image, findings, labels = flat_case()
    export_case(image, findings, tmp_path, labels=labels)
    written = sitk.ReadImage(str(tmp_path / "imagesTr" / "case_0001_0000.nii.gz"))
    assert written.GetDimension() == 2
    np.testing.assert_allclose(written.GetSpacing(), (0.3, 0.4))
    np.testing.assert_allclose(written.GetOrigin(), (-12.0, 7.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), image.array)
    classes = read_labels(tmp_path, "case_0001")
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "nodule": 1, "mass": 2}
    np.testing.assert_array_equal(classes[labels.array == 1], 1)
    np.testing.assert_array_equal(classes[labels.array == 2], 2)

    coco = pycocotools.COCO(str(tmp_path / "coco.json"))
    (image_entry,) = coco.dataset["images"]
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / image_entry["file_name"])))
    np.testing.assert_array_equal(png, image.array)
    assert {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())} == {"nodule": 1, "mass": 2}
    annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_entry["id"]]))
    assert sorted(a["medcad_finding_id"] for a in annotations) == [1, 2, 3]  # the rejected one is absent
    for annotation in annotations:
        mask = coco.annToMask(annotation).astype(bool)
        finding_id = annotation["medcad_finding_id"]
        if finding_id in (1, 2):
            np.testing.assert_array_equal(mask, labels.array == finding_id)
        else:
            assert mask[42, 10] and 8 <= mask.sum() <= 120  # 4 mm disc on 0.3 x 0.4 mm pixels
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        np.testing.assert_allclose(annotation["bbox"], mask_utils.toBbox(rle))
        assert annotation["area"] == mask.sum()
    assert coco.loadAnns([a["id"] for a in annotations if a["medcad_finding_id"] == 2])[0]["category_id"] == 2


def test_2d_rgb_picture_and_coco_replacement(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.coco")
    rng = np.random.default_rng(3)
    picture = MedicalImage(rng.integers(0, 255, (30, 40, 3)).astype(np.uint8), Geometry.identity(2), rgb=True,
                           modality="XC")
    findings = Findings(items=[Finding(1, "lesion", 1.0, (20.0, 10.0), 6.0, status=Status.ADDED, source="reader")])
    export_case(picture, findings, tmp_path)
    export_case(picture, findings, tmp_path)  # same picture again: replaced, not duplicated
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == [f"case_0001_000{c}.nii.gz" for c in range(3)]
    assert json.loads((tmp_path / "dataset.json").read_text())["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    for channel in range(3):
        plane = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "imagesTr" / f"case_0001_000{channel}.nii.gz")))
        np.testing.assert_array_equal(plane, picture.array[..., channel])
    coco = pycocotools.COCO(str(tmp_path / "coco.json"))
    assert len(coco.dataset["images"]) == 1 and len(coco.dataset["annotations"]) == 1
    png = sitk.ReadImage(str(tmp_path / coco.dataset["images"][0]["file_name"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(png), picture.array)


def test_float_2d_image_gets_a_recorded_png_mapping(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.coco")
    values = np.linspace(-1000.0, 3000.0, 20 * 25).reshape(20, 25).astype(np.float32)
    image = MedicalImage(values, Geometry.identity(2), modality="CR")
    export_case(image, Findings(), tmp_path)
    entry = pycocotools.COCO(str(tmp_path / "coco.json")).dataset["images"][0]
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / entry["file_name"]))).astype(float)
    mapping = entry["medcad_intensity_mapping"]
    np.testing.assert_allclose(png * mapping["scale"] + mapping["offset"], values, atol=mapping["scale"])


def test_finding_id_zero_is_a_lesion_not_the_background(tmp_path):
    """0-based ids (common in hand-written CSVs): id 0 marks its ball, not every voxel."""
    image, _, _ = ct_case()
    findings = Findings(items=[
        Finding(0, "nodule", 0.9, tuple(image.index_to_world((6, 20, 18))), 5.0, status=Status.ACCEPTED),
        Finding(1, "nodule", 0.8, tuple(image.index_to_world((3, 8, 8))), 5.0, status=Status.REJECTED)])
    export_case(image, findings, tmp_path)
    written = read_labels(tmp_path, "case_0001")
    assert written[6, 20, 18] == 1 and written[3, 8, 8] == 0
    assert 0 < (written == 1).sum() < 200
    manifest = json.loads((tmp_path / "medcad_export.json").read_text())
    assert {f["id"]: f["label_map"] for f in manifest["cases"]["case_0001"]["findings"]} == {0: "ball", 1: "background"}


def test_finding_id_zero_in_coco(tmp_path):
    pycocotools = pytest.importorskip("pycocotools.coco")
    image, findings, labels = flat_case()
    findings.add(Finding(0, "nodule", 1.0, tuple(image.index_to_world((25, 30))), 3.0, status=Status.ADDED,
                         source="reader"))
    export_case(image, findings, tmp_path, labels=labels)
    coco = pycocotools.COCO(str(tmp_path / "coco.json"))
    masks = {a["medcad_finding_id"]: coco.annToMask(a).astype(bool) for a in coco.dataset["annotations"]}
    assert sorted(masks) == [0, 1, 2, 3]
    assert masks[0][25, 30] and masks[0].sum() < 100
    np.testing.assert_array_equal(masks[1], labels.array == 1)


def test_a_case_name_held_by_another_image_is_refused(tmp_path):
    image_a, findings_a, labels_a = ct_case(seed=1)
    image_b, findings_b, labels_b = ct_case(seed=2)
    export_case(image_a, findings_a, tmp_path, labels=labels_a)
    export_case(image_b, findings_b, tmp_path, labels=labels_b, case_name="lung_b")
    before = snapshot(tmp_path)
    for name in ("case_0001", "CASE_0001", "LUNG_B"):
        with pytest.raises(MedcadError, match="holds a different image .* choose another case name"):
            export_case(image_a if name == "LUNG_B" else image_b, findings_a, tmp_path, case_name=name)
    assert snapshot(tmp_path) == before

    again = export_case(image_a, findings_a, tmp_path, labels=labels_a, case_name="CASE_0001")  # its own case
    assert again.case == "CASE_0001" and again.replaced == ["case_0001"]
    assert "replaced case_0001" in again.summary()
    assert sorted(p.name for p in (tmp_path / "imagesTr").iterdir()) == ["CASE_0001_0000.nii.gz", "lung_b_0000.nii.gz"]
    assert sorted(json.loads((tmp_path / "medcad_export.json").read_text())["cases"]) == ["CASE_0001", "lung_b"]


def test_reserved_class_names_are_refused(tmp_path):
    """nnU-Net's 'ignore' must be the highest label value, which a growing class list cannot promise."""
    image, findings, labels = ct_case()
    findings[3].label = "Ignore"
    with pytest.raises(MedcadError, match="'Ignore', which is nnU-Net's name for voxels left out of training"):
        export_case(image, findings, tmp_path, labels=labels)
    findings[3].label = "ignore"
    findings[3].status = Status.REJECTED  # a rejected finding makes no class
    export_case(image, findings, tmp_path, labels=labels)
    assert "ignore" not in json.loads((tmp_path / "dataset.json").read_text())["labels"]


@pytest.mark.parametrize("field, value, message", [
    ("diameter_mm", float("nan"), "diameter of nan"),
    ("diameter_mm", -4.0, "diameter of -4.0"),
    ("probability", float("inf"), "probability of inf"),
])
def test_values_json_cannot_hold_are_refused(tmp_path, field, value, message):
    image, findings, labels = ct_case()
    setattr(findings[2], field, value)  # a rejected finding: it still goes into the tables
    with pytest.raises(MedcadError, match=f"finding 2 has a {message}"):
        export_case(image, findings, tmp_path, labels=labels)
    assert not (tmp_path / "medcad_export.json").exists()


def test_exported_json_is_standard(tmp_path):
    """No NaN or Infinity (which Python writes but other JSON readers refuse), even from metadata."""
    image, findings, labels = ct_case()
    image.metadata["kvp"] = float("nan")
    export_case(image, findings, tmp_path, labels=labels)

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    for name in ("medcad_export.json", "dataset.json"):
        json.loads((tmp_path / name).read_text(), parse_constant=refuse)


def test_a_positive_finding_outside_the_image_is_refused(tmp_path):
    image, findings, labels = ct_case()
    findings.add(Finding(5, "nodule", 0.9, (500.0, 12.0, 47.5), 4.0, status=Status.ACCEPTED))
    with pytest.raises(MedcadError, match="finding 5 .accepted. lies outside the image"):
        export_case(image, findings, tmp_path, labels=labels)
    findings[5].status = Status.REJECTED  # a hard negative there is harmless
    export_case(image, findings, tmp_path, labels=labels)


def test_a_refused_folder_is_left_exactly_as_it_was(tmp_path):
    """No lock file, and no recovery run among someone else's files."""
    image, findings, labels = ct_case()
    foreign = tmp_path / "thesis"
    (foreign / f"{dataset_module.STAGING_PREFIX}notours").mkdir(parents=True)
    (foreign / "thesis.docx").write_text("chapter 1")
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    with pytest.raises(MedcadError, match="not a napari-medcad dataset"):
        export_case(image, findings, foreign, labels=labels)
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before


def test_first_export_killed_after_its_commit_point_is_finished(tmp_path, monkeypatch):
    """Files but no manifest yet: the folder is still recognised as ours and rolled forward."""
    image_a, findings_a, labels_a = ct_case(seed=1)
    export_killed_after_one_move(monkeypatch, image_a, findings_a, tmp_path, labels_a)
    assert not (tmp_path / "medcad_export.json").exists() and (tmp_path / "imagesTr").is_dir()
    image_b, findings_b, labels_b = ct_case(seed=2)
    result = export_case(image_b, findings_b, tmp_path, labels=labels_b)
    assert result.recovered["rolled_forward"] == 1 and result.case == "case_0002"
    assert json.loads((tmp_path / "dataset.json").read_text())["numTraining"] == 2


def _nnunet_view_is_whole(root: Path) -> bool:
    """What nnU-Net reads: dataset.json's case list, each case's files present, numTraining right."""
    if not (root / "dataset.json").is_file():
        return True  # no dataset yet
    dataset = json.loads((root / "dataset.json").read_text())
    cases = dataset["dataset"]
    files = [f for entry in cases.values() for f in entry["images"] + [entry["label"]]]
    return dataset["numTraining"] == len(cases) and all((root / f).is_file() for f in files)


@pytest.mark.parametrize("renames_before_kill", range(15))
def test_nnunet_never_sees_half_a_commit(tmp_path, monkeypatch, renames_before_kill):
    """Killed after any rename of a commit that adds one case and renames another, nnU-Net's view
    of the dataset is whole: files come before dataset.json lists them and go after it stops."""
    image_a, findings_a, labels_a = ct_case(seed=1)
    image_b, findings_b, labels_b = ct_case(seed=2)
    export_case(image_a, findings_a, tmp_path, labels=labels_a)
    export_case(image_b, findings_b, tmp_path, labels=labels_b)
    real_move, real_unlink = dataset_module._move, Path.unlink
    done = []

    def counted(step):
        def wrapper(*args, **kwargs):
            if len(done) == renames_before_kill:
                raise KeyboardInterrupt
            done.append(args)
            return step(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(dataset_module, "_move", counted(real_move))
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: counted(real_unlink)(self, missing_ok)
                        if self.parent.parent == tmp_path else real_unlink(self, missing_ok))  # a case file
    image_c, findings_c, labels_c = ct_case(seed=3)
    try:
        export_case(image_a, findings_a, tmp_path, labels=labels_a, case_name="renamed")  # deletes case_0001
        export_case(image_c, findings_c, tmp_path, labels=labels_c)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert len(done) == min(renames_before_kill, 14)  # 8 steps of the first export, 6 of the second
    assert _nnunet_view_is_whole(tmp_path)
    export_case(image_c, findings_c, tmp_path, labels=labels_c)  # rolls forward, then adds case C
    assert _nnunet_view_is_whole(tmp_path)
    assert sorted(json.loads((tmp_path / "dataset.json").read_text())["dataset"]) == ["case_0002", "case_0003",
                                                                                      "renamed"]


def test_dataset_files_get_the_usual_permissions(tmp_path):
    """Images written through a temporary file are no more private than the tables beside them."""
    image, findings, labels = ct_case()
    previous = os.umask(0o022)
    try:
        export_case(image, findings, tmp_path / "ds", labels=labels)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in (tmp_path / "ds").rglob("*")
             if p.is_file()}
    assert set(modes.values()) == {0o644}, modes
