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
