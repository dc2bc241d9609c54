"""Explanations (Grad-CAM, attention maps) as heatmaps on the source image's geometry.

The held-out phantom samples come from a seed no training used (tests/classifier_samples.py);
"inside the nodule" means within the true nodule's equivalent-sphere radius (its cross-section
on the slice, for 2-D models), measured in world millimetres from the heatmap's peak.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from classifier_samples import heldout_samples, one_thread  # noqa: E402,F401

from napari_medcad.core.errors import MedcadError  # noqa: E402
from napari_medcad.core.explain import explain, heatmap_peak_mm  # noqa: E402
from napari_medcad.core.image import Geometry, MedicalImage  # noqa: E402
from napari_medcad.core.models.registry import find_model  # noqa: E402
from napari_medcad.core.training.classifier_data import heatmap_hit, sample_image  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def positives():
    samples = heldout_samples()
    return samples, [int(i) for i in np.flatnonzero(samples.labels == 1)]


def regrid(image: MedicalImage, geometry: Geometry, shape_zyx) -> MedicalImage:
    """``image`` resampled (linear, SimpleITK) onto another grid of the same world."""
    import SimpleITK as sitk

    reference = sitk.Image([int(v) for v in shape_zyx[::-1]], sitk.sitkFloat32)
    geometry.apply_to_sitk(reference)
    moved = sitk.Resample(image.to_sitk(), reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return MedicalImage(sitk.GetArrayFromImage(moved), geometry, modality=image.modality, name=image.name + "_regrid")


def test_gradcam_of_the_cnn_is_monais_gradcam_on_the_source_grid():
    from monai.visualize import GradCAM

    from napari_medcad.core.models.loading import load_network

    samples, indices = positives()
    card = find_model("nodule-cnn2d")
    image = sample_image(samples, indices[0], 2)
    heatmap = explain(image, card, preprocess=False)
    assert heatmap.array.shape == image.array.shape and heatmap.array.dtype == np.float32
    assert heatmap.geometry == image.geometry
    assert heatmap.metadata["explanation"] == "gradcam" and heatmap.metadata["model"] == "nodule-cnn2d"

    network = load_network(card)
    x = torch.from_numpy(image.array[None, None].astype(np.float32))
    reference = GradCAM(nn_module=network, target_layers="features.act3", postprocessing=lambda m: m)(x, class_idx=1)
    reference = reference[0, 0].detach().numpy()
    probability = float(torch.softmax(network(x), dim=1)[0, 1].detach())
    assert heatmap.metadata["probability"] == pytest.approx(probability, abs=1e-4)
    np.testing.assert_allclose(heatmap.array, reference / reference.max() * probability, atol=1e-5)


def test_explanations_need_a_classifier_of_a_fitting_dimensionality():
    samples, indices = positives()
    with pytest.raises(MedcadError, match="heatmap explanations are for classifiers"):
        explain(sample_image(samples, indices[0], 3), find_model("lung-nodule-ct"))
    with pytest.raises(MedcadError, match="needs a 3-D image"):
        explain(sample_image(samples, indices[0], 2), find_model("nodule-mil3d"))
    gnn = dataclasses.replace(find_model("nodule-mil3d"), family="gnn", inference={})
    with pytest.raises(MedcadError, match="graph view"):
        explain(sample_image(samples, indices[0], 3), gnn)


def hit_fraction(name: str) -> float:
    samples, indices = positives()
    card = find_model(name)
    hits = [heatmap_hit(explain(sample_image(samples, i, card.dims), card, preprocess=False), samples, i)
            for i in indices]
    assert len(hits) >= 10
    return float(np.mean(hits))


@pytest.mark.parametrize("name", ["nodule-cnn2d", "nodule-lstm3d", "nodule-attention2d", "nodule-mil3d"])
def test_heatmap_peak_lies_inside_the_true_nodule_in_80_percent(name):
    """The issue's target, with the shipped weights, on the tests' own held-out phantoms (about 46
    positives; the benchmark's 57 are in the README).  A nodule's cross-section covers 2-8% of a
    64 x 64 mm window: a map that ignored the nodule would rarely peak in it."""
    assert hit_fraction(name) >= 0.8


@pytest.mark.parametrize("name", ["nodule-attention2d", "nodule-cnn2d"])
def test_2d_heatmap_on_a_finer_grid_lies_where_it_lies_on_the_model_grid(name):
    """The map follows the image's world geometry, not its array: 0.5 mm pixels, shifted origin.
    The card resamples to 1 mm for the model and the map comes back onto the 0.5 mm grid."""
    samples, indices = positives()
    card = find_model(name)
    hit = [i for i in indices if heatmap_hit(explain(sample_image(samples, i, 2), card, preprocess=False), samples, i)]
    index = hit[0]
    image = sample_image(samples, index, 2)
    low = image.index_to_world([0, 0]) - 0.25  # the 1 mm pixels' outer edge: the 0.5 mm grid covers them
    fine = Geometry((0.5, 0.5), tuple(low), (1.0, 0.0, 0.0, 1.0))
    source = regrid(image, fine, (128, 128))
    heatmap = explain(source, card, preprocess=False)
    assert heatmap.spatial_shape == (128, 128) and heatmap.geometry == fine
    original_peak = heatmap_peak_mm(explain(image, card, preprocess=False))
    # within one 4 mm cell of the model's map: a map spread evenly over the nodule's cells (what the
    # localisation training asks for) can tip to a neighbouring cell on the twice-resampled input
    assert np.linalg.norm(heatmap_peak_mm(heatmap) - original_peak) <= 4.0
    assert heatmap_hit(heatmap, samples, index)


def test_mil_heatmap_on_another_volume_grid_lies_where_the_nodule_is():
    samples, indices = positives()
    card = find_model("nodule-mil3d")
    index = indices[0]
    image = sample_image(samples, index, 3)
    low = image.index_to_world([0, 0, 0])
    high = image.index_to_world(np.asarray(image.spatial_shape, float) - 1)
    # z reversed (slice 0 is the most superior), 1.4 x 1.4 x 2.0 mm
    geometry = Geometry((1.4, 1.4, 2.0), (low[0], low[1], high[2]), (1, 0, 0, 0, 1, 0, 0, 0, -1))
    shape = (19, 45, 45)
    source = regrid(image, geometry, shape)
    heatmap = explain(source, card, preprocess=False)
    assert heatmap.spatial_shape == shape and heatmap.geometry == geometry
    centres = samples.true_nodules(index)
    distances = np.linalg.norm(centres[:, :3] - heatmap_peak_mm(heatmap)[None], axis=1)
    assert np.any(distances <= 0.5 * centres[:, 3] + 1.5)


def test_the_card_window_is_applied_to_hounsfield_units():
    samples, indices = positives()
    card = find_model("nodule-attention2d")
    windowed = sample_image(samples, indices[0], 2)
    # a CT's values start at -1024 HU (lower ones are raised to it before the model's steps)
    windowed = windowed.with_array(np.maximum(windowed.array, (-1024.0 + 1350.0) / 1500.0))
    hu = windowed.with_array(windowed.array * 1500.0 - 1350.0)  # the lung window's inverse
    from_hu = explain(hu, card)
    # a crop inside the lung has no body outline: its few "lung" voxels are not taken for lungs
    assert from_hu.metadata["mask"] == "none: no lungs found, so every window was explained"
    np.testing.assert_allclose(from_hu.array, explain(windowed, card, preprocess=False).array, atol=1e-4)
    # windowing an already windowed image is not the same input
    assert not np.allclose(explain(windowed, card).array, explain(windowed, card, preprocess=False).array, atol=1e-3)


def test_2d_model_on_a_volume_explains_the_chosen_slices_on_the_volume_grid():
    samples, indices = positives()
    card = find_model("nodule-attention2d")
    index = indices[0]
    volume = sample_image(samples, index, 3)
    key = int(samples.key_slice[index])
    heatmap = explain(volume, card, slices=[key], preprocess=False)
    assert heatmap.spatial_shape == volume.spatial_shape and heatmap.geometry == volume.geometry
    assert not heatmap.array[np.arange(16) != key].any()
    np.testing.assert_allclose(heatmap.array[key], explain(sample_image(samples, index, 2), card,
                                                           preprocess=False).array, atol=1e-6)
    peak = heatmap_peak_mm(heatmap)
    assert peak[2] == pytest.approx(volume.index_to_world([key, 0, 0])[2])
    with pytest.raises(MedcadError, match="slice out of range"):
        explain(volume, card, slices=[16], preprocess=False)


def test_a_volume_larger_than_the_window_is_explained_in_overlapping_windows():
    samples, indices = positives()
    card = find_model("nodule-mil3d")
    index = indices[0]
    image = sample_image(samples, index, 3)
    lung = float(np.percentile(image.array, 10))  # a plain lung-like border (reflection would copy the nodule)
    padded = np.pad(image.array, ((0, 0), (20, 30), (40, 10)), mode="constant", constant_values=lung)
    geometry = image.geometry.shifted([0, -20, -40])
    big = MedicalImage(padded, geometry, modality="CT", name="bigger")
    heatmap = explain(big, card, preprocess=False)
    assert heatmap.metadata["windows"] > 1 and heatmap.spatial_shape == padded.shape
    assert 0.0 <= heatmap.array.min() and heatmap.array.max() <= 1.0
    centres = samples.true_nodules(index)
    distances = np.linalg.norm(centres[:, :3] - heatmap_peak_mm(heatmap)[None], axis=1)
    assert np.any(distances <= 0.5 * centres[:, 3])


@pytest.fixture(scope="module")
def chest():
    """A small phantom chest CT in HU (3.6 mm pixels: a 64-pixel window is 230 mm, about half the body)."""
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct

    config = PhantomConfig(shape_zyx=(12, 160, 160), spacing_xyz=(1.8, 1.8, 5.0), first_slice_z_mm=-220.0,
                           n_nodules=(1, 1))
    return generate_chest_ct(11, config)


def windows_of(heatmap: MedicalImage) -> tuple[int, int]:
    return heatmap.metadata["windows"], heatmap.metadata["windows_skipped"]


def test_windows_without_lung_in_their_middle_are_not_explained(chest):
    card = find_model("nodule-attention2d")
    assert card.inference["mask"] == "lung"
    key = 6
    heatmap = explain(chest.image, card, slices=[key])
    explained, skipped = windows_of(heatmap)
    assert heatmap.metadata["mask"] == "lung_mask" and explained > 0 and skipped > 0
    # the same slice with the mask switched off: every window, and a map that differs only where skipped
    whole = explain(chest.image, dataclasses.replace(card, inference={**card.inference, "mask": None}), slices=[key])
    assert whole.metadata["mask"] == "none" and windows_of(whole) == (explained + skipped, 0)
    lungs = np.asarray(chest.lung_mask.array[key]) > 0
    assert heatmap.array[key][lungs].max() > 0
    # heat in the lungs comes only from windows that were explained: never above the full map there
    assert np.all(heatmap.array[key] <= whole.array[key] + 1e-6)
    # a corner far from the lungs (air around the patient) is not explained
    assert heatmap.array[key][:8, :8].max() == 0


def test_a_given_mask_replaces_the_lung_mask(chest):
    card = find_model("nodule-cnn2d")
    key = 6
    empty = chest.image.with_array(np.zeros(chest.image.spatial_shape, np.uint8), modality="SEG")
    heatmap = explain(chest.image, card, slices=[key], mask=empty)
    assert heatmap.metadata["mask"] == "given" and windows_of(heatmap)[0] == 0
    assert not heatmap.array.any() and heatmap.metadata["probability"] == 0.0
    with pytest.raises(MedcadError, match="does not match"):
        explain(chest.image, card, slices=[key], mask=empty.with_array(np.zeros((12, 10, 10), np.uint8)))


def test_an_image_without_a_lung_mask_is_explained_whole_and_says_so(chest):
    card = find_model("nodule-cnn2d")
    key = 6
    windowed = chest.image.with_array((np.clip(chest.image.array, -1350, 150) + 1350) / 1500.0)
    heatmap = explain(windowed, card, slices=[key], preprocess=False)
    assert heatmap.metadata["mask"].startswith("none") and windows_of(heatmap)[1] == 0
    # a CT without lungs (soft tissue only): nothing to limit the windows to
    tissue = chest.image.with_array(np.full(chest.image.spatial_shape, 40, np.int16))
    heatmap = explain(tissue, card, slices=[key])
    assert heatmap.metadata["mask"] == "none: no lungs found, so every window was explained"
    assert windows_of(heatmap)[1] == 0


def test_an_image_of_unknown_modality_without_air_is_refused_on_its_own_values(chest):
    """A brain MR read from NRRD was explained as a lung CT ("nodule" at p 0.70)."""
    mr_like = chest.image.with_array(np.asarray(chest.image.array, np.int16) + 1100, modality="OT")
    low, high = int(mr_like.array.min()), int(mr_like.array.max())
    with pytest.raises(MedcadError, match=f"no air .*between {low} and {high}"):
        explain(mr_like, find_model("nodule-cnn2d"), slices=[6])


def test_a_3d_model_skips_windows_outside_the_lungs_too(chest):
    heatmap = explain(chest.image, find_model("nodule-mil3d"))
    explained, skipped = windows_of(heatmap)
    assert heatmap.metadata["mask"] == "lung_mask" and explained > 0 and skipped > 0
    assert heatmap.spatial_shape == chest.image.spatial_shape and heatmap.geometry == chest.image.geometry
    lungs = np.asarray(chest.lung_mask.array) > 0
    assert heatmap.array[lungs].max() > 0 and heatmap.array[:, :8, :8].max() == 0


def test_the_lung_mask_that_picks_windows_is_made_coarse_and_matches_the_full_one(chest):
    from napari_medcad.core.explain.maps import WINDOW_MASK_SPACING_MM, _coarse_lung_mask
    from napari_medcad.core.preprocess import lung_mask

    assert min(chest.image.geometry.spacing_xyz) < WINDOW_MASK_SPACING_MM  # so it is resampled
    coarse = _coarse_lung_mask(chest.image, None)
    assert coarse.spatial_shape == chest.image.spatial_shape and coarse.geometry == chest.image.geometry
    full = np.asarray(lung_mask(chest.image).array) > 0
    assert np.mean((np.asarray(coarse.array) > 0) == full) > 0.98
