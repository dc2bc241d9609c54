"""The voxel grid a phantom is drawn on, and where each of its indices lies in the world.

Every world position comes from :meth:`Geometry.index_to_world` / :meth:`Geometry.world_to_index`;
the grid only caches the per-axis results, which is exact because phantom grids are axis-aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..image import Geometry


@dataclass(frozen=True)
class VoxelGrid:
    shape_zyx: tuple[int, int, int]
    geometry: Geometry

    def __post_init__(self):
        if not self.geometry.is_axis_aligned or self.geometry.ndim != 3:
            raise ValueError("phantoms are drawn on axis-aligned 3D grids")

    @cached_property
    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World z of every slice, y of every row, x of every column (float32, mm)."""
        axes = []
        for axis in range(3):
            index = np.zeros((self.shape_zyx[axis], 3))
            index[:, axis] = np.arange(self.shape_zyx[axis])
            axes.append(self.geometry.index_to_world(index)[:, 2 - axis].astype(np.float32))
        return tuple(axes)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.geometry.spacing_zyx

    @property
    def edge_mm(self) -> float:
        """Width of the partial-volume ramp drawn at object borders."""
        return float(min(self.geometry.spacing_xyz))

    def index_box(self, low_xyz, high_xyz) -> tuple[slice, slice, slice] | None:
        """The (z, y, x) slices of the voxels inside a world box, or None when it misses the grid."""
        corners = self.geometry.world_to_index(np.array([low_xyz, high_xyz], dtype=float))
        start = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, self.shape_zyx)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))

    def supersampled_in_z(self, factor: int) -> "VoxelGrid":
        """``factor`` thin slices per slice, centred so that their mean is the thick slice."""
        if factor == 1:
            return self
        first = self.geometry.index_to_world([-0.5 + 0.5 / factor, 0.0, 0.0])
        spacing = self.geometry.spacing_xyz
        geometry = Geometry((spacing[0], spacing[1], spacing[2] / factor), tuple(first), self.geometry.direction)
        nz, ny, nx = self.shape_zyx
        return VoxelGrid((nz * factor, ny, nx), geometry)
