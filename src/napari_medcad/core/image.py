"""MedicalImage: an array with its patient-space geometry.

This module is the only place that converts between voxel indices and world positions.

Conventions (the same as ITK, DICOM and LUNA16):

* ``array`` is NumPy in (z, y, x) order (or (y, x) for 2D; (y, x, c) for an RGB picture),
  exactly as ``SimpleITK.GetArrayFromImage`` returns it.
* Geometry is stored in ITK's (x, y, z) order: ``spacing_xyz``, ``origin_xyz`` and a row-major
  ``direction`` whose *columns* are the world directions of the index axes.
* A world position is in patient millimetres, LPS (+x towards the patient's left, +y posterior,
  +z superior):  ``world_xyz = origin_xyz + direction @ (spacing_xyz * index_xyz)``.
* napari has no axis names, so its world axes follow the array: napari world = LPS in
  (z, y, x) order.  ``Geometry.affine_zyx`` maps array indices to that space.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import MedcadError


def _as_float_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def lps_to_napari_world(world_xyz: np.ndarray | Sequence[float]) -> np.ndarray:
    """LPS (x, y, z) mm -> napari world coordinates, which hold the same mm in (z, y, x) order."""
    return np.asarray(world_xyz, dtype=float)[..., ::-1]


def napari_world_to_lps(world_zyx: np.ndarray | Sequence[float]) -> np.ndarray:
    """napari world coordinates (z, y, x) -> LPS (x, y, z) mm."""
    return np.asarray(world_zyx, dtype=float)[..., ::-1]


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels lie in patient space (ITK semantics, LPS millimetres)."""

    spacing_xyz: tuple[float, ...]
    origin_xyz: tuple[float, ...]
    direction: tuple[float, ...]  # row-major ndim x ndim, as SimpleITK's GetDirection()

    def __post_init__(self):
        spacing = _as_float_tuple(self.spacing_xyz)
        origin = _as_float_tuple(self.origin_xyz)
        direction = _as_float_tuple(self.direction)
        ndim = len(spacing)
        if ndim not in (2, 3) or len(origin) != ndim or len(direction) != ndim * ndim:
            raise MedcadError(
                f"inconsistent geometry: {ndim} spacings, {len(origin)} origin values, "
                f"{len(direction)} direction values"
            )
        if not all(math.isfinite(v) for v in spacing + origin + direction):
            raise MedcadError("the image geometry holds non-finite numbers")
        if min(spacing) <= 0:
            raise MedcadError(f"voxel spacing must be positive, got {spacing}")
        if abs(np.linalg.det(np.reshape(direction, (ndim, ndim)))) < 1e-6:
            raise MedcadError("the direction matrix is singular")
        object.__setattr__(self, "spacing_xyz", spacing)
        object.__setattr__(self, "origin_xyz", origin)
        object.__setattr__(self, "direction", direction)

    # construction ---------------------------------------------------------------------------
    @classmethod
    def identity(cls, ndim: int, spacing_xyz: Sequence[float] | None = None) -> "Geometry":
        spacing = tuple(spacing_xyz) if spacing_xyz is not None else (1.0,) * ndim
        return cls(spacing, (0.0,) * ndim, tuple(np.eye(ndim).ravel()))

    @classmethod
    def from_sitk(cls, image) -> "Geometry":
        return cls(image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @classmethod
    def from_affine_zyx(cls, affine_zyx: np.ndarray) -> "Geometry":
        """Inverse of :attr:`affine_zyx`: recover spacing, origin and direction."""
        affine_zyx = np.asarray(affine_zyx, dtype=float)
        ndim = affine_zyx.shape[0] - 1
        linear_xyz = affine_zyx[:ndim, :ndim][::-1, ::-1]
        origin_xyz = affine_zyx[:ndim, ndim][::-1]
        spacing_xyz = np.linalg.norm(linear_xyz, axis=0)
        if np.any(spacing_xyz <= 0):
            raise MedcadError("the layer transform collapses an axis")
        direction = linear_xyz / spacing_xyz
        return cls(tuple(spacing_xyz), tuple(origin_xyz), tuple(direction.ravel()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Geometry":
        return cls(data["spacing_xyz"], data["origin_xyz"], data["direction"])

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "spacing_xyz": list(self.spacing_xyz),
            "origin_xyz": list(self.origin_xyz),
            "direction": list(self.direction),
        }

    def apply_to_sitk(self, image) -> None:
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)

    # matrices -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.spacing_xyz)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.reshape(self.direction, (self.ndim, self.ndim))

    @property
    def affine_xyz(self) -> np.ndarray:
        """Homogeneous matrix: index (x, y, z, 1) -> LPS world (x, y, z, 1)."""
        n = self.ndim
        affine = np.eye(n + 1)
        affine[:n, :n] = self.direction_matrix * np.asarray(self.spacing_xyz)[None, :]
        affine[:n, n] = self.origin_xyz
        return affine

    @property
    def affine_zyx(self) -> np.ndarray:
        """Homogeneous matrix: array index (z, y, x, 1) -> napari world (z, y, x, 1) in LPS mm."""
        n = self.ndim
        flip = np.eye(n + 1)
        flip[:n, :n] = np.eye(n)[::-1]
        return flip @ self.affine_xyz @ flip

    @property
    def is_axis_aligned(self) -> bool:
        """True when index axes point along +x, +y, +z (napari needs only scale and translate)."""
        return bool(np.allclose(self.direction_matrix, np.eye(self.ndim), atol=1e-9))

    # conversions ----------------------------------------------------------------------------
    def index_to_world(self, index_zyx: np.ndarray | Sequence[float]) -> np.ndarray:
        """Array indices (..., ndim) in (z, y, x) order -> LPS world mm (..., ndim) in (x, y, z)."""
        index_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        linear = self.direction_matrix * np.asarray(self.spacing_xyz)[None, :]
        return index_xyz @ linear.T + np.asarray(self.origin_xyz)

    def world_to_index(self, world_xyz: np.ndarray | Sequence[float]) -> np.ndarray:
        """LPS world mm (..., ndim) in (x, y, z) -> continuous array indices in (z, y, x) order."""
        linear = self.direction_matrix * np.asarray(self.spacing_xyz)[None, :]
        offset = np.asarray(world_xyz, dtype=float) - np.asarray(self.origin_xyz)
        index_xyz = offset @ np.linalg.inv(linear).T
        return index_xyz[..., ::-1]

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        return self.spacing_xyz[::-1]

    def napari_transform(self) -> dict[str, Any]:
        """Layer keyword arguments that make napari's world equal LPS mm in (z, y, x) order."""
        units = ("mm",) * self.ndim
        if self.is_axis_aligned:
            return {"scale": self.spacing_zyx, "translate": self.origin_xyz[::-1], "units": units}
        # napari applies `affine` after scale/translate: world = A (scale * index)
        affine = self.affine_zyx.copy()
        affine[: self.ndim, : self.ndim] /= np.asarray(self.spacing_zyx)[None, :]
        return {"scale": self.spacing_zyx, "affine": affine, "units": units}

    # derived geometries ---------------------------------------------------------------------
    def shifted(self, start_index_zyx: Sequence[float]) -> "Geometry":
        """The geometry of a crop whose first voxel is ``start_index_zyx`` of this grid."""
        new_origin = self.index_to_world(np.asarray(start_index_zyx, dtype=float))
        return replace(self, origin_xyz=tuple(new_origin))

    def with_spacing(self, spacing_xyz: Sequence[float]) -> "Geometry":
        """Same origin and direction, new spacing (the grid is anchored at the first voxel)."""
        return replace(self, spacing_xyz=tuple(spacing_xyz))


@dataclass
class MedicalImage:
    """An image array plus its geometry, modality and metadata that is safe to show and export.

    ``metadata`` never holds patient-identifying DICOM fields; readers whitelist what goes in.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str = "OT"
    name: str = "image"
    rgb: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        spatial = self.array.ndim - (1 if self.rgb else 0)
        if spatial != self.geometry.ndim:
            raise MedcadError(
                f"array has {spatial} spatial dimensions but geometry has {self.geometry.ndim}"
            )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[: self.geometry.ndim])

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.geometry.ndim

    @property
    def size_xyz(self) -> tuple[int, ...]:
        return self.spatial_shape[::-1]

    def index_to_world(self, index_zyx) -> np.ndarray:
        return self.geometry.index_to_world(index_zyx)

    def world_to_index(self, world_xyz) -> np.ndarray:
        return self.geometry.world_to_index(world_xyz)

    def with_array(self, array: np.ndarray, geometry: Geometry | None = None, **changes) -> "MedicalImage":
        """A new image sharing this one's metadata, with a new array (and maybe geometry)."""
        return replace(self, array=array, geometry=geometry or self.geometry, **changes)

    def content_signature(self) -> str:
        """A short hash of voxels and geometry: ties review files and exports to this image."""
        digest = hashlib.blake2b(digest_size=16)
        array = np.ascontiguousarray(self.array)
        digest.update(str((array.shape, array.dtype.str, self.geometry.to_dict())).encode())
        digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()

    # SimpleITK bridge (imported lazily: keeps `import napari_medcad.core` light) -------------
    def to_sitk(self):
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(self.array, isVector=self.rgb)
        self.geometry.apply_to_sitk(image)
        return image

    @classmethod
    def from_sitk(cls, image, **kwargs) -> "MedicalImage":
        import SimpleITK as sitk

        array = sitk.GetArrayFromImage(image)
        rgb = image.GetNumberOfComponentsPerPixel() > 1
        return cls(array=array, geometry=Geometry.from_sitk(image), rgb=rgb, **kwargs)
