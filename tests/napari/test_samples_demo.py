"""The generated samples in a real viewer, the demo window and its screenshot, the manifest."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_medcad.core.phantom import chest_radiograph, generate_chest_ct
from napari_medcad.napari.samples import SAMPLE_SEED

PLUGIN = "napari-medcad"


def test_phantom_sample_truth_points_sit_on_their_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    image_layer, labels_layer, points_layer = viewer.open_sample(PLUGIN, "phantom_ct")
    case = generate_chest_ct(SAMPLE_SEED)
    assert image_layer.data.shape == case.image.array.shape
    np.testing.assert_allclose(image_layer.scale, case.image.geometry.spacing_zyx)
    assert len(points_layer.data) == len(case.nodules) > 0
    for world_zyx, nodule in zip(points_layer.data, case.nodules):
        # napari's world is LPS mm: the point's world position maps to the nodule's own label
        index = np.round(labels_layer.world_to_data(world_zyx)).astype(int)
        assert labels_layer.data[tuple(index)] == nodule.id
        np.testing.assert_allclose(image_layer.data_to_world(index), world_zyx,
                                   atol=max(case.image.geometry.spacing_xyz))


def test_radiograph_sample_is_2d_with_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "radiograph")
    film = chest_radiograph(SAMPLE_SEED)
    assert layers[0].data.ndim == 2 and layers[0].data.shape == film.image.array.shape
    assert len(layers) == 1 + bool(film.nodules)
    if film.nodules:
        points = layers[1]
        for world_yx in points.data:
            index = np.round(layers[0].world_to_data(world_yx)).astype(int)
            assert all(0 <= i < n for i, n in zip(index, layers[0].data.shape))
            assert film.lung_mask.array[tuple(index)] == 1  # nodules project onto the lungs


def test_demo_docks_every_widget(make_napari_viewer, monkeypatch):
    from napari_medcad.napari import demo

    import napari

    created = []

    def viewer_factory(*args, **kwargs):
        kwargs.pop("show", None)
        viewer = make_napari_viewer()
        created.append(viewer)
        return viewer

    monkeypatch.setattr(napari, "Viewer", viewer_factory)
    viewer = demo.open_demo_viewer("lung_ct", show=False)
    assert viewer is created[0]
    docked = set(viewer.window.dock_widgets)
    for name in demo.plugin_widget_names():
        assert any(name in key for key in docked), (name, docked)
    assert viewer.layers.selection.active.name == "lung1 CT"


@pytest.mark.slow
def test_demo_screenshot_from_the_command_line(tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs a display (xvfb-run)")
    out = tmp_path / "shot.png"
    result = subprocess.run([sys.executable, "-m", "napari_medcad.cli", "demo", "--screenshot", str(out)],
                            capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    from skimage.io import imread

    shot = imread(out)
    assert shot.shape[0] >= 600 and shot.shape[1] >= 1000  # the whole window, docks included
    assert shot[..., :3].std() > 20  # an image, not a blank window


def test_manifest_validates_and_names_the_distribution():
    import npe2

    result = subprocess.run([sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = npe2.PluginManager.instance().get_manifest(PLUGIN)
    assert manifest.name == PLUGIN
    keys = {sample.key for sample in manifest.contributions.sample_data}
    assert keys == {"lung_ct", "phantom_ct", "radiograph"}


def test_demo_docks_show_every_row_at_its_height(make_napari_viewer, monkeypatch, qtbot):
    """Four docks share the right-hand column: no row may be squeezed under its minimum (a bare
    word-wrapped description once pressed the Inference dock's combo boxes to a few pixels)."""
    from qtpy.QtWidgets import QComboBox

    from napari_medcad.napari import demo

    import napari

    monkeypatch.setattr(napari, "Viewer", lambda *args, **kwargs: make_napari_viewer(show=True))
    viewer = demo.open_demo_viewer("lung_ct", show=False)
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    combos = [combo for dock in viewer.window.dock_widgets.values() for combo in dock.findChildren(QComboBox)
              if combo.isVisible()]
    assert len(combos) >= 5
    squeezed = [(combo.currentText(), combo.height()) for combo in combos
                if combo.height() < combo.minimumSizeHint().height()]
    assert not squeezed
