"""Smooth random fields fixed in the patient frame (parenchymal and nodule texture).

The field lives on a coarse lattice in millimetres, so a patient's texture is the same whatever
grid it is drawn on; slices are interpolated from cached lattice planes, never from a full-volume
coordinate array (and by gathers, not matrix products: multithreaded BLAS stalls on small
matrices on few cores).
"""

from __future__ import annotations

import math

import numpy as np

from .grid import VoxelGrid


def _linear_taps(positions: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower lattice index and weight of the upper neighbour for each (fractional) position."""
    positions = np.clip(positions, 0, count - 1)
    low = np.minimum(np.floor(positions).astype(int), count - 2)
    return low, (positions - low).astype(np.float32)


class SmoothField:
    """A Gaussian random field with unit standard deviation and correlation length ``scale_mm``."""

    def __init__(self, rng: np.random.Generator, low_xyz, high_xyz, scale_mm: float):
        from scipy import ndimage  # imported here: importing the package stays fast

        self.low_xyz = np.asarray(low_xyz, dtype=float)
        self.lattice_mm = scale_mm / 2.0
        shape_xyz = np.ceil((np.asarray(high_xyz) - self.low_xyz) / self.lattice_mm).astype(int) + 4
        values = ndimage.gaussian_filter(rng.standard_normal(tuple(shape_xyz[::-1])), 1.0, mode="wrap")
        self.values_zyx = (values / max(float(values.std()), 1e-6)).astype(np.float32)

    def _lattice(self, coordinate_mm, axis_xyz: int):
        return (np.asarray(coordinate_mm, dtype=float) - self.low_xyz[axis_xyz]) / self.lattice_mm

    def at(self, points_xyz: np.ndarray) -> np.ndarray:
        """Field values at world points (..., 3)."""
        from scipy import ndimage

        points = np.asarray(points_xyz, dtype=float)
        coordinates = [self._lattice(points[..., axis], axis) for axis in (2, 1, 0)]
        return ndimage.map_coordinates(self.values_zyx, coordinates, order=1, mode="nearest").astype(np.float32)

    def slices(self, grid: VoxelGrid):
        """A function ``slice_at(k)`` giving the field on slice ``k`` of ``grid`` (ny, nx)."""
        z_mm, y_mm, x_mm = grid.axes_mm
        nz, ny, nx = self.values_zyx.shape
        low_y, weight_y = _linear_taps(self._lattice(y_mm, 1), ny)
        low_x, weight_x = _linear_taps(self._lattice(x_mm, 0), nx)
        weight_y = weight_y[:, None]
        cache: dict[int, np.ndarray] = {}

        def plane(index: int) -> np.ndarray:
            if index not in cache:
                if len(cache) > 3:
                    cache.pop(min(cache))
                values = self.values_zyx[index]
                rows = values[low_y] * (1 - weight_y) + values[low_y + 1] * weight_y
                cache[index] = rows[:, low_x] * (1 - weight_x) + rows[:, low_x + 1] * weight_x
            return cache[index]

        def slice_at(k: int) -> np.ndarray:
            position = float(np.clip(self._lattice(z_mm[k], 2), 0, nz - 1))
            low = min(int(math.floor(position)), nz - 2)
            fraction = position - low
            return plane(low) * (1 - fraction) + plane(low + 1) * fraction

        return slice_at
