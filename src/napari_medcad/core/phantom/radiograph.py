"""A frontal chest radiograph of the same patient: a digitally reconstructed radiograph (DRR).

HU become linear attenuation (bone counts extra, as it does at radiographic energies), which is
integrated along the anterior-posterior axis (a parallel beam; real magnification is ignored).
The transmitted intensity gets scatter and quantum noise, is log-transformed like a detector
reading, and is then processed the way digital radiography systems do (latitude compression and
edge enhancement, with random strengths), so bones and mediastinum come out bright and lungs
dark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..image import Geometry, MedicalImage
from .config import PhantomConfig
from .grid import VoxelGrid
from .ct import draw_scanned_patient
from .patient import random_stream
from .render import render_chest

_WATER_PER_MM = 0.02  # linear attenuation of water at an effective 60 keV
_RAY_STEP_MM = 1.5  # sampling along the beam


@dataclass(frozen=True)
class ProjectedNodule:
    """A nodule as seen on the radiograph; ``centre_world_mm`` is (LPS x, LPS z)."""

    id: int
    centre_world_mm: tuple[float, float]
    centre_index_yx: tuple[float, float]
    diameter_mm: float
    kind: str
    attached: str


@dataclass
class PhantomRadiograph:
    image: MedicalImage  # uint16 (12 bit), modality DX, rows run from head to feet
    lung_mask: MedicalImage  # uint8: 1 where the beam crossed a lung
    nodules: list[ProjectedNodule]
    seed: int
    config: PhantomConfig

    @property
    def has_nodule(self) -> bool:
        return bool(self.nodules)


def _path_length(hu: np.ndarray) -> np.ndarray:
    """Attenuation line integrals along axis 1 (y), from HU; dense bone gains up to 40%
    (the photoelectric effect at radiographic energies).  Slice by slice, to stay in cache."""
    path = np.empty((hu.shape[0], hu.shape[2]))
    for k, plane in enumerate(hu):
        bone = np.clip(plane, 100.0, 500.0)
        bone -= np.float32(100.0)
        bone *= np.float32(0.4 / 400.0)
        bone += 1
        mu = plane * np.float32(1e-3)
        mu *= bone
        mu += 1
        np.maximum(mu, 0, out=mu)
        path[k] = mu.sum(axis=0, dtype=np.float64)
    return path * (_WATER_PER_MM * _RAY_STEP_MM)


def _display(path: np.ndarray, rng: np.random.Generator, pixel_mm: float, body: np.ndarray) -> np.ndarray:
    """Detector reading and processing: scatter, quantum noise, log, latitude compression, sharpening."""
    from scipy import ndimage

    primary = np.exp(-path)
    signal = primary + 0.12 * ndimage.gaussian_filter(primary, 40.0 / pixel_mm)  # scatter
    signal += rng.standard_normal(signal.shape) * np.sqrt(signal / float(rng.uniform(15000, 50000)))
    reading = ndimage.gaussian_filter(-np.log(np.maximum(signal, 1e-4)), 0.7 / pixel_mm)  # detector blur
    background = ndimage.gaussian_filter(reading, 30.0 / pixel_mm)
    compressed = 0.6 * background + 1.5 * (reading - background)  # tame the large-scale range
    low, high = np.percentile(compressed[body], [1.0, 99.7]) if body.any() else (0.0, 1.0)
    scaled = np.clip((compressed - low) / max(high - low, 1e-6), -0.2, 1.2)
    scaled += float(rng.uniform(0.3, 0.7)) * (scaled - ndimage.gaussian_filter(scaled, 4.0 / pixel_mm))
    scaled = np.clip(scaled, 0, 1) ** float(rng.uniform(1.0, 1.4))
    return np.rint(scaled * 4095).astype(np.uint16)


def chest_radiograph(seed: int, config: PhantomConfig | None = None, pixel_mm: float = 0.8) -> PhantomRadiograph:
    """A frontal (PA) chest radiograph of the patient that ``generate_chest_ct(seed, config)`` scans,
    with the same nodules; use ``n_nodules=(0, 0)`` for normal images.
    """
    config = config or PhantomConfig()
    patient = draw_scanned_patient(seed, config)
    anatomy = patient.anatomy
    centre_x, centre_y, centre_z = anatomy.centre_xyz
    half_x = 1.05 * anatomy.half_width + 25.0
    low = np.array([centre_x - half_x, centre_y - anatomy.half_depth - 15.0, centre_z + anatomy.base_w - 70.0])
    high = np.array([centre_x + half_x, centre_y + anatomy.half_depth + 3.0, centre_z + anatomy.apex_w + 60.0])
    spacing = np.array([pixel_mm, _RAY_STEP_MM, pixel_mm])
    shape_xyz = np.floor((high - low) / spacing).astype(int) + 1
    grid = VoxelGrid(tuple(int(n) for n in shape_xyz[::-1]), Geometry(tuple(spacing), tuple(low), tuple(np.eye(3).ravel())))
    rendered = render_chest(patient, grid)
    path = _path_length(rendered.hu)
    body = path > 0.5 * np.median(path)
    pixels = _display(path, random_stream(seed, "radiograph"), pixel_mm, body)[::-1]  # head at the top
    lungs = rendered.lungs.any(axis=1)[::-1].astype(np.uint8)
    z_mm, _, x_mm = grid.axes_mm
    geometry = Geometry((pixel_mm, pixel_mm), (float(x_mm[0]), float(z_mm[-1])), (1.0, 0.0, 0.0, -1.0))
    metadata = {
        "source": "napari-medcad synthetic chest radiograph phantom",
        "phantom_seed": int(seed),
        "view": "PA",
        "world_axes": "LPS x (patient left) and LPS z (head); rows run towards the feet",
    }
    name = f"phantom_cxr_s{seed}"
    nodules = []
    for index, model in enumerate(patient.nodules, start=1):
        centre = (float(model.centre_xyz[0]), float(model.centre_xyz[2]))
        nodules.append(ProjectedNodule(
            id=index,
            centre_world_mm=centre,
            centre_index_yx=tuple(float(c) for c in geometry.world_to_index(centre)),
            diameter_mm=float(model.diameter_mm),
            kind=model.kind,
            attached=model.attached,
        ))
    return PhantomRadiograph(
        image=MedicalImage(pixels, geometry, modality="DX", name=name, metadata=metadata),
        lung_mask=MedicalImage(lungs, geometry, modality="SEG", name=name + "_lungs", metadata=dict(metadata)),
        nodules=nodules,
        seed=int(seed),
        config=config,
    )
