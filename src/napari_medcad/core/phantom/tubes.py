"""Tapered tubes (vessels, airways, great vessels, clavicles, spicules) with partial-volume edges.

A tube set is a list of capsules.  All capsules of a set are drawn in one vectorised pass over
the voxels of their bounding boxes (never the whole image), and overlapping capsules combine by
maximum, so branch points and joints have no seams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import VoxelGrid

_CHUNK_VOXELS = 3_000_000  # voxel-capsule pairs handled at once: bounds the temporary memory


@dataclass(frozen=True)
class Tubes:
    """Capsules from ``start_xyz`` to ``end_xyz`` (world mm, (n, 3)) with radii tapering start->end."""

    start_xyz: np.ndarray
    end_xyz: np.ndarray
    start_radius: np.ndarray
    end_radius: np.ndarray

    def __len__(self) -> int:
        return len(self.start_radius)

    @classmethod
    def empty(cls) -> "Tubes":
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0))

    @classmethod
    def polyline(cls, points_xyz, radii) -> "Tubes":
        """Consecutive capsules through ``points_xyz`` with a radius per point."""
        points = np.asarray(points_xyz, dtype=float)
        radii = np.broadcast_to(np.asarray(radii, dtype=float), len(points))
        return cls(points[:-1], points[1:], radii[:-1].copy(), radii[1:].copy())

    @staticmethod
    def concatenate(sets) -> "Tubes":
        sets = [s for s in sets if len(s)]
        if not sets:
            return Tubes.empty()
        return Tubes(*(np.concatenate([getattr(s, name) for s in sets]) for name in
                       ("start_xyz", "end_xyz", "start_radius", "end_radius")))

    def surface_distance(self, point_xyz) -> np.ndarray:
        """Distance (mm) from a world point to each capsule's surface; negative inside it."""
        axis = self.end_xyz - self.start_xyz
        along = np.clip(((point_xyz - self.start_xyz) * axis).sum(1) / np.maximum((axis * axis).sum(1), 1e-12), 0, 1)
        nearest = self.start_xyz + along[:, None] * axis
        radius = self.start_radius + along * (self.end_radius - self.start_radius)
        return np.linalg.norm(nearest - point_xyz, axis=1) - radius

    def with_radii(self, scale: float = 1.0, minus_mm: float = 0.0) -> "Tubes":
        """The same centre lines with radii ``scale * r - minus_mm`` (e.g. an airway's lumen)."""
        return Tubes(self.start_xyz, self.end_xyz, self.start_radius * scale - minus_mm,
                     self.end_radius * scale - minus_mm)



def _boxes(tubes: Tubes, grid: VoxelGrid, margin_mm: float):
    """Per-capsule index boxes (start, stop as (n, 3) zyx) holding every voxel centre within reach."""
    reach = np.maximum(tubes.start_radius, tubes.end_radius)[:, None] + margin_mm
    low = np.minimum(tubes.start_xyz, tubes.end_xyz) - reach
    high = np.maximum(tubes.start_xyz, tubes.end_xyz) + reach
    corners = grid.geometry.world_to_index(np.stack([low, high]))
    start = np.maximum(np.ceil(corners.min(axis=0)).astype(np.int64), 0)
    stop = np.minimum(np.floor(corners.max(axis=0)).astype(np.int64) + 1, np.asarray(grid.shape_zyx))
    return start, np.maximum(stop, start)


def draw_tubes(tubes: Tubes, grid: VoxelGrid, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy (0..1) of the union of ``tubes`` on ``grid``, as flat voxel indices and fractions.

    An index may repeat (where capsules overlap), always with the same fraction, so assigning
    through the indices is still exact.  ``scratch`` is a zero float32 array of the grid's shape;
    it is returned to zero.
    """
    if len(tubes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    edge = np.float32(grid.edge_mm)
    start, stop = _boxes(tubes, grid, 0.5 * grid.edge_mm)
    extent = stop - start
    counts = extent.prod(axis=1)
    z_mm, y_mm, x_mm = grid.axes_mm
    ny, nx = grid.shape_zyx[1:]
    flat_scratch = scratch.reshape(-1)
    segment = tubes.end_xyz - tubes.start_xyz
    # one row per capsule: start xyz, direction xyz, 1/length^2, radius at start, radius change
    table = np.column_stack([
        tubes.start_xyz, segment, 1.0 / np.maximum((segment**2).sum(axis=1), 1e-12),
        tubes.start_radius + 0.5 * grid.edge_mm, tubes.end_radius - tubes.start_radius,
    ]).astype(np.float32)
    boxes = np.column_stack([start, extent[:, 1] * extent[:, 2], extent[:, 2]]).astype(np.int32)
    boundaries = np.searchsorted(np.cumsum(counts), np.arange(_CHUNK_VOXELS, counts.sum(), _CHUNK_VOXELS))
    touched_parts = []
    for chunk in np.split(np.arange(len(tubes)), np.unique(boundaries)):
        chunk = chunk[counts[chunk] > 0]
        if len(chunk) == 0:
            continue
        chunk_counts = counts[chunk]
        owner = np.repeat(chunk.astype(np.int32), chunk_counts)
        first = (np.cumsum(chunk_counts) - chunk_counts).astype(np.int32)
        offset = np.arange(int(chunk_counts.sum()), dtype=np.int32) - np.repeat(first, chunk_counts)
        box = boxes[owner]
        iz = box[:, 0] + offset // box[:, 3]
        rest = offset % box[:, 3]
        iy = box[:, 1] + rest // box[:, 4]
        ix = box[:, 2] + rest % box[:, 4]
        row = table[owner]
        px = x_mm[ix] - row[:, 0]
        py = y_mm[iy] - row[:, 1]
        pz = z_mm[iz] - row[:, 2]
        t = np.clip((px * row[:, 3] + py * row[:, 4] + pz * row[:, 5]) * row[:, 6], 0, 1)
        px -= t * row[:, 3]
        py -= t * row[:, 4]
        pz -= t * row[:, 5]
        distance = np.sqrt(px * px + py * py + pz * pz)
        fraction = (row[:, 7] + t * row[:, 8] - distance) / edge  # 0.5 + (radius - distance) / edge
        touched = fraction > 0
        flat = (iz[touched].astype(np.int64) * ny + iy[touched]) * nx + ix[touched]
        np.maximum.at(flat_scratch, flat, np.minimum(fraction[touched], 1))
        touched_parts.append(flat)
    index = np.concatenate(touched_parts) if touched_parts else np.zeros(0, np.int64)
    values = flat_scratch[index]
    flat_scratch[index] = 0
    return index, values


def composite(hu: np.ndarray, index: np.ndarray, fraction: np.ndarray, value: float,
              only_brighter: bool = False) -> None:
    """Mix ``value`` into ``hu`` at flat ``index`` in proportion to the occupied ``fraction``.

    ``only_brighter`` keeps voxels that are already denser (a nodule does not hide a vessel).
    """
    flat = hu.reshape(-1)
    current = flat[index]
    mixed = current + fraction * (np.float32(value) - current)
    flat[index] = np.maximum(current, mixed) if only_brighter else mixed
