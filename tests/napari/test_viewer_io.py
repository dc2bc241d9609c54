"""Reader, writer, samples and the Image info widget in a real napari viewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_medcad.core.io import write_image
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.napari.layers import image_from_layer
from napari_medcad.napari.reader import get_reader
from napari_medcad.napari.samples import SAMPLE_DIR

PLUGIN = "napari-medcad"
INDICES_ZYX = np.array([[0, 0, 0], [3, 17, 29], [10, 40, 5]])


def assert_world_matches_sitk(layer, sitk_image, indices_zyx=INDICES_ZYX):
    """napari's world position of each voxel == SimpleITK's physical point (reversed), 1e-3 mm."""
    for index in indices_zyx:
        index = index[-layer.ndim :]
        napari_world = np.asarray(layer.data_to_world(index))
        itk_world = np.array(sitk_image.TransformIndexToPhysicalPoint([int(i) for i in index[::-1]]))
        np.testing.assert_allclose(napari_world[::-1], itk_world, atol=1e-3)


@pytest.fixture
def oblique_volume(tmp_path) -> Path:
    """A small volume with a flipped and rotated direction, written by SimpleITK."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 400, size=(12, 50, 40)).astype(np.int16))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((12.0, -40.0, 90.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    path = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_open_formats_world_geometry(make_napari_viewer, tmp_path, suffix):
    source = sitk.ReadImage(str(SAMPLE_DIR / "lung1_crop.nrrd"))[::4, ::4, ::2]
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(source, str(path))
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    assert_world_matches_sitk(layers[0], sitk.ReadImage(str(path)))
    assert layers[0].metadata["medcad"]["modality"] == "CT"


def test_open_flipped_and_oblique(make_napari_viewer, oblique_volume, real_data):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(oblique_volume), plugin=PLUGIN)
    assert_world_matches_sitk(layer, sitk.ReadImage(str(oblique_volume)))
    brain = real_data / "brain1_image.nrrd"
    [brain_layer] = viewer.open(str(brain), plugin=PLUGIN)
    assert_world_matches_sitk(brain_layer, sitk.ReadImage(str(brain)))


def test_open_pictures_and_tiff(make_napari_viewer, tmp_path):
    import tifffile

    rgb = (np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "photo.png"))
    stack = np.random.default_rng(2).integers(0, 4000, (5, 30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "mm", "spacing": 3.0, "axes": "ZYX"})
    viewer = make_napari_viewer()
    [photo] = viewer.open(str(tmp_path / "photo.png"), plugin=PLUGIN)
    assert photo.rgb and photo.data.shape == (30, 40, 3)
    [tiff] = viewer.open(str(tmp_path / "stack.tif"), plugin=PLUGIN)
    np.testing.assert_allclose(tiff.scale, (3.0, 0.5, 0.5))
    np.testing.assert_array_equal(tiff.data, stack)


def test_open_dicom_file(make_napari_viewer):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    viewer = make_napari_viewer()
    [layer] = viewer.open(path, plugin=PLUGIN)
    assert_world_matches_sitk(layer, sitk.ReadImage(path), np.array([[0, 0, 0], [0, 100, 7]]))
    assert layer.data.min() < -800  # rescale intercept applied: HU


def test_label_files_open_as_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(SAMPLE_DIR / "lung1_crop_label.nrrd"), plugin=PLUGIN)
    assert layer.__class__.__name__ == "Labels"


def test_reader_declines_foreign_paths(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "readme.txt").write_text("not dicom")
    assert get_reader(str(tmp_path / "table.csv")) is None
    assert get_reader(str(pictures)) is None
    assert get_reader([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")]) is None
    assert get_reader(str(SAMPLE_DIR / "lung1_crop.nrrd")) is not None


def test_bad_file_is_a_notification_not_a_crash(make_napari_viewer, tmp_path, monkeypatch):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 this is not a complete gzip stream")
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    layers = viewer.open(str(bad), plugin=PLUGIN)
    assert layers == [] and len(viewer.layers) == 0
    assert len(shown) == 1 and "broken.nii.gz" in shown[0] and "\n" not in shown[0]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_save_labels_keeps_geometry(make_napari_viewer, oblique_volume, tmp_path, suffix):
    import nibabel

    viewer = make_napari_viewer()
    [image_layer] = viewer.open(str(oblique_volume), plugin=PLUGIN)
    labels = np.zeros(image_layer.data.shape, dtype=np.uint8)
    labels[5, 20:25, 10:14] = 3
    from napari_medcad.napari.layers import labels_layer_data

    data, kwargs, _ = labels_layer_data(labels, image_layer, name="drawn")
    labels_layer = viewer.add_labels(data, **kwargs)
    out = tmp_path / f"drawn{suffix}"
    viewer.layers.selection = {labels_layer}
    written = viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    assert [Path(p) for p in written] == [out]
    back = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert_world_matches_sitk(labels_layer, back)
    if suffix == ".nii.gz":
        nii = nibabel.load(str(out))
        for index in INDICES_ZYX:
            ras = nii.affine @ np.r_[index[::-1], 1.0]
            lps = ras[:3] * np.array([-1, -1, 1])
            np.testing.assert_allclose(lps, np.asarray(labels_layer.data_to_world(index))[::-1], atol=1e-3)


def test_save_image_layer(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(SAMPLE_DIR / "lung1_crop.nrrd"), plugin=PLUGIN)
    viewer.layers.selection = {layer}
    out = tmp_path / "copy.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin=PLUGIN)
    back = sitk.ReadImage(str(out))
    assert_world_matches_sitk(layer, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), layer.data)


def test_lung_sample_and_info_widget(make_napari_viewer):
    from napari_medcad.napari.widgets.image_info import ImageInfoWidget

    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "lung_ct")
    image_layer, label_layer = layers
    source = sitk.ReadImage(str(SAMPLE_DIR / "lung1_crop.nrrd"))
    assert_world_matches_sitk(image_layer, source)
    assert_world_matches_sitk(label_layer, source)
    assert label_layer.data.max() == 1
    viewer.layers.selection.active = image_layer
    widget = ImageInfoWidget(viewer)
    assert widget.field("size (x, y, z)") == "(348, 230, 48)"
    assert widget.field("spacing (mm)") == "(0.5703, 0.5703, 5)"
    assert widget.field("modality") == "CT"
    # the cursor readout is LPS (x, y, z) and the value is the voxel's HU
    index = np.array([24, 100, 200])
    world = tuple(image_layer.data_to_world(index))
    viewer.dims.set_point(0, world[0])  # the slice shown, as when the user scrolls to it
    viewer.cursor.position = world
    expected = source.TransformIndexToPhysicalPoint([200, 100, 24])
    assert widget.field("cursor (LPS mm)") == "(" + ", ".join(f"{v:.1f}" for v in expected) + ")"
    assert widget.field("value") == str(image_layer.data[24, 100, 200])
    new = widget.add_labels_layer()
    assert new.data.shape == image_layer.data.shape
    assert_world_matches_sitk(new, source)


def test_image_from_layer_round_trip(make_napari_viewer, oblique_volume):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(oblique_volume), plugin=PLUGIN)
    image = image_from_layer(layer)
    reference = sitk.ReadImage(str(oblique_volume))
    expected = Geometry.from_sitk(reference)
    np.testing.assert_allclose(image.geometry.spacing_xyz, expected.spacing_xyz, atol=1e-9)
    np.testing.assert_allclose(image.geometry.origin_xyz, expected.origin_xyz, atol=1e-9)
    np.testing.assert_allclose(image.geometry.direction, expected.direction, atol=1e-9)
