"""Cropping to a box in voxel indices or world millimetres, with a margin in mm.

The crop keeps its voxels exactly and moves its origin to its first voxel
(``Geometry.shifted``), so it overlays the original image in napari and in patient space.
Boxes may leave an axis open (``None``): a rectangle drawn on one slice of a volume crops
in-plane and keeps every slice.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import numpy as np

from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report
from .common import check_image, derive, spatial_axes

#: a world position this close to a voxel centre counts as on it (mm)
_TOLERANCE = 1e-6

Box = Sequence[Sequence[Optional[float]]]


def _two_corners(box: Box, ndim: int, what: str) -> tuple[list, list]:
    if len(box) != 2 or any(len(corner) != ndim for corner in box):
        raise MedcadError(f"{what} needs two corners of {ndim} values each, got {box}")
    first, second = (list(corner) for corner in box)
    for value in first + second:
        if value is not None and not math.isfinite(float(value)):
            raise MedcadError(f"{what} holds a non-finite number: {box}")
    return first, second


def _index_range_from_world(image: MedicalImage, box_world_xyz: Box) -> list[tuple[float, float] | None]:
    """Continuous index range per array axis covered by a world box (None: unbounded)."""
    first, second = _two_corners(box_world_xyz, image.ndim, "a world crop box")
    open_world = [a is None or b is None for a, b in zip(first, second)]
    low = [0.0 if o else min(a, b) for o, a, b in zip(open_world, first, second)]
    high = [0.0 if o else max(a, b) for o, a, b in zip(open_world, first, second)]
    corners = np.array(list(itertools.product(*zip(low, high))), dtype=float)
    indices_zyx = image.geometry.world_to_index(corners)
    direction = image.geometry.direction_matrix  # rows: world x, y, z; columns: index x, y, z
    ranges = []
    for axis_zyx in range(image.ndim):
        axis_xyz = image.ndim - 1 - axis_zyx
        depends = np.abs(direction[:, axis_xyz]) > 1e-9
        if any(o and d for o, d in zip(open_world, depends)):
            ranges.append(None)
        else:
            ranges.append((indices_zyx[:, axis_zyx].min(), indices_zyx[:, axis_zyx].max()))
    return ranges


def crop(
    image: MedicalImage,
    box_index_zyx: Box | None = None,
    box_world_xyz: Box | None = None,
    margin_mm: float = 0.0,
    progress: Optional[ProgressFn] = None,
) -> MedicalImage:
    """Crop to a box, grown by ``margin_mm`` on every spatial side; give exactly one box.

    ``box_index_zyx``: [start, stop] voxel indices in array order (stop exclusive, as a
    Python slice).  ``box_world_xyz``: two opposite corners in LPS mm; the crop is the block of
    the grid that holds every voxel whose centre lies inside (on an oblique grid, a few more).  ``None`` in a corner leaves that axis whole.  The part of the box that lies
    outside the image is cut off; a box entirely outside is an error.
    """
    check_image(image, "crop")
    if (box_index_zyx is None) == (box_world_xyz is None):
        raise MedcadError("crop needs exactly one box: in voxel indices or in world mm")
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise MedcadError(f"crop margin must be zero or more mm, got {margin_mm}")
    shape = image.spatial_shape
    if box_world_xyz is not None:
        ranges = [
            None if r is None else (math.ceil(r[0] - _TOLERANCE), math.floor(r[1] + _TOLERANCE) + 1)
            for r in _index_range_from_world(image, box_world_xyz)
        ]
    else:
        first, second = _two_corners(box_index_zyx, image.ndim, "a voxel crop box")
        if any(v is not None and float(v) != int(v) for v in first + second):
            raise MedcadError(f"a voxel crop box needs whole numbers, got {box_index_zyx}")
        ranges = [None if a is None or b is None else (int(a), int(b)) for a, b in zip(first, second)]
    starts, stops = [], []
    grow = set(spatial_axes(image))
    for axis, (size, spacing, span) in enumerate(zip(shape, image.geometry.spacing_zyx, ranges)):
        start, stop = (0, size) if span is None else span
        if axis in grow and span is not None:
            margin_voxels = math.ceil(margin_mm / spacing - 1e-9)
            start, stop = start - margin_voxels, stop + margin_voxels
        start, stop = max(start, 0), min(stop, size)
        if start >= stop:
            raise MedcadError(f"the crop box lies outside '{image.name}' (array axis {axis}, size {size})")
        starts.append(start)
        stops.append(stop)
    report(progress, 0, 1, "crop")
    array = image.array[tuple(slice(a, b) for a, b in zip(starts, stops))].copy()
    report(progress, 1, 1, "crop")
    return derive(image, array, image.geometry.shifted(starts))


def world_box_around(points_world_xyz: np.ndarray, ndim: int) -> list[list[Optional[float]]]:
    """The world box around points (LPS mm, x, y[, z]); axes the points do not span, or do
    not give (a 2-D drawing over a volume), are left open (None)."""
    points = np.asarray(points_world_xyz, dtype=float)
    if points.ndim != 2 or len(points) == 0 or points.shape[1] > ndim:
        raise MedcadError(f"need points with at most {ndim} coordinates to make a crop box")
    low: list[Optional[float]] = [None] * ndim
    high: list[Optional[float]] = [None] * ndim
    for axis in range(points.shape[1]):
        lo, hi = float(points[:, axis].min()), float(points[:, axis].max())
        if hi - lo > _TOLERANCE:
            low[axis], high[axis] = lo, hi
    if all(v is None for v in low):
        raise MedcadError("the drawn region has no extent")
    return [low, high]


def bounding_box_index(mask: MedicalImage) -> list[list[int]]:
    """[start, stop) voxel indices (array order) around a label image's non-zero voxels: the
    exact crop box for images on the same grid."""
    labelled = np.asarray(mask.array) != 0
    if mask.rgb:
        labelled = labelled.any(axis=-1)
    start, stop = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(labelled.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            raise MedcadError(f"'{mask.name}' has no labelled voxels to crop to")
        start.append(int(hits[0]))
        stop.append(int(hits[-1]) + 1)
    return [start, stop]


def bounding_box_world(mask: MedicalImage) -> list[list[float]]:
    """World box (LPS mm) around the centres of a label image's non-zero voxels, for images on
    another grid (on an oblique grid the box is axis-aligned in the world, so a little larger)."""
    start, stop = bounding_box_index(mask)
    corners = np.array(list(itertools.product(*zip(start, np.subtract(stop, 1)))), dtype=float)
    world = mask.geometry.index_to_world(corners)
    return [[float(v) for v in world.min(axis=0)], [float(v) for v in world.max(axis=0)]]
