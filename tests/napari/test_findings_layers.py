"""The Findings <-> layers adapter: world positions on oblique and flipped grids, the round trip,
and the reader's edits (moved, added, deleted, re-classified points) coming back as Findings.

A ViewerModel (no Qt canvas) is enough: these are layer models, not drawing."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel

from napari_medcad.core.findings import Finding, Findings, Status
from napari_medcad.core.image import Geometry, MedicalImage, lps_to_napari_world, napari_world_to_lps
from napari_medcad.napari.findings_layers import (
    ROLE_BOXES,
    ROLE_HEATMAP,
    ROLE_LABELS,
    ROLE_POINTS,
    add_findings_layers,
    findings_from_points,
    findings_layer_data,
    findings_layers_of,
    layers_edited,
    role_of,
)


def oblique_geometry(ndim: int) -> Geometry:
    """Rotated 30 degrees in-plane with the y axis flipped (and z reversed in 3-D)."""
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    if ndim == 2:
        direction = np.array([[c, s], [s, -c]])
        return Geometry((0.7, 0.9), (12.0, -40.0), tuple(direction.ravel()))
    direction = np.array([[c, s, 0], [s, -c, 0], [0, 0, -1]])
    return Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 80.0), tuple(direction.ravel()))


def make_case(ndim: int):
    geometry = oblique_geometry(ndim)
    shape = (12, 40, 50)[-ndim:]
    image = MedicalImage(np.zeros(shape, np.int16), geometry, modality="CT", name="scan")
    findings = Findings(geometry=geometry, shape_zyx=shape, image_signature="sig", provenance={"model": "m"})
    labels = np.zeros(shape, np.uint16)
    for number, centre in enumerate([(4, 10, 12), (8, 25, 30)][:2], start=1):
        centre = centre[-ndim:]
        start = tuple(c - 2 for c in centre)
        stop = tuple(c + 3 for c in centre)
        labels[tuple(slice(a, b) for a, b in zip(start, stop))] = number
        findings.add(Finding(
            id=number, label="nodule", probability=0.5 + 0.2 * number,
            centre_world_mm=tuple(geometry.index_to_world(centre)), centre_index_zyx=centre, diameter_mm=4.0 + number,
            volume_mm3=30.0 * number, mean_hu=20.0, bbox_index_zyx=(start, stop), mask_value=number,
        ))
    return image, findings, image.with_array(labels, modality="SEG"), image.with_array(np.random.rand(*shape).astype(np.float32))


def add(viewer, ndim=3):
    image, findings, labels, probability = make_case(ndim)
    layers = add_findings_layers(viewer, findings_layer_data(
        findings, image, labels=labels, probability=probability, model="m", model_version="1", source_layer="scan"))
    return image, findings, {role_of(layer): layer for layer in layers}


@pytest.mark.parametrize("ndim", [2, 3])
def test_layers_sit_at_the_findings_world_positions(ndim):
    viewer = ViewerModel()
    image, findings, layers = add(viewer, ndim)
    assert [role_of(layer) for layer in viewer.layers] == [ROLE_HEATMAP, ROLE_LABELS, ROLE_BOXES, ROLE_POINTS]
    points = layers[ROLE_POINTS]
    for finding, data in zip(findings, points.data):
        np.testing.assert_allclose(points.data_to_world(data), lps_to_napari_world(finding.centre_world_mm), atol=1e-9)
    # the masks and heatmap lie on the image grid: a labelled voxel maps to the same world point
    for role in (ROLE_LABELS, ROLE_HEATMAP):
        index = np.array([4, 10, 12][-ndim:], float)
        np.testing.assert_allclose(layers[role].data_to_world(index),
                                   lps_to_napari_world(image.index_to_world(index)), atol=1e-9)
    assert layers[ROLE_LABELS].data[tuple([4, 10, 12][-ndim:])] == 1
    # boxes: one rectangle per finding, on its centre slice in 3-D, centred on it and as wide as
    # its box (5 voxels, edge to edge)
    boxes = layers[ROLE_BOXES]
    ids = list(boxes.features["id"])
    assert ids == [1, 2]
    for rectangle, finding_id in zip(boxes.data, ids):
        centre_world = napari_world_to_lps(boxes.data_to_world(rectangle.mean(axis=0)))
        np.testing.assert_allclose(image.world_to_index(centre_world),
                                   image.world_to_index(findings[finding_id].centre_world_mm), atol=1e-9)
        np.testing.assert_allclose(np.ptp(rectangle, axis=0)[-2:], [5, 5], atol=1e-9)
        if ndim == 3:
            assert np.ptp(rectangle[:, 0]) == 0  # flat: drawn on one slice
    for layer in layers.values():
        info = layer.metadata["medcad"]
        assert info["model"] == "m" and info["source_layer"] == "scan" and info["role"] == role_of(layer)
    assert list(points.features["probability"]) == [0.7, 0.9]
    assert list(points.features["status"]) == ["pending", "pending"]
    assert findings_layers_of(viewer.layers, "scan") == list(viewer.layers)
    assert findings_layers_of(viewer.layers, "other") == []


@pytest.mark.parametrize("ndim", [2, 3])
def test_round_trip_without_edits_is_exact(ndim):
    viewer = ViewerModel()
    _, findings, layers = add(viewer, ndim)
    back = findings_from_points(layers[ROLE_POINTS])
    assert [f.to_dict() for f in back] == [f.to_dict() for f in findings]
    assert back.geometry == findings.geometry and back.image_signature == "sig"
    assert not layers_edited(layers.values())


def test_reader_edits_come_back():
    viewer = ViewerModel()
    image, findings, layers = add(viewer)
    points = layers[ROLE_POINTS]
    data = points.data.copy()
    data[0] += [0.0, 3.0, -2.0]  # move finding 1 by 3 rows and -2 columns
    points.data = data
    features = points.features.copy()
    features.loc[1, "status"] = "rejected"
    points.features = features
    points.add(np.array([[6.0, 20.0, 40.0]]))  # a nodule the model missed
    back = findings_from_points(points)
    moved, rejected, added = back.items
    np.testing.assert_allclose(moved.centre_world_mm, image.index_to_world(np.array([4, 13, 10])), atol=1e-9)
    np.testing.assert_allclose(moved.centre_index_zyx, (4, 13, 10), atol=1e-9)
    assert moved.status == Status.EDITED and moved.id == 1 and moved.bbox_index_zyx is None
    assert rejected.status == Status.REJECTED and rejected.centre_world_mm == findings[2].centre_world_mm
    assert added.status == Status.ADDED and added.source == "reader" and added.id == 3
    np.testing.assert_allclose(added.centre_world_mm, image.index_to_world(np.array([6.0, 20.0, 40.0])), atol=1e-9)
    assert added.diameter_mm > 0
    assert layers_edited([points])

    points.selected_data = {0}
    points.remove_selected()
    assert [f.id for f in findings_from_points(points)] == [2, 3]


def test_copied_ids_become_new_findings():
    """napari copies the selected point's features to a new point: it must not steal that id."""
    viewer = ViewerModel()
    _, findings, layers = add(viewer)
    points = layers[ROLE_POINTS]
    features = points.features.copy()
    points.add(np.array([[2.0, 30.0, 5.0]]))
    features.loc[len(features)] = features.iloc[0]  # a duplicate of finding 1's row
    points.features = features
    back = findings_from_points(points)
    assert [f.id for f in back] == [1, 2, 3] and back[3].status == Status.ADDED
    assert back[1].centre_world_mm == findings[1].centre_world_mm


def test_painting_masks_marks_them_edited():
    viewer = ViewerModel()
    _, _, layers = add(viewer)
    assert not layers_edited(layers.values())
    layers[ROLE_LABELS].paint((2, 5, 5), 1)
    assert layers_edited(layers.values())


def test_no_findings_still_gives_layers_to_add_to():
    viewer = ViewerModel()
    image, _, _, _ = make_case(3)
    empty = Findings(geometry=image.geometry, shape_zyx=image.spatial_shape)
    layers = add_findings_layers(viewer, findings_layer_data(empty, image, source_layer="scan"))
    points = layers[-1]
    assert points.data.shape == (0, 3) and role_of(points) == ROLE_POINTS
    points.add(np.array([[3.0, 4.0, 5.0]]))
    (added,) = findings_from_points(points).items
    assert added.id == 1 and added.status == Status.ADDED
