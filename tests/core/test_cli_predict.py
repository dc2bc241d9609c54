"""`napari-medcad predict`, `phantom` and `models` end to end, as a user runs them.

The model is a real user model folder (card + TorchScript, tests/model_factory.py) whose
findings are exactly the bright blobs, so positions can be checked in world mm.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from dicom_factory import write_series
from model_factory import write_bright_blob_model
from napari_medcad.commands.predict import case_name, unique_case_names

sitk = pytest.importorskip("SimpleITK")

LUNA_FIRST = ["seriesuid", "coordX", "coordY", "coordZ", "probability", "diameter_mm", "label"]
BLOB_INDEX_XYZ = [(10, 12, 3), (24, 20, 6)]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "blobs"
    write_bright_blob_model(folder, roi_size_zyx=(8, 24, 24))
    return folder


@pytest.fixture(scope="module")
def phantom(tmp_path_factory, run_cli) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    result = run_cli("phantom", "--out", str(out), "--cases", "1", "--seed", "5", "--shape", "16", "48", "48",
                     "--spacing", "7.5", "7.5", "15")
    assert result.returncode == 0, result.stderr
    (image,) = [Path(line) for line in result.stdout.split()]
    assert image.is_file() and (out / "annotations.csv").is_file()
    return image


def blob_volume() -> "sitk.Image":
    """An oblique (rotated, flipped) CT volume in HU with two bright blobs."""
    array = np.full((8, 32, 36), -900, np.int16)
    zz, yy, xx = np.mgrid[:8, :32, :36]
    for x, y, z in BLOB_INDEX_XYZ:
        array[((xx - x) * 0.8) ** 2 + ((yy - y) * 0.8) ** 2 + ((zz - z) * 2.0) ** 2 <= 2.6 ** 2] = 800
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.0))
    image.SetOrigin((100.0, -50.0, 20.0))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    return image


def read_rows(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def same_geometry(a: "sitk.Image", b: "sitk.Image") -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def test_predict_phantom_dicom_and_a_bad_case(tmp_path, run_cli, model, phantom):
    dicom = tmp_path / "series one"
    source = blob_volume()
    write_series(source, dicom, description="DOE^JANE chest 1950-01-01")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    out = tmp_path / "out"

    result = run_cli("predict", str(phantom), str(bad), str(dicom), "--model", str(model), "--out", str(out),
                     "--device", "cpu", timeout=240)

    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("napari-medcad predict:")]
    assert len(errors) == 1 and "broken" in errors[0] and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["phantom_s5_000", "series_one"]  # the others were done

    for case, reference in (("phantom_s5_000", sitk.ReadImage(str(phantom))), ("series_one", source)):
        folder = out / case
        columns, rows = read_rows(folder / "findings.csv")
        assert columns[:7] == LUNA_FIRST
        assert all(row["seriesuid"] == case for row in rows)
        labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
        same_geometry(labels, reference)
        ids = {int(row["id"]) for row in rows}
        assert set(np.unique(sitk.GetArrayFromImage(labels))) - {0} == ids
        report = json.loads((folder / "report.json").read_text())
        assert report["model"]["name"] == "blobs" or report["model"]["name"] == "bright-blobs"
        assert report["device"] == "cpu" and report["timings_s"]["total_s"] > 0
        assert report["preprocessing"]["steps"][0]["op"] == "window" and "torch" in report["versions"]
        assert not list(folder.glob(".*partial*"))  # atomic writes leave no temporary files
        assert report["image"]["name"] == case  # never the series description
        assert "DOE" not in (folder / "report.json").read_text()

    progress = [line for line in result.stderr.splitlines() if line.startswith("series_one: ")]
    assert 2 <= len(progress) <= 11, progress  # one line per 10 %, not one per step or slice
    assert progress[0].startswith("series_one:   0% ") and progress[-1].startswith("series_one: 100% ")
    assert not any(line.endswith("% done") for line in progress)

    _, rows = read_rows(out / "series_one" / "findings.csv")
    found = sorted(tuple(float(row[k]) for k in ("coordX", "coordY", "coordZ")) for row in rows)
    expected = sorted(source.TransformIndexToPhysicalPoint(index) for index in BLOB_INDEX_XYZ)
    np.testing.assert_allclose(np.array(found), np.array(expected), atol=0.4)
    assert all(float(row["probability"]) > 0.9 for row in rows)


def test_same_names_get_unique_safe_case_folders(tmp_path, run_cli, model):
    image = sitk.Image(sitk.GetImageFromArray(np.full((8, 24, 24), -900, np.int16)))
    inputs = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "scan;rm -rf ~.nii.gz"
        sitk.WriteImage(image, str(path))
        inputs.append(str(path))
    out = tmp_path / "out"
    result = run_cli("predict", *inputs, "--model", str(model), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["scan_rm_-rf", "scan_rm_-rf_2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]
    _, rows = read_rows(out / "scan_rm_-rf" / "findings.csv")
    assert rows == []  # no bright blob, no finding; the table still has its header


def test_a_case_that_cannot_be_written_fails_alone(tmp_path, run_cli, model):
    image = sitk.GetImageFromArray(np.full((8, 24, 24), -900, np.int16))
    inputs = [tmp_path / "first.nii.gz", tmp_path / "second.nii.gz"]
    for path in inputs:
        sitk.WriteImage(image, str(path))
    out = tmp_path / "out"
    out.mkdir()
    (out / "first").write_text("a file where the case's folder goes")
    result = run_cli("predict", *map(str, inputs), "--model", str(model), "--out", str(out), "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "first" in line]
    assert line.startswith("napari-medcad predict: first: cannot write")
    assert (out / "second" / "findings.csv").is_file()


@pytest.mark.parametrize("given, expected", [
    ("/data/CT scan 01.nii.gz", "CT_scan_01"),
    ("../../etc/passwd", "passwd"),
    ("/x/..", "case"),
    ("/", "case"),
    ("/data/DICOM/", "DICOM"),
    ("/x/.hidden.nrrd", "hidden"),
    ("/x/a..b.mha", "a.b"),
    ("/x/Müller^Hans.dcm", "Muller_Hans"),
    ("/x/été.nii.gz", "ete"),
    ("/x/e\u0301te\u0301.nii.gz", "ete"),  # decomposed accents (macOS names) too
    ("/x/Straße 2.nrrd", "Stra_e_2"),
    ("/x/肺.nii", "case"),
    (os.fsdecode(b"/x/\xe9t\xe9.nii.gz"), "ete"),  # Latin-1 bytes on a UTF-8 system
    ("/x/" + "n" * 300 + ".nii", "n" * 96),
])
def test_case_names_are_safe(given, expected):
    name = case_name(given)
    assert name == expected
    assert "/" not in name and "\\" not in name and ".." not in name and not name.startswith(".")


def test_unique_case_names():
    assert unique_case_names(["/a/scan.nii.gz", "/b/scan.nii.gz", "/c/SCAN.nrrd", "/d/scan_2.nii"]) == [
        "scan", "scan_2", "SCAN_3", "scan_2_2"]


def test_unknown_model_or_device_is_one_line(tmp_path, run_cli, phantom):
    result = run_cli("predict", str(phantom), "--model", "no-such-model", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "unknown model 'no-such-model'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_device_that_is_not_there_is_one_line_and_no_case_is_written(tmp_path, run_cli, phantom):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = tmp_path / "o"
    result = run_cli("predict", str(phantom), str(phantom), "--device", "cuda", "--out", str(out))
    assert result.returncode == 2 and "CUDA was requested but no CUDA GPU is available" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not list(out.glob("*/findings.csv"))


def test_models_lists_builtin_and_user_models(tmp_path, run_cli, monkeypatch):
    user = tmp_path / "user models"
    write_bright_blob_model(user / "blobs", name="user-blobs")
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(user))
    result = run_cli("models", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["user_model_dir"] == str(user)
    rows = {row["name"]: row for row in listing["models"]}
    assert rows["user-blobs"]["from"] == str(user / "blobs") and rows["user-blobs"]["task"] == "detection"
    assert all(row["from"] == "built-in" for name, row in rows.items() if name != "user-blobs")
    text = run_cli("models").stdout
    assert "user-blobs" in text and f"user model folder: {user}" in text


@pytest.mark.parametrize("flags, expected", [([], None), (["--rescore"], True), (["--no-rescore"], False)])
def test_rescore_flag_defaults_to_the_cards_advice(flags, expected):
    """No flag: run_model follows the card's inference.rescore_by_default; the flags override it."""
    import argparse

    from napari_medcad.commands.predict import arguments

    parser = argparse.ArgumentParser()
    arguments(parser)
    assert parser.parse_args(["ct.nii.gz", "--out", "out", *flags]).rescore is expected


def test_predict_reports_reader_notes_and_reads_names_that_are_not_utf8(tmp_path, run_cli, model):
    """A series with a missing slice is resampled (so findings keep their world positions) and the
    user is told, on stderr and in report.json; a file name that is not UTF-8 no longer aborts
    the whole batch inside SimpleITK."""
    import os

    source = blob_volume()
    files = write_series(source, tmp_path / "series gap", description="chest")
    files[1].unlink()  # slice 1 of 8 missing: the slices after it were placed 1.3 mm off
    plain = tmp_path / "plain.nii.gz"
    sitk.WriteImage(source, str(plain))
    latin1 = os.fsencode(tmp_path) + b"/\xe9t\xe9.nii.gz"
    try:
        os.rename(os.fsencode(plain), latin1)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"

    result = run_cli("predict", os.fsdecode(latin1), str(tmp_path / "series gap"), "--model", str(model),
                     "--out", str(out), "--device", "cpu", "--quiet", timeout=240)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ete", "series_gap"]  # the Latin-1 name, read as such
    notes = [line for line in result.stderr.splitlines() if line.startswith("series_gap: note: ")]
    assert len(notes) == 1 and "not evenly spaced" in notes[0], result.stderr
    report = json.loads((out / "series_gap" / "report.json").read_text())
    assert len(report["notes"]) == 1 and "resampled to 8 slices" in report["notes"][0]
    assert json.loads((out / "ete" / "report.json").read_text())["notes"] == []
    expected = sorted(source.TransformIndexToPhysicalPoint(index) for index in BLOB_INDEX_XYZ)
    for case in ("series_gap", "ete"):
        _, rows = read_rows(out / case / "findings.csv")
        found = sorted(tuple(float(row[k]) for k in ("coordX", "coordY", "coordZ")) for row in rows)
        np.testing.assert_allclose(np.array(found), np.array(expected), atol=0.4, err_msg=case)


def test_the_first_case_is_not_kept_waiting_by_a_warm_up_that_failed(monkeypatch):
    """predict's first case waits for the detector's imports only; if the warm-up itself fails,
    the wait ends anyway (the failure repeats, with its message, where the case uses the module)."""
    import threading

    from napari_medcad.commands import predict
    from napari_medcad.core.inference import run

    def broken(graph, ready):
        raise RuntimeError("import failed")

    monkeypatch.setattr(run, "warm_up", broken)
    ready = threading.Event()
    predict._warm_up(True, ready)
    assert ready.is_set()
