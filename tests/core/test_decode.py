"""Decoding a probability map: regions at the mask level, findings at the operating threshold."""

import numpy as np
import pytest

from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.inference.decode import decode_components


def _probability():
    values = np.zeros((20, 40, 40), np.float32)
    values[4:8, 4:8, 4:8] = 0.6  # a weak candidate
    values[10:16, 20:30, 20:30] = 0.7
    values[12:14, 24:26, 24:26] = 0.95  # the strong candidate's core
    return MedicalImage(values, Geometry.identity(3, (1.0, 1.0, 2.0)))


def test_operating_threshold_keeps_strong_regions_with_their_whole_mask():
    findings, labels = decode_components(_probability(), None, {"threshold": 0.9, "mask_threshold": 0.5})
    assert len(findings) == 1
    finding = next(iter(findings))
    assert finding.probability == pytest.approx(0.95)
    assert (labels == finding.mask_value).sum() == 6 * 10 * 10  # the 0.5 region, not just the 0.95 core
    assert finding.volume_mm3 == pytest.approx(600 * 2.0)


def test_threshold_below_mask_level_lowers_the_level():
    findings, _ = decode_components(_probability(), None, {"threshold": 0.55, "mask_threshold": 0.65})
    assert sorted(round(f.probability, 2) for f in findings) == [0.6, 0.95]


def test_without_mask_threshold_the_threshold_is_the_level():
    findings, labels = decode_components(_probability(), None, {"threshold": 0.9})
    assert len(findings) == 1 and (labels > 0).sum() == 8  # only the core


def test_regions_mostly_outside_the_mask_are_dropped():
    within = np.zeros((20, 40, 40), bool)
    within[:, 18:, 18:] = True  # holds the strong candidate only
    findings, labels = decode_components(_probability(), None, {"threshold": 0.55, "mask_threshold": 0.5},
                                         within=within)
    assert [round(f.probability, 2) for f in findings] == [0.95]
    assert labels[5, 5, 5] == 0


def _juxtapleural_case():
    """An ellipsoid 'lung' whose threshold mask lacks a 9 mm-radius nodule sitting 5 mm inside its
    lateral outline (the nodule is tissue, not air), and a chest-wall region beyond the outline."""
    z, y, x = np.ogrid[:40, :96, :96]
    lung = ((z - 20) * 2 / 30.0) ** 2 + ((y - 48) / 30.0) ** 2 + ((x - 48) / 30.0) ** 2 <= 1  # 2 mm slices
    nodule = ((z - 20) * 2) ** 2 + (y - 48) ** 2 + (x - 73) ** 2 <= 9 ** 2
    values = np.zeros(lung.shape, np.float32)
    values[nodule] = 0.99
    values[18:22, 46:51, 10:15] = 0.99  # chest wall, beyond the lung's outline on the other side
    return MedicalImage(values, Geometry.identity(3, (1.0, 1.0, 2.0))), lung & ~nodule


def test_a_closed_mask_keeps_a_juxtapleural_region_and_still_drops_the_chest_wall():
    probability, lung = _juxtapleural_case()
    plain, _ = decode_components(probability, None, {"threshold": 0.5}, within=lung)
    assert len(plain) == 0  # the nodule bites its own dent into the mask: none of it is inside
    closed, labels = decode_components(probability, None, {"threshold": 0.5, "within_closing_mm": 15.0},
                                       within=lung)
    assert len(closed) == 1
    assert labels[20, 48, 73] > 0 and labels[20, 48, 12] == 0
    small, _ = decode_components(probability, None, {"threshold": 0.5, "within_closing_mm": 4.0}, within=lung)
    assert len(small) == 0  # a ball much smaller than the nodule does not fill its dent


def test_region_statistics_are_scipys_on_a_random_field():
    """The regions' peak, voxel count, probability-weighted centroid, mean intensity and mask share
    (computed from the regions' own voxels) equal scipy.ndimage's over the whole grid."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    field = ndimage.gaussian_filter(rng.random((40, 60, 50)).astype(np.float32), 2.5)
    field = np.clip((field - field.mean()) / field.std() * 0.4, 0, 1).astype(np.float32)
    geometry = Geometry((0.8, 0.7, 2.0), (5.0, -3.0, 10.0), tuple(np.eye(3).ravel()))
    intensity = rng.normal(-400, 200, field.shape).astype(np.float32)
    within = rng.random(field.shape) > 0.2
    findings, label_map = decode_components(MedicalImage(field, geometry), MedicalImage(intensity, geometry),
                                            {"threshold": 0.3, "max_findings": 1000}, within=within)
    regions, count = ndimage.label(field >= 0.3)
    assert count > 5 and len(findings) > 5
    assert len(findings) == sum(np.mean(within[regions == n]) >= 0.5 for n in range(1, count + 1))
    for finding in findings:
        number = int(np.bincount(regions[label_map == finding.mask_value]).argmax())
        index = [number]
        assert finding.probability == float(ndimage.maximum(field, regions, index)[0])
        voxel_mm3 = float(np.prod(geometry.spacing_xyz))
        assert finding.volume_mm3 == pytest.approx(float(np.sum(regions == number)) * voxel_mm3, rel=1e-12)
        np.testing.assert_allclose(finding.centre_index_zyx, ndimage.center_of_mass(field, regions, index)[0],
                                   rtol=0, atol=1e-9)
        assert finding.mean_hu == pytest.approx(float(ndimage.mean(intensity, regions, index)[0]), rel=1e-9)
        assert np.mean(within[regions == number]) >= 0.5


def _image(values):
    return MedicalImage(values.astype(np.float32), Geometry.identity(3, (1.0, 1.0, 2.0)))


def test_classes_decode_into_one_table_ranked_across_classes():
    from napari_medcad.core.inference.decode import decode_classes

    air, bone = np.zeros((10, 20, 20)), np.zeros((10, 20, 20))
    air[1:3, 1:3, 1:3] = 0.7
    bone[5:8, 10:14, 10:14] = 0.9
    bone[5:7, 1:3, 15:18] = 0.6
    findings, labels = decode_classes([(_image(air), "air"), (_image(bone), "bone")], None, {"threshold": 0.5})
    assert [(f.id, f.label, round(f.probability, 2)) for f in findings] == [(1, "bone", 0.9), (2, "air", 0.7),
                                                                          (3, "bone", 0.6)]
    for finding in findings:  # each id marks its own region, in its own class's map
        source = air if finding.label == "air" else bone
        assert np.all(source[labels == finding.id] == pytest.approx(finding.probability))
    capped, capped_labels = decode_classes([(_image(air), "air"), (_image(bone), "bone")], None,
                                           {"threshold": 0.5, "max_findings": 2})
    assert [f.label for f in capped] == ["bone", "air"] and capped.provenance["over_max_findings"] == 1
    assert set(np.unique(capped_labels)) == {0, 1, 2}


@pytest.mark.parametrize("activation, channels, classes, expected", [
    ("softmax", 3, ["background", "air", "bone"], ["air", "bone"]),
    ("sigmoid", 2, ["background", "air", "bone"], ["air", "bone"]),
    ("sigmoid", 1, ["background", "nodule"], ["nodule"]),
    ("softmax", 2, ["background", "nodule"], ["nodule"]),
])
def test_every_class_of_a_model_gets_its_map(activation, channels, classes, expected):
    from napari_medcad.core.inference.run import _class_maps
    from napari_medcad.core.models.card import ModelCard

    card = ModelCard(name="m", task="segmentation", dims=3, classes=classes,
                     output={"activation": activation, "channels": channels})
    probabilities = np.random.default_rng(0).random((channels, 4, 5, 6)).astype(np.float32)
    maps = _class_maps(card, probabilities, activation)
    assert [name for _, name in maps] == expected
    if activation == "softmax" and channels > 2:  # a voxel belongs to the class that wins it, only
        winner = probabilities.argmax(axis=0)
        for c, (values, _) in enumerate(maps, start=1):
            assert np.array_equal(values > 0, winner == c)
