"""Resampling and resizing keep world positions; torch and SciPy agree; SimpleITK agrees with
the new grid's geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import resample, resize

#: torch's interpolate vs SciPy's affine_transform on float32 data of range ~1 (see backend)
LINEAR_TOLERANCE = 1e-5


def oblique_geometry(ndim: int) -> Geometry:
    if ndim == 2:
        c, s = np.cos(0.4), np.sin(0.4)
        return Geometry((0.7, 1.3), (-20.0, 15.0), (c, -s, s, c))
    c, s = np.cos(0.3), np.sin(0.3)
    return Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 90.0), (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))


def landmark_image(shape, index, ndim=None, metadata=None) -> MedicalImage:
    """Zeros with a bright 3-voxel cube centred on ``index`` (float32)."""
    array = np.zeros(shape, dtype=np.float32)
    array[tuple(slice(i - 1, i + 2) for i in index)] = 100.0
    return MedicalImage(array, oblique_geometry(ndim or len(shape)), modality="CT", name="landmark",
                        metadata=metadata or {})


def landmark_world(image: MedicalImage) -> np.ndarray:
    weights = np.clip(image.array, 0, None)  # B-spline ringing is not the landmark
    return image.index_to_world(np.array(ndimage.center_of_mass(weights)))


@pytest.mark.parametrize("interpolation", ["linear", "bspline", "nearest"])
@pytest.mark.parametrize(
    "shape, index, spacing",
    [
        ((12, 30, 26), (6, 11, 17), 1.0),
        ((12, 30, 26), (5, 20, 9), [0.45, 1.7, 1.1]),
        ((40, 36), (13, 21), [2.0, 0.5]),
    ],
)
def test_landmark_keeps_its_world_position(shape, index, spacing, interpolation):
    image = landmark_image(shape, index)
    out = resample(image, spacing, interpolation=interpolation)
    expected = np.atleast_1d(spacing) * np.ones(image.ndim)
    np.testing.assert_allclose(out.geometry.spacing_xyz, expected)
    half_voxel = 0.5 * max(max(out.geometry.spacing_xyz), max(image.geometry.spacing_xyz))
    error = np.linalg.norm(landmark_world(out) - image.index_to_world(np.array(index, dtype=float)))
    assert error < half_voxel, (error, half_voxel)


def corner_world(image: MedicalImage, far: bool = False) -> np.ndarray:
    """World position of the outer corner of the first (or last) voxel."""
    index = np.array(image.spatial_shape, dtype=float) - 0.5 if far else -0.5 * np.ones(image.ndim)
    return image.index_to_world(index)


def test_resample_keeps_the_first_corner_and_the_extent_within_a_voxel():
    image = landmark_image((12, 30, 26), (6, 11, 17))
    out = resample(image, [1.1, 0.6, 3.0])
    np.testing.assert_allclose(corner_world(out), corner_world(image), atol=1e-9)
    shortfall = np.abs(corner_world(out, far=True) - corner_world(image, far=True))
    assert np.all(shortfall < 3.0)  # less than one new voxel along any axis


def test_resize_keeps_the_extent_exactly():
    image = landmark_image((12, 30, 26), (6, 11, 17))
    out = resize(image, [7, 45, 13])
    assert out.spatial_shape == (7, 45, 13)
    np.testing.assert_allclose(corner_world(out), corner_world(image), atol=1e-9)
    np.testing.assert_allclose(corner_world(out, far=True), corner_world(image, far=True), atol=1e-9)
    np.testing.assert_allclose(out.geometry.spacing_xyz, (0.7 * 26 / 13, 0.9 * 30 / 45, 2.5 * 12 / 7))


def test_simpleitk_resampling_onto_our_grid_gives_our_values():
    rng = np.random.default_rng(3)
    image = MedicalImage(ndimage.gaussian_filter(rng.random((10, 24, 20)), 2).astype(np.float32),
                         oblique_geometry(3))
    out = resample(image, [0.5, 1.4, 1.8], device="reference")
    reference = sitk.GetArrayFromImage(sitk.Resample(
        image.to_sitk(), out.size_xyz, sitk.Transform(), sitk.sitkLinear, out.geometry.origin_xyz,
        out.geometry.spacing_xyz, out.geometry.direction, 0.0, sitk.sitkFloat32,
    ))
    np.testing.assert_allclose(out.array, reference, atol=1e-5)


@pytest.mark.parametrize("kind", ["3d", "2d", "tyx", "rgb"])
def test_torch_and_scipy_linear_resampling_agree(kind):
    rng = np.random.default_rng(1)
    shape = {"3d": (9, 21, 17), "2d": (21, 17), "tyx": (4, 21, 17), "rgb": (21, 17, 3)}[kind]
    array = rng.random(shape).astype(np.float32)
    ndim = 2 if kind in ("2d", "rgb") else 3
    image = MedicalImage(array, oblique_geometry(ndim), rgb=kind == "rgb",
                         metadata={"axes": "tyx"} if kind == "tyx" else {})
    for spacing in (1.0, [0.33, 2.1, 4.0][: 2 if kind != "3d" else 3]):
        on_torch = resample(image, spacing, device="cpu")
        on_scipy = resample(image, spacing, device="reference")
        assert on_torch.array.shape == on_scipy.array.shape and on_torch.geometry == on_scipy.geometry
        np.testing.assert_allclose(on_torch.array, on_scipy.array, atol=LINEAR_TOLERANCE)
    shape_zyx = (5, 13, 29)[-3 if kind == "3d" else -2 :]
    np.testing.assert_allclose(resize(image, shape_zyx, device="cpu").array,
                               resize(image, shape_zyx, device="reference").array, atol=LINEAR_TOLERANCE)


def test_time_stack_frames_are_resampled_alone():
    rng = np.random.default_rng(2)
    frames = rng.random((3, 20, 16)).astype(np.float32)
    stack = MedicalImage(frames, Geometry((0.5, 0.5, 40.0), (0, 0, 0), tuple(np.eye(3).ravel())),
                         metadata={"axes": "tyx"})
    out = resample(stack, 1.0)
    assert out.array.shape == (3, 10, 8) and out.geometry.spacing_xyz == (1.0, 1.0, 40.0)
    single = MedicalImage(frames[1], Geometry((0.5, 0.5), (0, 0), (1, 0, 0, 1)))
    np.testing.assert_allclose(out.array[1], resample(single, 1.0).array, atol=1e-6)
    with pytest.raises(MedcadError, match="needs 1 or 2 values"):
        resample(stack, [1.0, 1.0, 1.0])


def test_nearest_keeps_labels_and_dtype():
    labels = np.zeros((8, 20, 20), dtype=np.uint16)
    labels[2:6, 5:12, 8:15] = 7
    image = MedicalImage(labels, Geometry.identity(3, (0.8, 0.8, 2.0)))
    out = resample(image, 0.4, interpolation="nearest")
    assert out.array.dtype == np.uint16 and set(np.unique(out.array)) == {0, 7}
    volume_mm3 = lambda im: (im.array == 7).sum() * np.prod(im.geometry.spacing_xyz)  # noqa: E731
    assert volume_mm3(out) == pytest.approx(volume_mm3(image), rel=0.05)


@pytest.mark.parametrize(
    "spacing, message",
    [(0.0, "must be positive"), (-1.0, "must be positive"), (float("nan"), "must be positive"),
     (500.0, "larger than"), ([1.0, 1.0], "needs 1 or 3 values")],
)
def test_impossible_spacings_are_user_errors(spacing, message):
    with pytest.raises(MedcadError, match=message):
        resample(landmark_image((8, 10, 12), (4, 5, 6)), spacing)


def test_a_spacing_too_large_for_one_axis_names_that_axis():
    thin = MedicalImage(np.zeros((40, 30, 2), np.float32), Geometry.identity(3, (0.7, 1.0, 2.5)), name="thin")
    with pytest.raises(MedcadError, match=r"1.4 mm along x, 2 mm wanted"):
        resample(thin, 2.0)


def test_resize_refuses_bad_shapes():
    image = landmark_image((8, 10, 12), (4, 5, 6))
    with pytest.raises(MedcadError, match="3 positive sizes"):
        resize(image, [10, 10])
    with pytest.raises(MedcadError, match="3 positive sizes"):
        resize(image, [0, 10, 10])
    with pytest.raises(MedcadError, match="interpolation must be one of"):
        resize(image, [4, 5, 6], interpolation="cubic")
