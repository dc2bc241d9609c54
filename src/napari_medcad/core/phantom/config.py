"""What a phantom case looks like: scanner grid, nodule mix and acquisition, all in one value.

A config plus a seed fixes a case bit for bit.  The patient (anatomy, vessels, nodules) depends
only on the seed and the anatomy/nodule fields, never on the grid, so the same patient can be
"scanned" at several spacings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..errors import MedcadError

#: a training recipe's nodule placement before 2026-11-25, which let a nodule's centre fall inside a
#: great vessel (5 of the 232 recipe and benchmark phantoms): the built-in models' recipes keep it so
#: that their shipped weights reproduce bit for bit (see ``recipe_placement``)
PLACEMENT_BEFORE_2026_11_25 = {"nodules_clear_of_great_vessels": False}


def recipe_placement(recipe) -> dict:
    """The nodule-placement field of the phantom config a training recipe asks for (the corrected
    placement unless the recipe keeps :data:`PLACEMENT_BEFORE_2026_11_25`)."""
    return {"nodules_clear_of_great_vessels": bool(recipe.get("nodules_clear_of_great_vessels", True))}


@dataclass(frozen=True)
class PhantomConfig:
    """Scanner grid, patient, nodule and acquisition settings of a synthetic chest CT.

    The default field of view (256 x 1.4 mm = 358 mm) holds a whole adult chest; a grid smaller
    than the patient crops the body, as a targeted reconstruction does.
    """

    shape_zyx: tuple[int, int, int] = (96, 256, 256)
    spacing_xyz: tuple[float, float, float] = (1.4, 1.4, 3.0)
    first_slice_z_mm: float = -300.0  # LPS z of slice 0 (the most inferior one)
    patient_size: tuple[float, float] = (0.92, 1.08)  # scale range of the body against an average adult
    n_nodules: tuple[int, int] = (1, 4)  # inclusive range
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0)
    ground_glass_fraction: float = 0.15
    part_solid_fraction: float = 0.10
    juxta_vascular_fraction: float = 0.25
    juxta_pleural_fraction: float = 0.20
    spiculated_fraction: float = 0.20  # of solid and part-solid nodules
    contrast_enhanced: bool = False
    noise_sigma_hu: float = 18.0  # standard deviation of scanner noise in water
    noise_grain_mm: float = 0.7  # in-plane correlation length of the noise
    blur_sigma_mm: float = 0.45  # in-plane blur of the reconstruction kernel
    hu_offset: float = 0.0  # scanner calibration error added to every voxel
    hu_scale: float = 1.0
    fov_padding_hu: int | None = -1024  # value outside the circular field of view; None: no circle
    # no nodule centred inside a great vessel or the trachea (False: PLACEMENT_BEFORE_2026_11_25)
    nodules_clear_of_great_vessels: bool = True

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, (list, np.ndarray)):
                object.__setattr__(self, item.name, tuple(value))
        if len(self.shape_zyx) != 3 or min(self.shape_zyx) < 4:
            raise MedcadError(f"a phantom needs at least 4 voxels along each axis, got {self.shape_zyx}")
        object.__setattr__(self, "shape_zyx", tuple(int(n) for n in self.shape_zyx))
        if len(self.spacing_xyz) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing_xyz):
            raise MedcadError(f"voxel spacing must be three positive numbers, got {self.spacing_xyz}")
        object.__setattr__(self, "spacing_xyz", tuple(float(s) for s in self.spacing_xyz))
        low, high = self.n_nodules
        if not 0 <= low <= high <= 40:
            raise MedcadError(f"the number of nodules must be a range within 0..40, got {self.n_nodules}")
        low, high = self.nodule_diameter_mm
        if not 1.0 <= low <= high <= 60.0:
            raise MedcadError(f"nodule diameters must be a range within 1..60 mm, got {self.nodule_diameter_mm}")
        if not 0.5 <= self.patient_size[0] <= self.patient_size[1] <= 1.5:
            raise MedcadError(f"patient size must be a range within 0.5..1.5, got {self.patient_size}")
        for name in ("ground_glass_fraction", "part_solid_fraction", "juxta_vascular_fraction",
                     "juxta_pleural_fraction", "spiculated_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise MedcadError(f"{name.replace('_', ' ')} must lie between 0 and 1")
        if self.ground_glass_fraction + self.part_solid_fraction > 1.0 + 1e-9:
            raise MedcadError("ground-glass and part-solid fractions add up to more than 1")
        if self.juxta_vascular_fraction + self.juxta_pleural_fraction > 1.0 + 1e-9:
            raise MedcadError("juxta-vascular and juxta-pleural fractions add up to more than 1")
        if self.noise_sigma_hu < 0 or self.blur_sigma_mm < 0 or self.noise_grain_mm <= 0:
            raise MedcadError("noise and blur must not be negative")
        if not 0.5 <= self.hu_scale <= 2.0:
            raise MedcadError(f"HU scale must lie within 0.5..2, got {self.hu_scale}")

    @property
    def slice_supersampling(self) -> int:
        """Thin sub-slices averaged into one slice, so thick slices show partial volume."""
        return max(1, math.ceil(self.spacing_xyz[2] / 1.5 - 1e-6))

    @classmethod
    def random_for_training(cls, rng: np.random.Generator | int, max_in_plane: int = 512,
                            max_slices: int = 320, pixel_mm: tuple[float, float] = (0.5, 1.0)) -> "PhantomConfig":
        """A widely augmented config: scanner grid, noise, HU calibration, contrast and nodule mix.

        The field of view covers the body (a larger patient or finer pixels than ``max_in_plane``
        allows give a cropped, targeted reconstruction); the scan covers the lungs unless that needs
        more than ``max_slices`` slices.  ``pixel_mm``: the range of in-plane pixel sizes.
        """
        rng = np.random.default_rng(rng)
        pixel_mm = float(rng.uniform(*pixel_mm))
        slice_mm = float(rng.uniform(1.0, 5.0))
        field_mm = float(rng.uniform(320.0, 440.0))
        length_mm = float(rng.uniform(270.0, 350.0))
        in_plane = int(min(max_in_plane, math.ceil(field_mm / pixel_mm)))
        n_slices = int(min(max_slices, max(8, round(length_mm / slice_mm))))
        ground_glass = float(rng.uniform(0.0, 0.35))
        juxta_vascular = float(rng.uniform(0.1, 0.5))
        return cls(
            shape_zyx=(n_slices, in_plane, in_plane),
            spacing_xyz=(pixel_mm, pixel_mm, slice_mm),
            first_slice_z_mm=float(rng.uniform(-500.0, -100.0)),
            patient_size=(0.85, 1.15),
            n_nodules=(0, int(rng.integers(1, 7))),
            nodule_diameter_mm=(3.0, 30.0),
            ground_glass_fraction=ground_glass,
            part_solid_fraction=float(rng.uniform(0.0, min(0.3, 1.0 - ground_glass))),
            juxta_vascular_fraction=juxta_vascular,
            juxta_pleural_fraction=float(rng.uniform(0.1, min(0.4, 1.0 - juxta_vascular))),
            spiculated_fraction=float(rng.uniform(0.0, 0.4)),
            contrast_enhanced=bool(rng.random() < 0.4),
            noise_sigma_hu=float(math.exp(rng.uniform(math.log(5.0), math.log(60.0)))),
            noise_grain_mm=float(rng.uniform(0.5, 1.2)),
            blur_sigma_mm=float(rng.uniform(0.2, 1.0)),
            hu_offset=float(rng.uniform(-25.0, 25.0)),
            hu_scale=float(rng.uniform(0.96, 1.04)),
            fov_padding_hu=[-1024, -2048, -3024, None][int(rng.integers(4))],
        )
