"""Grayscale conversion, denoising (Gaussian, median, non-local means, anisotropic diffusion,
bilateral) and CLAHE, through SciPy, scikit-image and SimpleITK.

Spatial filters never act along time (2-D + t stacks are filtered frame by frame) and treat
colour channels independently.  Sizes that are physical (Gaussian sigma, bilateral domain) are
in mm and follow the voxel spacing; sizes that are discrete by nature (median radius, NLM
patches, CLAHE tiles) are in voxels.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..errors import Cancelled, MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report, scaled
from .backend import REFERENCE, gaussian_torch, resolve_device
from .common import (
    as_float32,
    check_image,
    check_single_channel,
    derive,
    display_window,
    per_frame,
    per_slice,
    spatial_axes,
    spatial_blocks,
    without_float16,
)

#: SciPy's gaussian_filter is 3x faster than the torch version on a CPU (see backend)
GAUSSIAN_CPU_DEFAULT = REFERENCE
#: kernel radius in sigmas, as scipy.ndimage's default
GAUSSIAN_TRUNCATE = 4.0


def _positive(value: float, what: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise MedcadError(f"{what} must be a positive number, got {value}")


def _block_spacing_xyz(image: MedicalImage) -> tuple[float, ...]:
    """Spacing of the spatial axes of one block (x, y[, z]), time left out."""
    return tuple(image.geometry.spacing_zyx[axis] for axis in spatial_axes(image))[::-1]


def grayscale(image: MedicalImage, progress: Optional[ProgressFn] = None) -> MedicalImage:
    """RGB(A) -> luminance with scikit-image (Rec. 709 weights; RGBA composited on white).

    Integer pictures become [0, 1]; a single-channel image is passed through unchanged, so a
    pipeline for "possibly colour" radiographs runs on both.
    """
    check_image(image, "grayscale")
    report(progress, 0, 1, "grayscale")
    if not image.rgb:
        return derive(image, image.array.copy())
    from skimage.color import rgb2gray, rgba2rgb

    channels = image.array.shape[-1]
    if channels not in (3, 4):
        raise MedcadError(f"grayscale needs 3 (RGB) or 4 (RGBA) colour channels, '{image.name}' has {channels}")
    rgb = rgba2rgb(image.array) if channels == 4 else image.array
    gray = rgb2gray(rgb).astype(np.float32)
    report(progress, 1, 1, "grayscale")
    return derive(image, gray, rgb=False, **display_window(float(gray.min()), float(gray.max()), "luminance"))


def gaussian(
    image: MedicalImage,
    sigma_mm: float = 1.0,
    progress: Optional[ProgressFn] = None,
    device: str = "auto",
) -> MedicalImage:
    """Gaussian smoothing with a sigma in mm (anisotropic voxels get per-axis sigmas); edges
    are extended by their nearest value.  Output float32."""
    check_image(image, "Gaussian")
    _positive(sigma_mm, "Gaussian sigma (mm)")
    blocks, restore = spatial_blocks(image)
    sigmas = (0.0,) + tuple(sigma_mm / s for s in _block_spacing_xyz(image)[::-1])
    target = resolve_device(device, GAUSSIAN_CPU_DEFAULT)
    report(progress, 0, 1, "Gaussian smoothing")
    if target == REFERENCE:
        from scipy import ndimage

        smoothed = ndimage.gaussian_filter(
            without_float16(blocks), sigmas, output=np.float32, mode="nearest", truncate=GAUSSIAN_TRUNCATE
        )
    else:
        smoothed = gaussian_torch(blocks, sigmas, GAUSSIAN_TRUNCATE, target)
    report(progress, 1, 1, "Gaussian smoothing")
    return derive(image, restore(smoothed))


def median(image: MedicalImage, radius_vox: int = 1, progress: Optional[ProgressFn] = None) -> MedicalImage:
    """Median over a (2r+1)-voxel box in space; keeps the dtype (labels stay labels)."""
    from scipy import ndimage

    check_image(image, "median")
    if int(radius_vox) != radius_vox or radius_vox < 1:
        raise MedcadError(f"median radius must be a whole number of voxels >= 1, got {radius_vox}")
    blocks, restore = spatial_blocks(image)
    blocks = without_float16(blocks)
    size = 2 * int(radius_vox) + 1

    def one(block: np.ndarray) -> np.ndarray:
        return ndimage.median_filter(block, size=size, mode="nearest")

    return derive(image, restore(per_slice(blocks, one, progress, "median", unit="part")))


def noise_level(plane: np.ndarray) -> float:
    """Standard deviation of Gaussian noise in a 2-D image (Immerkær 1996, fast estimator).

    scikit-image's ``estimate_sigma`` would need PyWavelets, which is not a dependency.
    """
    from scipy import ndimage

    plane = np.asarray(plane, dtype=np.float64)
    if min(plane.shape) < 3:
        return 0.0
    mask = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    response = np.abs(ndimage.convolve(plane, mask))[1:-1, 1:-1]
    return float(math.sqrt(math.pi / 2.0) * response.mean() / 6.0)


def nl_means(
    image: MedicalImage,
    strength: float = 0.8,
    patch_size: int = 5,
    patch_distance: int = 6,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Non-local means (scikit-image, fast mode), slice by slice.

    The filter strength is ``strength`` times each slice's noise level (:func:`noise_level`).  Volumes are denoised per slice: 3-D NLM takes hours on a CT and gives
    little over 2-D on thick slices.  Output float32.
    """
    from skimage.restoration import denoise_nl_means

    check_image(image, "non-local means")
    _positive(strength, "NLM strength")
    if int(patch_size) != patch_size or patch_size < 1 or int(patch_distance) != patch_distance or patch_distance < 1:
        raise MedcadError("NLM patch size and distance must be whole numbers of voxels >= 1")
    blocks, restore = spatial_blocks(image)
    slices = blocks.reshape((-1,) + blocks.shape[-2:])

    def one(plane: np.ndarray) -> np.ndarray:
        plane = plane.astype(np.float32)
        noise_sigma = noise_level(plane)
        if noise_sigma <= 0:
            return plane  # noise-free: nothing to remove
        return denoise_nl_means(
            plane, patch_size=int(patch_size), patch_distance=int(patch_distance),
            h=strength * noise_sigma, sigma=noise_sigma, fast_mode=True, preserve_range=True,
        ).astype(np.float32)

    out = per_slice(slices, one, progress, "non-local means")
    return derive(image, restore(out.reshape(blocks.shape)))


def _run_sitk(filter_, block: np.ndarray, spacing_xyz, progress: Optional[ProgressFn], message: str) -> np.ndarray:
    """Execute a SimpleITK filter on one block, relaying its progress; Cancel aborts it."""
    import SimpleITK as sitk

    itk_image = sitk.GetImageFromArray(np.asarray(block, dtype=np.float32))
    itk_image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    cancelled = []

    def on_progress():
        try:
            report(progress, int(filter_.GetProgress() * 1000), 1000, message)
        except Cancelled:
            cancelled.append(True)
            filter_.Abort()

    filter_.AddCommand(sitk.sitkProgressEvent, on_progress)
    try:
        result = filter_.Execute(itk_image)
    except RuntimeError:
        if cancelled:
            raise Cancelled() from None
        raise
    finally:
        filter_.RemoveAllCommands()
    return sitk.GetArrayFromImage(result)


def _sitk_per_block(image: MedicalImage, make_filter, progress: Optional[ProgressFn], message: str) -> np.ndarray:
    blocks, restore = spatial_blocks(image)
    spacing_xyz = _block_spacing_xyz(image)
    out = np.empty(blocks.shape, dtype=np.float32)
    for index, block in enumerate(blocks):
        part = scaled(progress, index / len(blocks), (index + 1) / len(blocks))
        out[index] = _run_sitk(make_filter(), block, spacing_xyz, part, message)
    return restore(out)


def anisotropic_diffusion(
    image: MedicalImage,
    iterations: int = 5,
    conductance: float = 3.0,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Edge-preserving smoothing: SimpleITK's curvature anisotropic diffusion, with the
    largest stable time step for the voxel spacing.  Output float32."""
    import SimpleITK as sitk

    check_image(image, "anisotropic diffusion")
    _positive(conductance, "diffusion conductance")
    if int(iterations) != iterations or iterations < 1:
        raise MedcadError(f"diffusion iterations must be a whole number >= 1, got {iterations}")
    spacing_xyz = _block_spacing_xyz(image)
    time_step = min(spacing_xyz) / 2.0 ** (len(spacing_xyz) + 1)

    def make_filter():
        filter_ = sitk.CurvatureAnisotropicDiffusionImageFilter()
        filter_.SetTimeStep(time_step)
        filter_.SetNumberOfIterations(int(iterations))
        filter_.SetConductanceParameter(float(conductance))
        return filter_

    return derive(image, _sitk_per_block(image, make_filter, progress, "anisotropic diffusion"))


def bilateral(
    image: MedicalImage,
    domain_sigma_mm: float = 2.0,
    range_sigma: float = 50.0,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Edge-preserving smoothing: SimpleITK's bilateral filter; ``range_sigma`` is in the
    image's units (HU for CT).  Output float32."""
    import SimpleITK as sitk

    check_image(image, "bilateral")
    _positive(domain_sigma_mm, "bilateral domain sigma (mm)")
    _positive(range_sigma, "bilateral range sigma")

    def make_filter():
        filter_ = sitk.BilateralImageFilter()
        filter_.SetDomainSigma(float(domain_sigma_mm))
        filter_.SetRangeSigma(float(range_sigma))
        return filter_

    return derive(image, _sitk_per_block(image, make_filter, progress, "bilateral"))


def clahe(
    image: MedicalImage,
    clip_limit: float = 0.01,
    kernel_size_vox: int = 0,
    nbins: int = 256,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Contrast-limited adaptive histogram equalisation (scikit-image), 2-D or 3-D.

    The image is first rescaled from its min..max to [0, 1]; ``kernel_size_vox`` 0 means tiles
    of 1/8 of each axis.  2-D + t stacks are equalised frame by frame.  Output float32 in [0, 1].
    """
    from skimage.exposure import equalize_adapthist

    check_image(image, "CLAHE")
    check_single_channel(image, "CLAHE")
    if not (0 < clip_limit <= 1):
        raise MedcadError(f"CLAHE clip limit must be in (0, 1], got {clip_limit}")
    if int(kernel_size_vox) != kernel_size_vox or kernel_size_vox < 0 or int(nbins) != nbins or nbins < 2:
        raise MedcadError("CLAHE tile size must be a whole number >= 0 (0: automatic) and bins >= 2")
    low, high = float(np.min(image.array)), float(np.max(image.array))
    unit = as_float32(image.array)
    unit -= np.float32(low)
    unit /= np.float32(high - low if high > low else 1.0)

    def one(array: np.ndarray) -> np.ndarray:
        return equalize_adapthist(
            array, kernel_size=int(kernel_size_vox) or None, clip_limit=float(clip_limit), nbins=int(nbins)
        ).astype(np.float32)

    out = per_frame(derive(image, unit), one, progress, "CLAHE")
    return derive(image, out, **display_window(0.0, 1.0, "CLAHE [0, 1]"))
