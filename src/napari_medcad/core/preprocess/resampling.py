"""Resampling to a target spacing and resizing to a shape, keeping the world geometry.

The new grid shares the old grid's direction, and its first voxel's outer corner sits on the
old first voxel's outer corner: output voxel j samples old index ``(j + 0.5) * step - 0.5``
(``step`` = new spacing / old spacing), which is torch's ``align_corners=False`` convention.
The new origin (the first voxel's centre) is therefore ``Geometry.shifted(0.5 * step - 0.5)``,
so every structure keeps its world position.  Resizing keeps the physical extent exactly;
resampling to a spacing keeps as many new voxels as fit inside the old extent.
Time (2-D + t stacks) and colour channels are never resampled.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report
from .backend import REFERENCE, interpolate_linear_torch, resolve_device
from .common import check_image, derive, spatial_axes, spatial_blocks

INTERPOLATIONS = ("linear", "bspline", "nearest")
#: torch's interpolate is 6x faster than SciPy for linear resampling on a CPU (see backend)
LINEAR_CPU_DEFAULT = "cpu"


def _per_axis(values, count: int, what: str) -> tuple[float, ...]:
    """One number for all spatial axes, or one per axis (given in x, y[, z] order)."""
    values = [values] if np.isscalar(values) else list(values)
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise MedcadError(f"{what} needs 1 or {count} values for this image, got {len(values)}")
    return tuple(float(v) for v in values)


def _sample(
    blocks: np.ndarray,
    out_shape: Sequence[int],
    steps: Sequence[float],
    interpolation: str,
    device: str,
    scale_factor: Sequence[float] | None,
) -> np.ndarray:
    """Sample every block at old indices ``(j + 0.5) * step - 0.5`` per spatial axis."""
    if interpolation == "nearest":
        out = blocks
        for axis, (size, step) in enumerate(zip(out_shape, steps), start=1):
            index = np.floor((np.arange(size) + 0.5) * step).astype(np.intp)
            out = np.take(out, np.clip(index, 0, blocks.shape[axis] - 1), axis=axis)
        return out
    target = resolve_device(device, LINEAR_CPU_DEFAULT) if interpolation == "linear" else REFERENCE
    if target != REFERENCE:
        if scale_factor is None:
            return interpolate_linear_torch(blocks, target, size=out_shape)
        out = interpolate_linear_torch(blocks, target, scale_factor=scale_factor)
        if tuple(out.shape[1:]) != tuple(out_shape):
            raise RuntimeError(f"torch made {out.shape[1:]} voxels, expected {tuple(out_shape)}")
        return out
    from scipy import ndimage

    order = 1 if interpolation == "linear" else 3
    steps = np.asarray(steps, dtype=float)
    out = np.empty((blocks.shape[0],) + tuple(out_shape), dtype=np.float32)
    for index, block in enumerate(blocks):
        ndimage.affine_transform(
            np.asarray(block, dtype=np.float32), steps, offset=0.5 * steps - 0.5,
            output_shape=tuple(out_shape), output=out[index], order=order, mode="nearest",
            prefilter=order > 1,
        )
    return out


def _resampled(
    image: MedicalImage,
    out_shape_zyx: Sequence[int],
    steps_zyx: Sequence[float],
    interpolation: str,
    device: str,
    progress: Optional[ProgressFn],
    scale_factor: Sequence[float] | None = None,
) -> MedicalImage:
    if interpolation not in INTERPOLATIONS:
        raise MedcadError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{interpolation}'")
    axes = spatial_axes(image)
    report(progress, 0, 1, f"{interpolation} resampling")
    blocks, restore = spatial_blocks(image)
    if interpolation != "nearest" and blocks.dtype != np.float32:
        blocks = blocks.astype(np.float32)
    array = restore(_sample(blocks, out_shape_zyx, steps_zyx, interpolation, device, scale_factor))
    start = np.zeros(image.ndim)
    spacing_zyx = np.asarray(image.geometry.spacing_zyx, dtype=float)
    for axis, step in zip(axes, steps_zyx):
        start[axis] = 0.5 * step - 0.5
        spacing_zyx[axis] *= step
    geometry = image.geometry.shifted(start).with_spacing(tuple(spacing_zyx[::-1]))
    report(progress, 1, 1, f"{interpolation} resampling")
    return derive(image, array, geometry)


def resample(
    image: MedicalImage,
    spacing_xyz: float | Sequence[float] = 1.0,
    interpolation: str = "linear",
    progress: Optional[ProgressFn] = None,
    device: str = "auto",
) -> MedicalImage:
    """Resample to a voxel spacing in mm (one number: isotropic; else x, y[, z]).

    "linear" or "bspline" (cubic, SciPy) for images, "nearest" for label maps (keeps the dtype).
    Linear interpolation does not smooth first: add a Gaussian step before strong downsampling.
    """
    check_image(image, "resample")
    axes = spatial_axes(image)
    target_zyx = _per_axis(spacing_xyz, len(axes), "resample spacing")[::-1]
    if not all(math.isfinite(v) and v > 0 for v in target_zyx):
        raise MedcadError(f"resample spacing must be positive, got {spacing_xyz}")
    old_zyx = [image.geometry.spacing_zyx[axis] for axis in axes]
    scale = [old / new for old, new in zip(old_zyx, target_zyx)]
    # the same arithmetic as torch's interpolate, so both paths make the same grid
    out_shape = [math.floor(float(image.array.shape[axis]) * s) for axis, s in zip(axes, scale)]
    if min(out_shape) < 1:
        short = int(np.argmin(out_shape))  # the axis the new spacing does not fit into
        raise MedcadError(
            f"resample spacing {spacing_xyz} mm is larger than '{image.name}' itself "
            f"({image.array.shape[axes[short]] * old_zyx[short]:g} mm along {'xyz'[len(axes) - 1 - short]}, "
            f"{target_zyx[short]:g} mm wanted)"
        )
    steps = [new / old for old, new in zip(old_zyx, target_zyx)]
    return _resampled(image, out_shape, steps, interpolation, device, progress, scale_factor=scale)


def resize(
    image: MedicalImage,
    shape_zyx: Sequence[int],
    interpolation: str = "linear",
    progress: Optional[ProgressFn] = None,
    device: str = "auto",
) -> MedicalImage:
    """Resize the spatial axes to ``shape_zyx`` voxels (array order; y, x for 2-D and 2-D + t),
    adjusting the spacing so the physical extent and position stay the same."""
    check_image(image, "resize")
    axes = spatial_axes(image)
    shape_zyx = [int(v) for v in ([shape_zyx] if np.isscalar(shape_zyx) else shape_zyx)]
    if len(shape_zyx) != len(axes) or min(shape_zyx) < 1:
        raise MedcadError(
            f"resize needs {len(axes)} positive sizes (array order) for '{image.name}', got {shape_zyx}"
        )
    steps = [image.array.shape[axis] / size for axis, size in zip(axes, shape_zyx)]
    return _resampled(image, shape_zyx, steps, interpolation, device, progress)
