"""The findings table: world/voxel positions, statuses, CSV in LUNA16 columns, JSON round trip."""

import csv
import io

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.findings import LUNA_COLUMNS, Finding, Findings, Status, read_findings_csv
from napari_medcad.core.image import Geometry

GEOMETRY = Geometry((0.7, 0.8, 2.5), (-100.0, 50.0, -300.0), (1, 0, 0, 0, -1, 0, 0, 0, 1))


def make_findings() -> Findings:
    findings = Findings(geometry=GEOMETRY, shape_zyx=(40, 100, 100), image_signature="abc")
    for k, (index, probability) in enumerate([((10, 20, 30), 0.9), ((5.5, 60, 70), 0.4)], start=1):
        findings.add(Finding(
            id=k, label="nodule", probability=probability,
            centre_world_mm=findings.index_to_world(index), centre_index_zyx=index, diameter_mm=6.0 + k,
        ))
    return findings


def test_world_and_index_agree_with_geometry():
    findings = make_findings()
    first = findings[1]
    np.testing.assert_allclose(first.centre_world_mm, GEOMETRY.index_to_world([10, 20, 30]))
    np.testing.assert_allclose(findings.world_to_index(first.centre_world_mm), [10, 20, 30], atol=1e-9)
    # the flipped y axis: index y grows -> world y falls
    assert findings.index_to_world([0, 1, 0])[1] < findings.index_to_world([0, 0, 0])[1]


def test_csv_starts_with_luna_columns_and_round_trips(tmp_path):
    findings = make_findings()
    findings[2].status = Status.REJECTED
    text = findings.to_csv("case_001")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == LUNA_COLUMNS
    assert rows[0][5:7] == ["diameter_mm", "label"]
    assert rows[1][0] == "case_001" and float(rows[1][4]) == pytest.approx(0.9)
    path = tmp_path / "findings.csv"
    path.write_text(text)
    back = read_findings_csv(path, GEOMETRY)
    assert [f.id for f in back] == [1, 2]
    assert back[2].status is Status.REJECTED
    np.testing.assert_allclose(back[1].centre_world_mm, findings[1].centre_world_mm, atol=1e-3)
    np.testing.assert_allclose(back[1].centre_index_zyx, [10, 20, 30], atol=1e-2)
    only_rejected = findings.to_csv("c", statuses=[Status.REJECTED]).strip().splitlines()
    assert len(only_rejected) == 2


def test_json_round_trip_keeps_everything():
    findings = make_findings()
    findings[1].note = "spiculated"
    findings[1].scores["gnn"] = 0.7
    back = Findings.from_json(findings.to_json())
    assert back.to_dict() == findings.to_dict()
    assert back.geometry == GEOMETRY


def test_ids_statuses_and_copies_are_independent():
    findings = make_findings()
    assert findings.next_id() == 3
    with pytest.raises(ValueError):
        findings.add(Finding(id=1, label="nodule", probability=1, centre_world_mm=(0, 0, 0), diameter_mm=1))
    copy = findings.copy()
    copy[1].status = Status.ACCEPTED
    assert findings[1].status is Status.PENDING
    assert [f.id for f in copy.with_status(Status.ACCEPTED)] == [1]
    assert Status.ADDED.is_positive and not Status.REJECTED.is_positive
    assert [f.id for f in findings.above(0.5)] == [1]


def test_bad_csv_is_a_user_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,value\nfoo,1\n")
    with pytest.raises(MedcadError, match="coordX"):
        read_findings_csv(path)


def test_non_finite_positions_are_refused():
    with pytest.raises(MedcadError):
        Finding(id=1, label="x", probability=0.5, centre_world_mm=(0, float("nan"), 0), diameter_mm=1)


def test_csv_of_a_2d_image_reads_back_on_its_grid(tmp_path):
    geometry = Geometry((0.5, 0.5), (-10.0, 20.0), (1.0, 0.0, 0.0, 1.0))
    findings = Findings(geometry=geometry, shape_zyx=(100, 100))
    findings.add(Finding(id=1, label="nodule", probability=0.8, centre_world_mm=(-5.0, 30.0), diameter_mm=4.0,
                         centre_index_zyx=(20.0, 10.0)))
    path = tmp_path / "findings.csv"
    path.write_text(findings.to_csv("film"))
    [back] = read_findings_csv(path, geometry)
    assert back.centre_world_mm == (-5.0, 30.0)
    np.testing.assert_allclose(back.centre_index_zyx, (20.0, 10.0))


HEADER = "seriesuid,coordX,coordY,coordZ,probability,diameter_mm,label,id,status\n"


def test_hand_written_csv_is_read_as_meant(tmp_path):
    """0-based ids, '1.0' for 1, statuses in any letter case, a spreadsheet's byte-order mark."""
    path = tmp_path / "findings.csv"
    path.write_text("\ufeff" + HEADER + "x,1,2,3,0.9,4.0,nodule,0,Accepted\n"
                    "x,4,5,6,0.5,3.0,nodule,1.0, REJECTED \n"
                    "x,7,8,9,,,,,\n", encoding="utf-8")
    findings = read_findings_csv(path)
    assert [(f.id, f.status) for f in findings] == [(0, Status.ACCEPTED), (1, Status.REJECTED), (2, Status.PENDING)]
    assert findings[2].probability == 1.0 and findings[2].diameter_mm == 0.0 and findings[2].label == "nodule"


def test_descriptive_columns_may_be_nan(tmp_path):
    """volume_mm3 and mean_hu are only described, never used: 'nan' there means not measured."""
    path = tmp_path / "findings.csv"
    path.write_text("coordX,coordY,coordZ,volume_mm3,mean_hu\n1,2,3,nan,NaN\n4,5,6,12.5,-650\n")
    first, second = read_findings_csv(path)
    assert first.volume_mm3 is None and first.mean_hu is None
    assert second.volume_mm3 == 12.5 and second.mean_hu == -650


@pytest.mark.parametrize("rows, message", [
    ("x,1,2,3,0.9,4,nodule,1,accepted\nx,4,5,6,0.9,4,nodule,1,rejected\n", "line 3: id 1 is already used on line 2"),
    ("x,1,2,3,0.9,4,nodule,1,acepted\n", "line 2: unknown status 'acepted'"),
    ("x,1,2,3,0.9,4,nodule,1.5,accepted\n", "line 2: id '1.5' is not a whole number"),
    ("x,1,2,3,0.9,4,nodule,-1,accepted\n", "line 2: id '-1' is not a whole number"),
    ("x,1,2,3,0.9,4,nodule,one,accepted\n", "line 2: id 'one' is not a whole number"),
    ("x,1,2,3,0.9,nan,nodule,1,accepted\n", "line 2: diameter_mm is 'nan'"),
    ("x,1,2,3,0.9,-4,nodule,1,accepted\n", "line 2: diameter_mm is -4; a diameter cannot be negative"),
    ("x,1,2,3,inf,4,nodule,1,rejected\n", "line 2: probability is 'inf'"),
    ("x,1,2,3,high,4,nodule,1,rejected\n", "line 2: probability 'high' is not a number"),
    ("x,nan,2,3,0.9,4,nodule,1,accepted\n", "line 2: coordX is 'nan'"),
    ("x,1,,3,0.9,4,nodule,1,accepted\n", "line 2: coordY is empty"),
])
def test_csv_mistakes_are_one_line_user_errors(tmp_path, rows, message):
    path = tmp_path / "findings.csv"
    path.write_text(HEADER + rows)
    with pytest.raises(MedcadError, match=message) as caught:
        read_findings_csv(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_measurement_problem_names_what_an_export_cannot_take():
    from napari_medcad.core.findings import measurement_problem

    def finding(probability=0.5, diameter=4.0):
        return Finding(id=1, label="nodule", probability=probability, centre_world_mm=(0, 0, 0), diameter_mm=diameter)

    assert measurement_problem(finding()) is None
    assert "probability of inf" in measurement_problem(finding(probability=float("inf")))
    assert "diameter of nan" in measurement_problem(finding(diameter=float("nan")))
    assert "diameter of -1.0" in measurement_problem(finding(diameter=-1.0))
