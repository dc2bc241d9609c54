"""The synthetic chest phantoms: determinism, anatomy HU, ground truth that agrees with the image,
radiographs, and the case writer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.io import read_image
from napari_medcad.core.phantom import (
    PhantomConfig,
    chest_radiograph,
    generate_chest_ct,
    write_phantom_cases,
)
from napari_medcad.core.phantom.cases import case_name, case_seed

# finer than the default grid, so that label volumes resolve the nodules' shapes
FINE = PhantomConfig(shape_zyx=(80, 256, 256), spacing_xyz=(1.0, 1.0, 1.25), n_nodules=(6, 6),
                     nodule_diameter_mm=(6.0, 25.0), ground_glass_fraction=0.3, part_solid_fraction=0.3,
                     noise_sigma_hu=5.0)
TINY = PhantomConfig(shape_zyx=(24, 96, 96), spacing_xyz=(3.6, 3.6, 10.0), n_nodules=(1, 3))


@pytest.fixture(scope="module")
def default_case():
    return generate_chest_ct(3, PhantomConfig(n_nodules=(3, 3)))


@pytest.fixture(scope="module")
def fine_cases():
    return [generate_chest_ct(seed, FINE) for seed in (0, 1)]


def _label_points(case, nodule):
    return np.argwhere(case.labels.array == nodule.id)


# determinism and geometry -------------------------------------------------------------------------
def test_same_seed_and_config_give_identical_cases(default_case):
    again = generate_chest_ct(3, PhantomConfig(n_nodules=(3, 3)))
    for name in ("image", "labels", "lung_mask", "vessel_mask"):
        assert np.array_equal(getattr(default_case, name).array, getattr(again, name).array)
    assert again.nodules == default_case.nodules
    other = generate_chest_ct(4, PhantomConfig(n_nodules=(3, 3)))
    assert not np.array_equal(other.image.array, default_case.image.array)


def test_case_geometry_is_a_scanners(default_case):
    image, config = default_case.image, default_case.config
    assert image.array.dtype == np.int16 and image.modality == "CT"
    assert image.array.shape == config.shape_zyx
    assert image.geometry.spacing_xyz == config.spacing_xyz
    assert image.geometry.is_axis_aligned
    origin = image.geometry.origin_xyz
    assert origin[0] == pytest.approx(-0.5 * (config.shape_zyx[2] - 1) * config.spacing_xyz[0])
    assert origin[1] == pytest.approx(-0.5 * (config.shape_zyx[1] - 1) * config.spacing_xyz[1])
    assert origin[2] == config.first_slice_z_mm
    for mask, dtype in ((default_case.labels, np.uint16), (default_case.lung_mask, np.uint8),
                        (default_case.vessel_mask, np.uint8)):
        assert mask.array.dtype == dtype and mask.array.shape == image.array.shape
        assert mask.geometry == image.geometry


def test_anisotropic_spacing_is_honoured():
    config = PhantomConfig(shape_zyx=(20, 160, 128), spacing_xyz=(2.2, 1.9, 4.5), n_nodules=(1, 1))
    case = generate_chest_ct(5, config)
    assert case.image.geometry.spacing_xyz == (2.2, 1.9, 4.5)
    assert case.image.array.shape == (20, 160, 128)
    for nodule in case.nodules:
        index = case.image.geometry.world_to_index(nodule.centre_world_mm)
        assert np.allclose(index, nodule.centre_index_zyx)


def test_thick_slices_show_partial_volume():
    """The same patient scanned thin and thick: thick slices average the thin ones' anatomy."""
    common = dict(n_nodules=(0, 0), noise_sigma_hu=0.0, blur_sigma_mm=0.0)
    thin = generate_chest_ct(8, PhantomConfig(shape_zyx=(40, 160, 160), spacing_xyz=(2.2, 2.2, 1.25),
                                              first_slice_z_mm=-200.0, **common))
    thick = generate_chest_ct(8, PhantomConfig(shape_zyx=(10, 160, 160), spacing_xyz=(2.2, 2.2, 5.0),
                                               first_slice_z_mm=-198.125, **common))
    averaged = thin.image.array.reshape(10, 4, 160, 160).mean(axis=1)
    assert np.median(np.abs(averaged - thick.image.array)) <= 1.0


# anatomy ------------------------------------------------------------------------------------------
def test_tissues_have_their_hounsfield_units(default_case):
    image = default_case.image.array
    lung = default_case.lung_mask.array.astype(bool)
    parenchyma = lung & (default_case.vessel_mask.array == 0) & (default_case.labels.array == 0)
    assert -900 <= np.median(image[parenchyma]) <= -780
    assert 0.05 < lung.mean() < 0.4
    assert np.percentile(image, 99.9) > 350  # bone
    assert image.max() > 600
    nz, ny, nx = image.shape
    assert np.all(image[:, :4, nx // 2] <= -900)  # air in front of the chest
    assert image[nz // 2, 0, 0] == default_case.config.fov_padding_hu  # corner: outside the field of view
    soft = image[nz // 2][(image[nz // 2] > -200) & (image[nz // 2] < 200)]
    assert soft.size > 0.1 * ny * nx  # body wall, mediastinum, heart: soft tissue and fat


@pytest.mark.parametrize("kind, centre_range", [
    ("solid", (-120, 120)),
    ("ground-glass", (-800, -300)),
    ("part-solid", (-800, 120)),
])
def test_nodules_have_their_kinds_hounsfield_units(kind, centre_range):
    fractions = {"solid": (0.0, 0.0), "ground-glass": (1.0, 0.0), "part-solid": (0.0, 1.0)}[kind]
    config = PhantomConfig(shape_zyx=(48, 200, 200), spacing_xyz=(1.4, 1.4, 2.0), n_nodules=(3, 3),
                           nodule_diameter_mm=(10.0, 20.0), ground_glass_fraction=fractions[0],
                           part_solid_fraction=fractions[1], noise_sigma_hu=5.0, spiculated_fraction=0.0)
    case = generate_chest_ct(21, config)
    assert case.nodules and all(nodule.kind == kind for nodule in case.nodules)
    image = case.image.array
    for nodule in case.nodules:
        inside = image[case.labels.array == nodule.id]
        assert centre_range[0] <= np.median(inside) <= centre_range[1]
        if kind == "part-solid":  # a solid core in a ground-glass halo
            assert np.percentile(inside, 95) > -250 and np.percentile(inside, 10) < -350
            assert 0 < nodule.solid_diameter_mm < nodule.diameter_mm
        elif kind == "ground-glass":
            assert nodule.solid_diameter_mm == 0.0


# ground truth -------------------------------------------------------------------------------------
def test_every_nodule_is_in_the_lung_and_centred_on_its_label(fine_cases):
    for case in fine_cases:
        assert len(case.nodules) >= 4
        assert sorted(np.unique(case.labels.array))[1:] == [n.id for n in case.nodules]
        geometry = case.image.geometry
        for nodule in case.nodules:
            index = np.rint(geometry.world_to_index(nodule.centre_world_mm)).astype(int)
            assert case.lung_mask.array[tuple(index)] == 1
            centroid = _label_points(case, nodule).mean(axis=0)
            assert np.all(np.abs(centroid - geometry.world_to_index(nodule.centre_world_mm)) <= 1.0)
            in_lung = case.lung_mask.array[case.labels.array == nodule.id].mean()
            assert in_lung > (0.8 if nodule.attached == "pleura" else 0.99)


def test_world_centres_agree_with_index_centres(fine_cases, default_case):
    for case in fine_cases + [default_case]:
        for nodule in case.nodules:
            world = case.image.geometry.index_to_world(nodule.centre_index_zyx)
            assert np.allclose(world, nodule.centre_world_mm, atol=1e-6)


def test_diameters_match_the_label_volumes(fine_cases):
    for case in fine_cases:
        voxel_mm3 = float(np.prod(case.image.geometry.spacing_xyz))
        for nodule in case.nodules:
            volume = len(_label_points(case, nodule)) * voxel_mm3
            equivalent = (6 * volume / np.pi) ** (1 / 3)
            assert equivalent == pytest.approx(nodule.diameter_mm, rel=0.1)
            assert 3.0 <= nodule.diameter_mm <= 30.0


def test_nodule_records_are_complete(fine_cases):
    nodules = [nodule for case in fine_cases for nodule in case.nodules]
    assert {nodule.kind for nodule in nodules} <= {"solid", "ground-glass", "part-solid"}
    assert {nodule.attached for nodule in nodules} <= {"none", "vessel", "pleura"}
    assert [n.id for n in fine_cases[0].nodules] == list(range(1, len(fine_cases[0].nodules) + 1))


def test_zero_nodules_give_empty_labels():
    case = generate_chest_ct(2, PhantomConfig(n_nodules=(0, 0)))
    assert case.nodules == []
    assert not case.labels.array.any()


def test_truth_holds_only_what_the_field_of_view_shows():
    """A cropped (targeted) reconstruction: nodules outside the reconstruction circle show as
    padding in the image, so they are not in the truth, and no label voxel lies outside it."""
    cropped = PhantomConfig(shape_zyx=(40, 128, 128), spacing_xyz=(1.2, 1.2, 4.0), first_slice_z_mm=-200.0,
                            n_nodules=(10, 10))
    uncropped = PhantomConfig(**{**cropped.__dict__, "fov_padding_hu": None})
    kept = drawn = 0
    for seed in (0, 3, 6):
        case = generate_chest_ct(seed, cropped)
        outside = case.image.array[0] == -1024  # the padding (the circle's outside) on every slice
        outside &= (case.image.array == -1024).all(axis=0)
        assert not case.labels.array[:, outside].any()
        assert [n.id for n in case.nodules] == list(range(1, len(case.nodules) + 1))
        assert sorted(set(np.unique(case.labels.array)) - {0}) == [n.id for n in case.nodules]
        kept += len(case.nodules)
        drawn += len(generate_chest_ct(seed, uncropped).nodules)
    assert 0 < kept < drawn  # the circle of a 154 mm field leaves some of the chest's nodules out


def test_vessel_attached_nodules_touch_a_vessel():
    config = PhantomConfig(shape_zyx=(60, 256, 256), spacing_xyz=(1.2, 1.2, 2.0), n_nodules=(3, 3),
                           juxta_vascular_fraction=1.0, juxta_pleural_fraction=0.0)
    case = generate_chest_ct(13, config)
    attached = [nodule for nodule in case.nodules if nodule.attached == "vessel"]
    assert attached
    for nodule in attached:
        grown = ndimage.binary_dilation(case.labels.array == nodule.id, iterations=2)
        assert (grown & (case.vessel_mask.array == 1)).any()


def test_juxta_pleural_nodules_touch_the_chest_wall():
    config = PhantomConfig(shape_zyx=(60, 256, 256), spacing_xyz=(1.2, 1.2, 2.0), n_nodules=(3, 3),
                           juxta_vascular_fraction=0.0, juxta_pleural_fraction=1.0)
    case = generate_chest_ct(17, config)
    attached = [nodule for nodule in case.nodules if nodule.attached == "pleura"]
    assert attached
    for nodule in attached:
        grown = ndimage.binary_dilation(case.labels.array == nodule.id, iterations=2)
        assert (grown & (case.lung_mask.array == 0)).any()


def test_vessels_cut_across_look_like_round_spots(default_case):
    """Vessels running along the body axis: round cross-sections in an axial slice (nodule mimics)."""
    lung = default_case.lung_mask.array
    middle = int(np.argmax(lung.sum(axis=(1, 2))))
    components = measure.regionprops(measure.label(default_case.vessel_mask.array[middle]))
    round_spots = [c for c in components if c.area >= 3 and c.eccentricity < 0.8]
    assert len(components) >= 20
    assert len(round_spots) >= 8
    assert default_case.vessel_trees and all(len(t.parent) == len(t.radius) for t in default_case.vessel_trees)


# configs --------------------------------------------------------------------------------------------
def test_training_configs_are_widely_augmented_and_reproducible():
    configs = [PhantomConfig.random_for_training(np.random.default_rng(seed)) for seed in range(40)]
    pixel = [c.spacing_xyz[0] for c in configs]
    slices = [c.spacing_xyz[2] for c in configs]
    assert 0.5 <= min(pixel) and max(pixel) <= 1.0 and max(pixel) - min(pixel) > 0.3
    assert 1.0 <= min(slices) and max(slices) <= 5.0 and max(slices) - min(slices) > 2.5
    assert {c.contrast_enhanced for c in configs} == {True, False}
    assert len({c.noise_sigma_hu for c in configs}) == 40
    assert PhantomConfig.random_for_training(7) == PhantomConfig.random_for_training(7)
    small = PhantomConfig.random_for_training(3, max_in_plane=96, max_slices=16)
    case = generate_chest_ct(1, small)
    assert case.image.array.shape == small.shape_zyx
    assert max(small.shape_zyx) <= 96


@pytest.mark.parametrize("changes", [
    {"shape_zyx": (2, 64, 64)},
    {"spacing_xyz": (1.0, -1.0, 2.0)},
    {"n_nodules": (3, 1)},
    {"nodule_diameter_mm": (0.0, 10.0)},
    {"ground_glass_fraction": 0.7, "part_solid_fraction": 0.5},
    {"juxta_pleural_fraction": 1.5},
    {"noise_sigma_hu": -1.0},
])
def test_impossible_configs_are_refused(changes):
    with pytest.raises(MedcadError):
        PhantomConfig(**changes)


# radiographs ----------------------------------------------------------------------------------------
def test_radiograph_is_a_frontal_chest_image():
    radiograph = chest_radiograph(4, PhantomConfig(n_nodules=(2, 2), nodule_diameter_mm=(12.0, 25.0)))
    image = radiograph.image
    assert image.modality == "DX" and image.ndim == 2 and image.array.dtype == np.uint16
    assert image.geometry.spacing_xyz == (0.8, 0.8)
    height, width = image.array.shape
    assert 300 < height < 700 and 300 < width < 700
    lungs = radiograph.lung_mask.array.astype(bool)
    assert lungs.any() and radiograph.lung_mask.geometry == image.geometry
    pixels = image.array.astype(float)
    below_lungs = pixels[int(height * 0.9):, width // 2 - 20: width // 2 + 20]
    assert np.median(pixels[lungs]) < np.median(below_lungs)  # dark lungs, bright abdomen and spine
    assert radiograph.has_nodule and len(radiograph.nodules) == 2
    ct = generate_chest_ct(4, PhantomConfig(n_nodules=(2, 2), nodule_diameter_mm=(12.0, 25.0)))
    for projected, nodule in zip(radiograph.nodules, ct.nodules):
        row, column = projected.centre_index_yx
        assert 0 <= row < height and 0 <= column < width
        assert lungs[int(round(row)), int(round(column))]
        assert np.allclose(image.geometry.world_to_index(projected.centre_world_mm), projected.centre_index_yx)
        # the same patient as the CT of the same seed: the nodule's (x, z) position is kept
        assert projected.centre_world_mm == pytest.approx((nodule.centre_world_mm[0], nodule.centre_world_mm[2]))


def test_radiograph_without_nodules():
    radiograph = chest_radiograph(5, PhantomConfig(n_nodules=(0, 0)), pixel_mm=1.0)
    assert not radiograph.has_nodule and radiograph.nodules == []
    assert radiograph.image.geometry.spacing_xyz == (1.0, 1.0)


# writing cases --------------------------------------------------------------------------------------
def test_write_phantom_cases_writes_nifti_and_luna_annotations(tmp_path):
    import SimpleITK as sitk

    calls = []
    paths = write_phantom_cases(tmp_path / "set", 2, seed=9, config=TINY,
                                progress=lambda done, total, message: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert [p.name for p in paths] == ["phantom_s9_000.nii.gz", "phantom_s9_001.nii.gz"]
    with open(tmp_path / "set" / "annotations.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    for index, path in enumerate(paths):
        expected = generate_chest_ct(case_seed(9, index), TINY)
        image = read_image(path)
        assert np.array_equal(image.array, expected.image.array)
        assert np.allclose(image.geometry.spacing_xyz, TINY.spacing_xyz)
        assert np.allclose(image.geometry.origin_xyz, expected.image.geometry.origin_xyz)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path).replace(".nii.gz", "_label.nii.gz")))
        assert np.array_equal(labels, expected.labels.array)
        mine = [row for row in rows if row["seriesuid"] == case_name(9, index)]
        assert len(mine) == len(expected.nodules)
        for row, nodule in zip(mine, expected.nodules):
            coordinates = [float(row[key]) for key in ("coordX", "coordY", "coordZ")]
            assert np.allclose(coordinates, nodule.centre_world_mm, atol=1e-3)
            assert float(row["diameter_mm"]) == pytest.approx(nodule.diameter_mm, abs=1e-3)
    assert rows  # the tiny cases hold at least one nodule between them


def test_write_phantom_cases_refuses_a_negative_count(tmp_path):
    with pytest.raises(MedcadError):
        write_phantom_cases(tmp_path, -1, seed=0)


def test_no_nodule_is_centred_inside_a_great_vessel():
    """Held-out benchmark phantom 14 of seed 7777 had a 4.6 mm ground-glass nodule centred in the
    superior vena cava, where the denser vein hid it: ground truth no reader or model could find."""
    from napari_medcad.core.phantom.ct import draw_scanned_patient
    from napari_medcad.core.phantom.patient import great_vessels

    def centred_in_great_vessels(config):
        patient = draw_scanned_patient(case_seed(7777, 14), config)
        tubes = great_vessels(patient.central, patient.central_arteries)
        return [n.kind for n in patient.nodules if tubes.surface_distance(n.centre_xyz).min() <= 0]

    assert centred_in_great_vessels(PhantomConfig()) == []
    # the old placement, which the shipped models' recipes keep so that their weights reproduce
    assert centred_in_great_vessels(PhantomConfig(nodules_clear_of_great_vessels=False)) == ["ground-glass"]
