"""Body and lung masks on a chest phantom (body, two lungs, a nodule at the pleura, a table)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import body_mask, lung_mask


def chest_phantom(slices: int = 10, seed: int = 0):
    """(image, truth) with truth masks "body", "lungs" and "nodule"; 1.5 x 1.5 x 4 mm voxels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    body = ((yy - 30) / 22.0) ** 2 + ((xx - 32) / 28.0) ** 2 <= 1
    lungs = (yy >= 18) & (yy <= 38) & (((xx >= 11) & (xx <= 25)) | ((xx >= 39) & (xx <= 53)))
    nodule = (yy - 28) ** 2 + (xx - 12) ** 2 <= 4  # soft tissue against the left lung's outer wall
    table = (yy >= 56) & (yy <= 58) & (np.abs(xx - 32) < 30)
    plane = np.full((64, 64), -1000.0)
    plane[body] = 40
    plane[lungs] = -850
    plane[lungs & nodule] = 30
    plane[table] = 300
    array = np.repeat(plane[None], slices, axis=0) + rng.normal(0, 15, (slices, 64, 64))
    image = MedicalImage(array.astype(np.int16), Geometry.identity(3, (1.5, 1.5, 4.0)), modality="CT", name="chest")
    truth = {"body": body, "lungs": lungs, "nodule": lungs & nodule, "table": table}
    return image, truth


def dice(mask: np.ndarray, truth: np.ndarray) -> float:
    return 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())


def test_body_mask_leaves_out_air_and_table():
    image, truth = chest_phantom()
    out = body_mask(image)
    assert out.array.dtype == np.uint8 and out.modality == "SEG" and out.name == "chest body mask"
    assert out.geometry == image.geometry
    for plane in out.array:
        assert dice(plane > 0, truth["body"]) > 0.97
        assert not np.any(plane[truth["table"]])


def test_lung_mask_holds_both_lungs_and_the_pleural_nodule():
    image, truth = chest_phantom()
    out = lung_mask(image)
    for plane in out.array:
        assert dice(plane > 0, truth["lungs"]) > 0.95
        # the nodule is in, but for its voxels on the lung outline itself
        assert np.all(plane[truth["nodule"] & ndimage.binary_erosion(truth["lungs"])] == 1)
        assert not np.any(plane[~truth["body"]])


@pytest.mark.parametrize("padding", [None, -3024, -1024])
def test_lung_mask_of_a_targeted_reconstruction_that_cuts_the_lungs_open(padding):
    """A field of view smaller than the chest: its rim runs through the chest wall and both
    lungs, so the lungs are no holes in the body; they must still be found (the first lung mask
    lost them and inference then skipped the windows holding the nodules).  With a circular
    field, the scanner pads outside the circle (at -3024, or at an air-like -1024)."""
    image, truth = chest_phantom()
    crop = (slice(12, 48), slice(13, 51))
    array = image.array[(slice(None),) + crop].copy()
    lungs = truth["lungs"][crop]
    if padding is not None:
        yy, xx = np.mgrid[: array.shape[1], : array.shape[2]]
        outside = (yy - 17.5) ** 2 + (xx - 18.5) ** 2 > 20.0**2
        array[:, outside] = padding
        lungs = lungs & ~outside
    # 4 mm pixels: the toy chest becomes adult-sized (lungs 56 mm wide), as the masks' mm sizes expect
    cropped = MedicalImage(array, Geometry.identity(3, (4.0, 4.0, 4.0)), modality="CT", name="targeted")
    for plane in lung_mask(cropped).array:
        assert dice(plane > 0, lungs) > 0.9


def test_lung_mask_keeps_the_table_foam_and_outside_air_out_when_the_body_touches_the_rim():
    """A field that just fits the body: its rim runs through the body and the table, and closes off
    the air outside the skin and the table's foam core (as dense as lung); neither may become lung.
    The lungs are joined (as at the carina), so any impostor would be the second "lung"."""
    image, truth = chest_phantom()
    array = image.array.copy()
    rows = np.mgrid[:64, :64][0]
    lungs = truth["lungs"] | ((rows >= 18) & (rows <= 20) & (np.mgrid[:64, :64][1] >= 25) & (np.mgrid[:64, :64][1] <= 39))
    array[:, lungs & ~truth["lungs"]] = -850
    array[:, (rows == 57) & truth["table"]] = -880  # the table's core row
    crop = (slice(None), slice(10, 60), slice(8, 56))
    out = lung_mask(MedicalImage(array[crop], Geometry.identity(3, (4.0, 4.0, 4.0)), modality="CT", name="tight"))
    for plane in out.array:
        assert dice(plane > 0, lungs[crop[1:]]) > 0.95


def test_masks_on_a_single_slice_and_on_time_frames():
    image, truth = chest_phantom(slices=3)
    single = MedicalImage(image.array[1], Geometry.identity(2, (1.5, 1.5)), modality="CT")
    assert dice(lung_mask(single).array > 0, truth["lungs"]) > 0.95
    frames = MedicalImage(image.array, image.geometry, modality="CT", metadata={"axes": "tyx"})
    out = lung_mask(frames)
    for plane in out.array:
        assert dice(plane > 0, truth["lungs"]) > 0.95


def test_masks_need_a_ct():
    image, _ = chest_phantom(slices=2)
    with pytest.raises(MedcadError, match="needs a CT in Hounsfield units; 'mr' is MR"):
        lung_mask(MedicalImage(image.array, image.geometry, modality="MR", name="mr"))
    with pytest.raises(MedcadError, match="colour picture"):
        body_mask(MedicalImage(np.zeros((8, 8, 3), np.uint8), Geometry.identity(2), rgb=True))


def test_an_image_that_does_not_say_its_modality_must_show_air():
    """An MR read from NRRD or NIfTI (modality unknown) gave a body mask of everything."""
    image, _ = chest_phantom(slices=2)
    assert lung_mask(MedicalImage(image.array, image.geometry, modality="")).array.any()  # CT in HU: read
    mr_like = MedicalImage(np.asarray(image.array) + 1100, image.geometry, modality="OT", name="mr")
    for make in (lung_mask, body_mask):
        with pytest.raises(MedcadError, match="no air .*is it a CT"):
            make(mr_like)
    from napari_medcad.core.preprocess import Pipeline

    with pytest.raises(MedcadError, match="no air"):
        Pipeline.from_list([{"op": "window", "params": {"preset": "lung"}}]).run(mr_like)


def test_real_ct_lung_mask_holds_the_nodule(request):
    from napari_medcad.core.io import read_image

    real = request.config.rootpath.parent / "shared" / "data" / "real"
    if not (real / "lung1_image.nrrd").exists():
        pytest.skip(f"real scans not found at {real}")
    image = read_image(real / "lung1_image.nrrd")
    nodule = read_image(real / "lung1_label.nrrd").array > 0
    lungs = lung_mask(image).array > 0
    assert np.all(lungs[nodule])
    volume_litres = lungs.sum() * np.prod(image.geometry.spacing_xyz) / 1e6
    assert 1.5 < volume_litres < 8  # both lungs of an adult, partly in the field of view


def test_masks_and_ct_windows_refuse_values_that_are_no_longer_hu():
    from napari_medcad.core.preprocess import window, zscore

    image, _ = chest_phantom(slices=2)
    windowed = window(image, "lung", output="unit")
    with pytest.raises(MedcadError, match="holds lung window \\[0, 1\\] values \\(put this step before"):
        lung_mask(windowed)
    with pytest.raises(MedcadError, match="holds z-score values"):
        window(zscore(image), "bone")
    assert body_mask(window(image, "lung", output="clipped")).array.any()  # clipped HU are still HU


def test_an_empty_mask_says_so():
    air = MedicalImage(np.full((4, 32, 32), -1000, np.int16), Geometry.identity(3), modality="CT")
    empty = lung_mask(air)
    assert not empty.array.any()
    assert empty.metadata["mask_note"] == "the lung mask is empty: no lung was found in this image"
    image, _ = chest_phantom(slices=2)
    assert "mask_note" not in lung_mask(image).metadata
