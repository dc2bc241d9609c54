"""Grayscale, denoising and CLAHE: what each does, in mm where physical, never across time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_medcad.core.errors import Cancelled, MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import (
    anisotropic_diffusion,
    bilateral,
    clahe,
    gaussian,
    grayscale,
    median,
    nl_means,
)
from napari_medcad.core.preprocess.filters import noise_level

#: torch's Gaussian (float32 sums) vs SciPy's (float64 sums), on data of range ~1
GAUSSIAN_TOLERANCE = 1e-6


def image_of(array, spacing_xyz=None, **kwargs) -> MedicalImage:
    array = np.asarray(array)
    ndim = array.ndim - (1 if kwargs.get("rgb") else 0)
    return MedicalImage(array, Geometry.identity(ndim, spacing_xyz), modality="CT", **kwargs)


def noisy_step(shape=(48, 48), sigma=20.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy): a 0/200 step edge plus Gaussian noise."""
    clean = np.zeros(shape, np.float32)
    clean[..., shape[-1] // 2 :] = 200.0
    noisy = clean + np.random.default_rng(seed).normal(0, sigma, shape).astype(np.float32)
    return clean, noisy


def test_grayscale_uses_luminance_and_passes_gray_through():
    picture = np.zeros((4, 5, 3), np.uint8)
    picture[0, 0] = (255, 0, 0)
    picture[1, 1] = (255, 255, 255)
    out = grayscale(image_of(picture, rgb=True))
    assert not out.rgb and out.array.dtype == np.float32 and out.array.shape == (4, 5)
    assert out.array[0, 0] == pytest.approx(0.2125, abs=1e-4) and out.array[1, 1] == pytest.approx(1.0)
    rgba = np.concatenate([picture, np.full((4, 5, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(grayscale(image_of(rgba, rgb=True)).array, out.array, atol=1e-6)
    gray = image_of(np.arange(12, dtype=np.int16).reshape(3, 4))
    passed = grayscale(gray)
    np.testing.assert_array_equal(passed.array, gray.array)
    assert passed.array.dtype == np.int16 and not np.shares_memory(passed.array, gray.array)
    with pytest.raises(MedcadError, match="3 \\(RGB\\) or 4"):
        grayscale(image_of(np.zeros((4, 5, 2)), rgb=True))


@pytest.mark.parametrize("sigma_mm", [0.6, 1.5])
@pytest.mark.parametrize("kind", ["3d", "2d", "tyx", "rgb"])
def test_torch_and_scipy_gaussian_agree(kind, sigma_mm):
    rng = np.random.default_rng(4)
    shape = {"3d": (9, 21, 17), "2d": (21, 17), "tyx": (4, 21, 17), "rgb": (21, 17, 3)}[kind]
    spacing = (0.7, 0.9, 2.5) if kind in ("3d", "tyx") else (0.7, 0.9)
    image = image_of(rng.random(shape).astype(np.float32), spacing, rgb=kind == "rgb",
                     metadata={"axes": "tyx"} if kind == "tyx" else {})
    on_torch = gaussian(image, sigma_mm, device="cpu").array
    on_scipy = gaussian(image, sigma_mm, device="reference").array
    np.testing.assert_allclose(on_torch, on_scipy, atol=GAUSSIAN_TOLERANCE)


def test_gaussian_sigma_is_in_mm():
    array = np.random.default_rng(5).random((8, 20, 24)).astype(np.float32)
    out = gaussian(image_of(array, (0.5, 1.0, 2.0)), 2.0, device="reference")
    expected = ndimage.gaussian_filter(array, (1.0, 2.0, 4.0), mode="nearest")
    np.testing.assert_allclose(out.array, expected, atol=1e-6)


@pytest.mark.parametrize("operation", [gaussian, median, nl_means, anisotropic_diffusion, bilateral, clahe])
def test_time_stack_frames_are_filtered_alone(operation):
    _, noisy = noisy_step((24, 24))
    frames = np.stack([noisy, np.zeros_like(noisy), noisy])
    stack = image_of(frames, (1.0, 1.0, 1.0), metadata={"axes": "tyx"})
    out = operation(stack).array
    single = operation(image_of(noisy)).array
    np.testing.assert_allclose(out[0], single, atol=1e-5)
    np.testing.assert_allclose(out[2], single, atol=1e-5)
    if operation is not clahe:  # CLAHE rescales the whole stack first
        assert np.all(out[1] == 0)  # nothing leaked in from the neighbouring frames


def test_median_removes_salt_and_keeps_dtype():
    array = np.full((6, 20, 20), 100, np.int16)
    array[3, 10, 10] = 3000
    out = median(image_of(array))
    assert out.array.dtype == np.int16 and np.all(out.array == 100)
    with pytest.raises(MedcadError, match="whole number of voxels"):
        median(image_of(array), radius_vox=0)


@pytest.mark.parametrize("operation", [nl_means, anisotropic_diffusion, bilateral])
def test_edge_preserving_denoisers_reduce_noise_and_keep_the_edge(operation):
    clean, noisy = noisy_step()
    out = operation(image_of(noisy)).array
    assert out.dtype == np.float32
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    edge_contrast = out[:, 30:].mean() - out[:, :18].mean()
    assert edge_contrast > 0.9 * 200


def test_nl_means_runs_slice_by_slice_on_volumes():
    _, noisy = noisy_step((3, 32, 32))
    out = nl_means(image_of(noisy))
    np.testing.assert_allclose(out.array[1], nl_means(image_of(noisy[1])).array, atol=1e-5)


def test_noise_level_estimate():
    noise = np.random.default_rng(6).normal(0, 10, (200, 200))
    assert noise_level(noise) == pytest.approx(10, rel=0.05)
    assert noise_level(np.ones((10, 10))) == 0.0


def test_clahe_spreads_a_narrow_histogram_to_unit_range():
    rng = np.random.default_rng(7)
    array = (1000 + 20 * rng.random((64, 64))).astype(np.float32)
    out = clahe(image_of(array))
    assert out.array.min() >= 0 and out.array.max() <= 1
    assert out.array.std() > 0.2  # the 2 % contrast now fills the range
    volume = clahe(image_of(np.stack([array] * 4)), kernel_size_vox=8)
    assert volume.array.shape == (4, 64, 64)
    with pytest.raises(MedcadError, match="single-channel"):
        clahe(image_of(np.zeros((8, 8, 3)), rgb=True))


@pytest.mark.parametrize("operation", [anisotropic_diffusion, bilateral])
def test_simpleitk_filters_report_progress_and_stop_on_cancel(operation):
    _, noisy = noisy_step((4, 48, 48))
    calls = []

    def cancel_after_first(progress):
        calls.append(progress)
        if len(calls) > 1:
            raise Cancelled()

    with pytest.raises(Cancelled):
        operation(image_of(noisy), progress=cancel_after_first)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda im: gaussian(im, 0.0), "sigma \\(mm\\) must be a positive number"),
        (lambda im: nl_means(im, patch_size=0), "patch size and distance"),
        (lambda im: anisotropic_diffusion(im, iterations=0), "iterations must be a whole number"),
        (lambda im: bilateral(im, range_sigma=-1), "range sigma must be a positive number"),
        (lambda im: clahe(im, clip_limit=2.0), "clip limit must be in"),
        (lambda im: gaussian(im, device="tpu"), "unknown device 'tpu'"),
    ],
)
def test_bad_filter_parameters_are_user_errors(call, message):
    with pytest.raises(MedcadError, match=message):
        call(image_of(np.zeros((10, 10), np.float32)))
