"""`napari-medcad export` end to end: predict-style case folders, review files, a DICOM series
carrying a patient's identity, nnU-Net's own integrity check, and a SIGKILL half-way."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medcad.core.export import dataset as dataset_module
from napari_medcad.core.findings import Finding, Findings, Status
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.io import read_image, write_image

sitk = pytest.importorskip("SimpleITK")

PATIENT = {
    "PatientName": "ZZTOPSECRET^ALICIA",
    "PatientID": "PID778899XQ",
    "PatientBirthDate": "19231107",
    "AccessionNumber": "ACC5566XYZ",
    "InstitutionName": "Saint Quixote Infirmary",
    "StudyDate": "19990315",
    "SeriesDate": "19990316",
}


def predict_folder(folder: Path, image: MedicalImage, seriesuid: str = "scan") -> Findings:
    """What `napari-medcad predict` writes for a case: findings.csv (ids = label values) and labels.nii.gz."""
    folder.mkdir(parents=True)
    labels = np.zeros(image.spatial_shape, np.uint16)
    labels[2:4, 5:9, 5:9] = 1
    labels[4:6, 14:18, 14:18] = 2
    findings = Findings(geometry=image.geometry, shape_zyx=image.spatial_shape)
    findings.add(Finding(1, "nodule", 0.9, tuple(image.index_to_world((2.5, 6.5, 6.5))), 4.0, status=Status.ACCEPTED))
    findings.add(Finding(2, "nodule", 0.7, tuple(image.index_to_world((4.5, 15.5, 15.5))), 4.0, status=Status.REJECTED))
    (folder / "findings.csv").write_text(findings.to_csv(seriesuid=seriesuid))
    write_image(image.with_array(labels), folder / "labels.nii.gz")
    (folder / "report.json").write_text(json.dumps({"model": {"name": "lung-nodule-ct", "version": "0.3"},
                                                    "image": {"name": seriesuid}}))
    return findings


def small_ct(seed: int = 0) -> MedicalImage:
    geometry = Geometry((0.9, 0.9, 2.0), (-30.0, -20.0, 50.0), tuple(np.eye(3).ravel()))
    array = np.random.default_rng(seed).integers(-1000, 300, (8, 24, 24)).astype(np.int16)
    return MedicalImage(array, geometry, modality="CT")


def test_export_from_a_predict_folder(tmp_path, run_cli):
    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    predict_folder(tmp_path / "pred" / "scan", image)
    result = run_cli("export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "pred" / "scan"),
                     "--out", str(tmp_path / "ds"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "exported case_0001" in result.stdout and result.stderr == ""
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / "case_0001.nii.gz")))
    assert labels[3, 7, 7] == 1 and labels[5, 16, 16] == 0 and labels.sum() == 2 * 4 * 4
    entry = json.loads((tmp_path / "ds" / "medcad_export.json").read_text())["cases"]["case_0001"]
    assert entry["model"] == {"model": "lung-nodule-ct", "model_version": "0.3"}
    assert "scan" not in (tmp_path / "ds" / "annotations.csv").read_text()  # the input's seriesuid is not reused


def test_export_with_a_review_file(tmp_path, run_cli):
    review = pytest.importorskip("napari_medcad.core.review")
    if not hasattr(review, "load_review"):
        pytest.skip("core.review has no load_review yet")
    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    image = read_image(tmp_path / "scan.nii.gz")
    findings = predict_folder(tmp_path / "pred" / "scan", image)
    session = review.ReviewSession.start(findings, image.content_signature(), path=tmp_path / "scan.review.json")
    session.reject(1)
    session.accept(2)
    result = run_cli("export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "pred" / "scan"),
                     "--review", str(tmp_path / "scan.review.json"), "--out", str(tmp_path / "ds"), "--quiet")
    assert result.returncode == 0, result.stderr
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / "case_0001.nii.gz")))
    assert labels[3, 7, 7] == 0 and labels[5, 16, 16] == 1  # the review's decisions, not the CSV's
    entry = json.loads((tmp_path / "ds" / "medcad_export.json").read_text())["cases"]["case_0001"]
    decided = {f["id"]: (f["status"], f["decided_by_action"], bool(f["decided_at"])) for f in entry["findings"]}
    assert decided == {1: ("rejected", "reject", True), 2: ("accepted", "accept", True)}
    assert entry["review"]["reviewed"] is True

    other = small_ct(seed=9)
    write_image(other, tmp_path / "other.nii.gz")
    refused = run_cli("export", "--image", str(tmp_path / "other.nii.gz"), "--review",
                      str(tmp_path / "scan.review.json"), "--out", str(tmp_path / "ds"), "--quiet")
    assert refused.returncode == 2
    assert "different image" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_export_with_a_review_file_keeps_the_readers_mask_edits(tmp_path, run_cli):
    """A reader's stroke is saved with the review; the export's label map must show it."""
    from napari_medcad.core.mask_patch import MaskPatch
    from napari_medcad.core.review import ReviewSession

    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    image = read_image(tmp_path / "scan.nii.gz")
    findings = predict_folder(tmp_path / "pred" / "scan", image)
    session = ReviewSession.start(findings, image.content_signature(), path=tmp_path / "scan.review.json")
    session.accept(2)
    trimmed = np.nonzero(np.ones((2, 4, 2), bool))  # finding 1 loses its x 5..6 half
    trim = [(tuple(i + o for i, o in zip(trimmed, (2, 5, 5))), np.full(16, 1, np.uint16), np.uint16(0))]
    with session.batch(MaskPatch.of(trim)):
        session.edit_mask(1)
    result = run_cli("export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "pred" / "scan"),
                     "--review", str(tmp_path / "scan.review.json"), "--out", str(tmp_path / "ds"), "--quiet")
    assert result.returncode == 0, result.stderr
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / "case_0001.nii.gz")))
    assert labels[3, 6, 6] == 0 and labels[3, 7, 7] == 1  # the trimmed half is gone, the rest stays
    assert labels.sum() == 2 * 4 * 2 + 2 * 4 * 4  # finding 1 trimmed; accepted finding 2 whole


def test_export_with_a_review_hashes_the_image_once(tmp_path, monkeypatch, capsys):
    """The content signature (a hash of every voxel) is computed once and passed on."""
    from napari_medcad.cli import main
    from napari_medcad.core.review import ReviewSession

    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    findings = predict_folder(tmp_path / "pred" / "scan", image)
    ReviewSession.start(findings, read_image(tmp_path / "scan.nii.gz").content_signature(),
                        path=tmp_path / "scan.review.json").accept(1)
    calls = []
    original = MedicalImage.content_signature
    monkeypatch.setattr(MedicalImage, "content_signature", lambda self: calls.append(1) or original(self))
    assert main(["export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "pred" / "scan"),
                 "--review", str(tmp_path / "scan.review.json"), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    assert "exported case_0001" in capsys.readouterr().out
    assert len(calls) == 1


@pytest.mark.parametrize("extra, message", [
    (["--case", "../../escape"], "invalid case name"),
    (["--findings", "missing-folder"], "does not exist"),
    ([], "give --findings"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, run_cli, extra, message):
    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    predict_folder(tmp_path / "pred" / "scan", image)
    args = ["export", "--image", str(tmp_path / "scan.nii.gz"), "--out", str(tmp_path / "ds"), "--quiet"]
    if extra and extra[0] == "--case":
        args += ["--findings", str(tmp_path / "pred" / "scan")]
    result = run_cli(*args, *extra)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def _dicom_with_identity(folder: Path, **changes: str) -> MedicalImage:
    """A CT series whose headers name a patient, a visit and a hospital (PATIENT, with ``changes``)."""
    pydicom = pytest.importorskip("pydicom")
    from dicom_factory import write_series

    identity = {**PATIENT, **changes}
    volume = sitk.GetImageFromArray(np.random.default_rng(4).integers(0, 1200, (6, 24, 24)).astype(np.int16))
    volume.SetSpacing((0.8, 0.8, 2.5))
    volume.SetOrigin((-10.0, 5.0, 40.0))
    for path in write_series(volume, folder, description="chest"):
        ds = pydicom.dcmread(path)
        for keyword, value in identity.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    assert pydicom.dcmread(next(folder.iterdir())).PatientName == identity["PatientName"]
    return read_image(folder)


def _all_readable_bytes(root: Path) -> dict[str, bytes]:
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            out[str(path)] = data
            if path.name.endswith(".gz"):
                out[str(path) + " (decompressed)"] = gzip.decompress(data)
    return out


def test_dicom_identity_never_reaches_the_dataset(tmp_path, run_cli):
    source = tmp_path / "ZZTOPSECRET_ALICIA_PID778899XQ"  # folder names often carry the patient's name
    image = _dicom_with_identity(source)
    predict_folder(tmp_path / "pred" / source.name, image, seriesuid=source.name)
    result = run_cli("export", "--image", str(source), "--findings", str(tmp_path / "pred" / source.name),
                     "--out", str(tmp_path / "ds"), "--quiet")
    assert result.returncode == 0, result.stderr
    files = _all_readable_bytes(tmp_path / "ds")
    assert any(name.endswith("case_0001_0000.nii.gz (decompressed)") for name in files)
    forbidden = [value for value in PATIENT.values()] + ["ZZTOPSECRET", "ALICIA", "Quixote"]
    for name, data in files.items():
        for value in forbidden:
            assert value.lower().encode() not in data.lower(), f"{value} found in {name}"
    entry = json.loads((tmp_path / "ds" / "medcad_export.json").read_text())["cases"]["case_0001"]
    removed = entry["deidentification"]["identifying_fields_present_and_not_exported"]
    assert set(PATIENT) <= set(removed)
    assert entry["deidentification"]["source_format"] == "DICOM"

    named = run_cli("export", "--image", str(source), "--findings", str(tmp_path / "pred" / source.name),
                    "--out", str(tmp_path / "ds"), "--case", "ZZTOPSECRET_scan", "--quiet")
    assert named.returncode == 2 and "PatientName" in named.stderr


_VERIFY = (
    "import sys\n"
    "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
    "for folder in sys.argv[1:]:\n"
    "    verify_dataset_integrity(folder, 1)\n"
)


def test_nnunet_integrity_check_passes(tmp_path):
    """nnU-Net's own checker, on a 3D dataset of two cases and on a 2D one (in a subprocess:
    it starts a spawn pool, which needs an importable main module)."""
    pytest.importorskip("nnunetv2")
    from napari_medcad.core.export import export_case

    volumes = tmp_path / "Dataset901_MedcadCT"
    for seed in (1, 2):
        image = small_ct(seed)
        findings = Findings(items=[Finding(1, "nodule", 1.0, tuple(image.index_to_world((4, 12, 12))), 5.0,
                                           status=Status.ADDED, source="reader")])
        export_case(image, findings, volumes)
    flat = tmp_path / "Dataset902_MedcadDX"
    picture = MedicalImage(np.arange(30 * 40, dtype=np.uint16).reshape(30, 40), Geometry((0.2, 0.3), (1.0, 2.0),
                                                                                         (1.0, 0.0, 0.0, 1.0)))
    export_case(picture, Findings(items=[Finding(1, "nodule", 1.0, (4.0, 5.0), 2.0, status=Status.ACCEPTED)]), flat)
    env = dict(os.environ, nnUNet_raw=str(tmp_path), nnUNet_preprocessed=str(tmp_path), nnUNet_results=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", _VERIFY, str(volumes), str(flat)], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("verify_dataset_integrity Done") == 2
    assert "Error" not in result.stdout and "Warning" not in result.stdout, result.stdout


_KILLABLE_EXPORT = """
import sys, time
from napari_medcad.core.export import export_case
from napari_medcad.core.findings import read_findings_csv
from napari_medcad.core.io import read_image

image_path, csv_path, labels_path, out = sys.argv[1:5]
def stall(item):
    if item.message == "writing COCO":  # the image and label map are staged by now
        print("STAGED", flush=True)
        time.sleep(120)
export_case(read_image(image_path), read_findings_csv(csv_path), out, labels=read_image(labels_path), progress=stall)
"""


def test_sigkill_half_way_leaves_dataset_unchanged(tmp_path, run_cli):
    first, second = small_ct(1), small_ct(2)
    write_image(first, tmp_path / "first.nii.gz")
    write_image(second, tmp_path / "second.nii.gz")
    predict_folder(tmp_path / "pred" / "first", first)
    predict_folder(tmp_path / "pred" / "second", second)
    dataset = tmp_path / "ds"
    done = run_cli("export", "--image", str(tmp_path / "first.nii.gz"), "--findings", str(tmp_path / "pred" / "first"),
                   "--out", str(dataset), "--quiet")
    assert done.returncode == 0, done.stderr
    before = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*") if p.is_file()}

    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_EXPORT, str(tmp_path / "second.nii.gz"),
         str(tmp_path / "pred" / "second" / "findings.csv"), str(tmp_path / "pred" / "second" / "labels.nii.gz"),
         str(dataset)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        line = process.stdout.readline()
        assert line.strip() == "STAGED", process.stderr.read() if process.poll() is not None else line
        assert time.monotonic() < deadline
        staging = list(dataset.glob(dataset_module.STAGING_PREFIX + "*"))
        assert len(staging) == 1
        assert (staging[0] / "files" / "labelsTr" / "case_0002.nii.gz").is_file()  # really half-way
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    after = {p.relative_to(dataset): p.read_bytes() for p in dataset.rglob("*")
             if p.is_file() and not p.relative_to(dataset).parts[0].startswith(dataset_module.STAGING_PREFIX)}
    assert after == before

    again = run_cli("export", "--image", str(tmp_path / "second.nii.gz"), "--findings",
                    str(tmp_path / "pred" / "second"), "--out", str(dataset), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "exported case_0002" in again.stdout
    assert not list(dataset.glob(dataset_module.STAGING_PREFIX + "*"))
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["case_0001.nii.gz", "case_0002.nii.gz"]


def test_identifier_guard_refuses_a_leak_and_changes_nothing(tmp_path):
    """A class name typed as the patient's name would reach dataset.json: the export refuses."""
    from napari_medcad.core.errors import MedcadError
    from napari_medcad.core.export import export_case

    source = tmp_path / "series"
    image = _dicom_with_identity(source)
    findings = Findings(items=[Finding(1, "Zztopsecret lesion", 1.0, tuple(image.index_to_world((3, 12, 12))), 4.0,
                                       status=Status.ADDED, source="reader")])
    with pytest.raises(MedcadError, match="PatientName would appear in"):
        export_case(image, findings, tmp_path / "ds", source_path=source)
    assert [p.name for p in (tmp_path / "ds").iterdir()] == [dataset_module.LOCK_NAME]
    findings.items[0].label = "nodule"
    assert export_case(image, findings, tmp_path / "ds", source_path=source).identifying_fields_removed


def test_identifier_guard_reads_image_headers(tmp_path):
    """A NIfTI description naming the patient is caught; the same text in voxels is not searched."""
    nib = pytest.importorskip("nibabel")
    from napari_medcad.core.errors import MedcadError
    from napari_medcad.core.export.deidentify import check_no_identifiers, read_source_header

    _dicom_with_identity(tmp_path / "series")
    header = read_source_header(tmp_path / "series")
    named = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    named.header["descrip"] = b"ZZTOPSECRET^ALICIA"
    nib.save(named, tmp_path / "named.nii.gz")
    with pytest.raises(MedcadError, match="PatientName"):
        check_no_identifiers([tmp_path / "named.nii.gz"], header, "case_0001")
    spelled = np.frombuffer(b"ZZTOPSECRET^ALICIA" * 4, dtype=np.int16).reshape(4, 3, 3)
    nib.save(nib.Nifti1Image(spelled, np.eye(4)), tmp_path / "voxels.nii.gz")
    check_no_identifiers([tmp_path / "voxels.nii.gz"], header, "case_0001")


def test_export_2d_from_a_findings_csv(tmp_path, run_cli):
    """A 2D image and a plain findings CSV (whose rows carry z = 0): COCO gets the reader's finding."""
    pycocotools = pytest.importorskip("pycocotools.coco")
    picture = MedicalImage(np.random.default_rng(2).integers(0, 4000, (40, 50)).astype(np.uint16),
                           Geometry((0.5, 0.5), (10.0, -5.0), (1.0, 0.0, 0.0, 1.0)), modality="DX")
    write_image(picture, tmp_path / "chest.nii.gz")
    findings = Findings(items=[
        Finding(1, "nodule", 1.0, tuple(picture.index_to_world((20, 25))), 6.0, status=Status.ADDED, source="reader"),
        Finding(2, "nodule", 0.4, tuple(picture.index_to_world((5, 5))), 3.0, status=Status.REJECTED)])
    (tmp_path / "findings.csv").write_text(findings.to_csv(seriesuid="chest"))
    result = run_cli("export", "--image", str(tmp_path / "chest.nii.gz"), "--findings", str(tmp_path / "findings.csv"),
                     "--out", str(tmp_path / "ds"), "--case", "chest-1", "--quiet")
    assert result.returncode == 0, result.stderr
    coco = pycocotools.COCO(str(tmp_path / "ds" / "coco.json"))
    (annotation,) = coco.dataset["annotations"]
    mask = coco.annToMask(annotation).astype(bool)
    assert mask[20, 25] and not mask[5, 5]
    x, y, w, h = annotation["bbox"]
    assert abs(w * 0.5 - 6.0) <= 1.0 and abs(h * 0.5 - 6.0) <= 1.0  # a 6 mm disc on 0.5 mm pixels
    candidates = (tmp_path / "ds" / "candidates.csv").read_text().splitlines()
    assert candidates[1:] == ["chest-1,22.500,5.000,0.000,1", "chest-1,12.500,-2.500,0.000,0"]


def _reader_findings(image: MedicalImage, label: str = "nodule") -> Findings:
    return Findings(items=[
        Finding(1, label, 1.0, tuple(image.index_to_world((3, 12, 12))), 4.0, status=Status.ADDED, source="reader"),
        Finding(2, "nodule", 0.4, tuple(image.index_to_world((2, 5, 5))), 3.0, status=Status.REJECTED)])


@pytest.mark.parametrize("identity", [
    {"InstitutionName": "Princess Margaret Cancer Centre"},  # "centre" as in centre_world_mm
    {"PatientName": "CASE^ROBERT"},  # the pseudonyms' "case"
    {"PatientName": "BALL^PETER"},  # how a lesion was drawn: "ball"
    {"PatientName": "SMITH^MONA"},  # monai
    {"PatientName": "DENT^ARTHUR"},  # identifying_fields...
    {"PatientName": "CHAN^WAI MAN"},  # channel_names
    {"PatientName": "DING^WEI"},  # file_ending
    {"PatientName": "ABEL^KARL"},  # label
    {"PatientName": "FIELD^ANNA"},
    {"PatientID": "0001"},  # the first pseudonym's number
], ids=lambda identity: "-".join(identity.values()))
def test_ordinary_names_do_not_stop_an_export(tmp_path, identity):
    """Words of the exporter's own text are not the patient's; the patient's values still appear nowhere."""
    from napari_medcad.core.export import export_case

    image = _dicom_with_identity(tmp_path / "series", **identity)
    result = export_case(image, _reader_findings(image), tmp_path / "ds", source_path=tmp_path / "series")
    assert result.case == ("case_0002" if identity.get("PatientID") == "0001" else "case_0001")
    full = [value for value in {**PATIENT, **identity}.values() if not value.isdigit()]
    for name, data in _all_readable_bytes(tmp_path / "ds").items():
        for value in full:
            assert value.lower().encode() not in data.lower(), f"{value} found in {name}"


@pytest.mark.parametrize("identity, case_name, label, message", [
    ({"PatientName": "BALL^PETER"}, None, "Ball opacity", "PatientName would appear in the class name of finding 1"),
    ({"PatientName": "CASE^ROBERT"}, "robert_case", "nodule", "case name contains the patient's PatientName"),
    ({"PatientName": "SMITH^JOHN"}, "johnsmith", "nodule", "case name contains the patient's PatientName"),
    ({"PatientID": "0001"}, "lung_0001", "nodule", "case name contains the patient's PatientID"),
    ({"PatientName": "CHAN^WAI MAN"}, None, "nodule wai-man", "PatientName would appear in dataset.json"),
    ({}, None, "nodule 19231107", "PatientBirthDate would appear in dataset.json"),
], ids=["vocabulary-word-typed", "user-case-name", "run-together", "pseudonym-like", "words-apart", "date"])
def test_identifiers_typed_into_the_case_are_still_refused(tmp_path, identity, case_name, label, message):
    from napari_medcad.core.errors import MedcadError
    from napari_medcad.core.export import export_case

    image = _dicom_with_identity(tmp_path / "series", **identity)
    with pytest.raises(MedcadError, match=message):
        export_case(image, _reader_findings(image, label), tmp_path / "ds", case_name=case_name,
                    source_path=tmp_path / "series")
    assert [p.name for p in (tmp_path / "ds").iterdir()] == [dataset_module.LOCK_NAME]


def test_exporter_words_are_its_own_text_only():
    """The words excused from the search come from the exporter's string constants: they hold
    its vocabulary and nothing of the test patients above."""
    from napari_medcad.core.export.deidentify import exporter_words

    words = exporter_words()
    assert {"case", "ball", "centre", "label", "channel", "mask", "accepted", "reader", "note"} <= words
    assert not {"zztopsecret", "alicia", "doe", "john", "quixote", "robert", "peter"} & words


@pytest.mark.parametrize("rows, code, message", [
    ("x,-20,-10,55,0.9,4.0,nodule,0,Accepted\nx,-15,-5,58,0.9,3.0,nodule,1.0,REJECTED\n", 0, "exported case_0001"),
    ("x,-20,-10,55,0.9,4.0,nodule,1,accepted\nx,-15,-5,58,0.9,3.0,nodule,1,rejected\n", 2, "line 3: id 1 is already"),
    ("x,-20,-10,55,0.9,nan,nodule,1,accepted\n", 2, "line 2: diameter_mm is 'nan'"),
    ("x,500,-10,55,0.9,4.0,nodule,1,accepted\n", 2, "finding 1 (accepted) lies outside the image"),
    ("x,-20,-10,55,0.9,4.0,ignore,1,accepted\n", 2, "nnU-Net's name for voxels left out of training"),
])
def test_hand_written_findings_csv(tmp_path, run_cli, rows, code, message):
    """One line and exit 2 for mistakes, no traceback; what a person means is read as meant."""
    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    (tmp_path / "findings.csv").write_text("seriesuid,coordX,coordY,coordZ,probability,diameter_mm,label,id,status\n"
                                           + rows)
    result = run_cli("export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "findings.csv"),
                     "--out", str(tmp_path / "ds"), "--quiet")
    assert result.returncode == code, result.stderr
    assert message in (result.stdout + result.stderr) and "Traceback" not in result.stderr
    if code:
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_findings_table_of_several_series_needs_the_images_seriesuid(tmp_path, run_cli):
    """LUNA16's annotations.csv holds every scan's nodules: read whole, another scan's would be
    exported as this one's.  Refused in one line; --seriesuid picks this image's rows."""
    image = small_ct()
    write_image(image, tmp_path / "scan.nii.gz")
    (tmp_path / "annotations.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                                              "1.2.3,-20,-10,55,4.0\n1.2.4,-15,-5,58,3.0\n1.2.3,-18,-8,56,3.5\n")
    command = ("export", "--image", str(tmp_path / "scan.nii.gz"), "--findings", str(tmp_path / "annotations.csv"),
               "--out", str(tmp_path / "ds"), "--quiet")
    refused = run_cli(*command)
    assert refused.returncode == 2 and "holds the findings of 2 series" in refused.stderr
    assert "'1.2.3', '1.2.4'" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()
    unknown = run_cli(*command, "--seriesuid", "9.9")
    assert unknown.returncode == 2 and "no row of series '9.9'" in unknown.stderr
    done = run_cli(*command, "--seriesuid", "1.2.3")
    assert done.returncode == 0, done.stderr
    assert "2 pending" in done.stdout  # the two rows of 1.2.3, not 1.2.4's
