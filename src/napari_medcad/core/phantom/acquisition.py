"""What the scanner adds: slice thickness, reconstruction blur, noise, calibration, field of view.

Thick slices are the mean of thin sub-slices (partial volume along z, as a box slice profile);
noise is white noise band-passed in-plane, which gives the fine-grained, zero-mean-at-DC
texture of filtered back-projection instead of salt-and-pepper.  Work is done in slabs of
slices, so memory stays near the size of the result.
"""

from __future__ import annotations

import numpy as np

from .config import PhantomConfig
from .grid import VoxelGrid

_SLAB = 16


def thick_slices(volume: np.ndarray, group: int) -> np.ndarray:
    """Mean of every ``group`` consecutive slices (float32)."""
    if group == 1:
        return volume
    nz, ny, nx = volume.shape
    return volume.reshape(nz // group, group, ny, nx).mean(axis=1, dtype=np.float32)


def field_of_view(grid: VoxelGrid) -> np.ndarray:
    """True inside the reconstruction circle inscribed in the in-plane grid."""
    _, y_mm, x_mm = grid.axes_mm
    centre_y, centre_x = 0.5 * (y_mm[0] + y_mm[-1]), 0.5 * (x_mm[0] + x_mm[-1])
    radius = 0.5 * min(abs(y_mm[-1] - y_mm[0]), abs(x_mm[-1] - x_mm[0]))
    return (y_mm[:, None] - centre_y) ** 2 + (x_mm[None, :] - centre_x) ** 2 <= radius**2


def acquire(hu: np.ndarray, grid: VoxelGrid, config: PhantomConfig, rng: np.random.Generator) -> np.ndarray:
    """Scanner output (int16 HU) on ``grid`` from noise-free HU on the same grid."""
    from scipy import ndimage  # imported here: importing the package stays fast

    _, spacing_y, spacing_x = grid.spacing_zyx
    blur = (0.0, config.blur_sigma_mm / spacing_y, config.blur_sigma_mm / spacing_x)
    grain = 0.5 * config.noise_grain_mm / np.array([spacing_y, spacing_x])
    inside = field_of_view(grid) if config.fov_padding_hu is not None else None
    result = np.empty(hu.shape, np.int16)
    noise_gain = None
    for first in range(0, hu.shape[0], _SLAB):
        slab = hu[first: first + _SLAB]
        image = ndimage.gaussian_filter(slab, blur) if config.blur_sigma_mm > 0 else slab.copy()
        if config.noise_sigma_hu > 0:
            white = rng.standard_normal(slab.shape, dtype=np.float32)
            fine = ndimage.gaussian_filter(white, (0.0, *grain))
            coarse = ndimage.gaussian_filter(white, (0.0, *(2.5 * grain)))
            fine -= coarse
            if noise_gain is None:
                noise_gain = config.noise_sigma_hu / max(float(fine.std()), 1e-6)
            image += fine * np.float32(noise_gain)
        image *= np.float32(config.hu_scale)
        image += np.float32(config.hu_offset)
        np.clip(np.rint(image), -1024, 3071, out=image)
        result[first: first + _SLAB] = image
        if inside is not None:
            result[first: first + _SLAB][:, ~inside] = config.fov_padding_hu
    return result
