"""Explanation heatmaps as Image layers in a real viewer: on the source layer's grid (same world
positions, also for an oblique, flipped grid), inferno, additive, adjustable opacity, replaced
rather than stacked, toggled together; and a real explanation's peak shown where the nodule is."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage, lps_to_napari_world
from napari_medcad.napari.explain_layers import (
    ROLE_EXPLANATION,
    add_explanation_layer,
    explanation_layer_data,
    explanation_layers_of,
    show_explanations,
)
from napari_medcad.napari.layers import META_KEY, image_layer_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

C, S = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
OBLIQUE = Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 80.0), (C, S, 0, S, -C, 0, 0, 0, -1))


def source_and_heatmap():
    rng = np.random.default_rng(0)
    image = MedicalImage(rng.normal(-700, 50, (12, 40, 50)).astype(np.int16), OBLIQUE, modality="CT", name="ct")
    heat = np.zeros(image.spatial_shape, np.float32)
    heat[7, 22, 31] = 0.9
    heatmap = image.with_array(heat, modality="OT", name="ct attention (m)",
                               metadata={"explanation": "attention", "model": "m", "probability": 0.9,
                                         "source_image": "ct"})
    return image, heatmap


def test_explanation_layer_lies_on_the_source_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    image, heatmap = source_and_heatmap()
    data, kwargs, _ = image_layer_data(image)
    source = viewer.add_image(data, **kwargs)
    layer = add_explanation_layer(viewer, heatmap, source, opacity=0.4)
    assert viewer.layers.index(layer) == viewer.layers.index(source) + 1
    assert layer.colormap.name == "inferno" and layer.blending == "additive"
    assert layer.opacity == pytest.approx(0.4) and tuple(layer.contrast_limits) == (0.0, 1.0)
    info = layer.metadata[META_KEY]
    assert info["role"] == ROLE_EXPLANATION and info["source_layer"] == "ct"
    assert info["explanation"]["model"] == "m"
    # every voxel of the heatmap is where the same voxel of the source is, in patient mm
    for index in ([0, 0, 0], [7, 22, 31], [11, 39, 49]):
        np.testing.assert_allclose(layer.data_to_world(index), source.data_to_world(index), atol=1e-9)
    peak = np.unravel_index(int(np.argmax(layer.data)), layer.data.shape)
    expected = lps_to_napari_world(image.index_to_world([7, 22, 31]))
    np.testing.assert_allclose(layer.data_to_world(peak), expected, atol=1e-9)
    layer.opacity = 0.8  # adjustable like any layer
    assert layer.opacity == pytest.approx(0.8)


def test_adding_again_replaces_and_the_toggle_hides_and_shows(make_napari_viewer):
    viewer = make_napari_viewer()
    image, heatmap = source_and_heatmap()
    data, kwargs, _ = image_layer_data(image)
    source = viewer.add_image(data, **kwargs)
    add_explanation_layer(viewer, heatmap, source)
    add_explanation_layer(viewer, heatmap, source)
    other = heatmap.with_array(heatmap.array, name="ct gradcam (n)", metadata={**heatmap.metadata, "model": "n"})
    add_explanation_layer(viewer, other, source)
    layers = explanation_layers_of(viewer.layers, "ct")
    assert sorted(layer.name for layer in layers) == ["ct attention (m)", "ct gradcam (n)"]
    assert show_explanations(viewer, "ct", False) == 2
    assert not any(layer.visible for layer in layers) and source.visible
    show_explanations(viewer, "ct", True)
    assert all(layer.visible for layer in layers)


def test_a_2d_models_slices_add_up_and_the_readers_settings_stay(make_napari_viewer):
    viewer = make_napari_viewer()
    image, heatmap = source_and_heatmap()
    data, kwargs, _ = image_layer_data(image)
    source = viewer.add_image(data, **kwargs)
    first = add_explanation_layer(viewer, heatmap.with_array(heatmap.array, metadata={**heatmap.metadata,
                                                                                   "slices": [7]}), source)
    first.opacity, first.colormap = 0.3, "magma"
    second_heat = np.zeros(image.spatial_shape, np.float32)
    second_heat[2, 5, 5] = 0.7
    second = add_explanation_layer(viewer, heatmap.with_array(second_heat, metadata={**heatmap.metadata,
                                                                                     "slices": [2]}), source)
    (layer,) = explanation_layers_of(viewer.layers, "ct")
    assert layer is second and layer.data[7, 22, 31] == pytest.approx(0.9) and layer.data[2, 5, 5] == pytest.approx(0.7)
    assert layer.metadata[META_KEY]["explanation"]["slices"] == [2, 7]
    assert layer.opacity == pytest.approx(0.3) and layer.colormap.name == "magma"


def test_a_heatmap_of_another_grid_is_refused(make_napari_viewer):
    viewer = make_napari_viewer()
    image, heatmap = source_and_heatmap()
    data, kwargs, _ = image_layer_data(image)
    source = viewer.add_image(data, **kwargs)
    moved = heatmap.with_array(heatmap.array, geometry=OBLIQUE.shifted([0, 1, 0]))
    with pytest.raises(MedcadError, match="does not lie on the grid"):
        explanation_layer_data(moved, source)
    with pytest.raises(MedcadError, match="opacity"):
        explanation_layer_data(heatmap, source, opacity=1.5)


def test_a_real_explanation_shows_its_peak_on_the_nodule(make_napari_viewer):
    torch = pytest.importorskip("torch")
    from classifier_samples import heldout_samples

    from napari_medcad.core.explain import explain
    from napari_medcad.napari.layers import image_from_layer

    torch.set_num_threads(1)
    samples = heldout_samples()
    index = int(np.flatnonzero(samples.labels == 1)[0])
    volume = samples.volume_image(index)
    hu = volume.with_array((volume.array * 1500.0 - 1350.0).astype(np.int16), name="phantom")  # back to HU
    viewer = make_napari_viewer()
    data, kwargs, _ = image_layer_data(hu)
    source = viewer.add_image(data, **kwargs)
    heatmap = explain(image_from_layer(source), "nodule-mil3d")  # what the widget would do
    layer = add_explanation_layer(viewer, heatmap, source)
    peak = np.unravel_index(int(np.argmax(layer.data)), layer.data.shape)
    world = np.asarray(layer.data_to_world(peak))
    centres = samples.true_nodules(index)
    distances = np.linalg.norm(lps_to_napari_world(centres[:, :3]) - world[None], axis=1)
    assert np.any(distances <= 0.5 * centres[:, 3])
