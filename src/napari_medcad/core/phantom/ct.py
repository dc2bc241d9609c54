"""A seeded synthetic chest CT with its ground truth: the training and benchmark case."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..image import Geometry, MedicalImage
from .acquisition import acquire, field_of_view, thick_slices
from .config import PhantomConfig
from .grid import VoxelGrid
from .nodules import PhantomNodule
from .patient import Patient, draw_patient, random_stream
from .render import render_chest
from .vessels import VesselTree


@dataclass
class PhantomCase:
    """A CT (int16 HU) and, on the same geometry, its labels and masks, plus the nodule table."""

    image: MedicalImage
    labels: MedicalImage  # uint16, nodule i is label i (1..N), 0 elsewhere
    lung_mask: MedicalImage  # uint8
    vessel_mask: MedicalImage  # uint8, the pulmonary vessel trees
    nodules: list[PhantomNodule]
    vessel_trees: list[VesselTree]  # pulmonary arteries and veins as graphs in world mm
    seed: int
    config: PhantomConfig

    @property
    def name(self) -> str:
        return self.image.name


def scanner_geometry(config: PhantomConfig) -> Geometry:
    """Axis-aligned LPS geometry centred in-plane on the scanner's axis, slice 0 most inferior."""
    nz, ny, nx = config.shape_zyx
    spacing_x, spacing_y, _ = config.spacing_xyz
    origin = (-0.5 * (nx - 1) * spacing_x, -0.5 * (ny - 1) * spacing_y, config.first_slice_z_mm)
    return Geometry(config.spacing_xyz, origin, tuple(np.eye(3).ravel()))


def scanned_box(config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    """World corners (low, high) of the voxel centres the CT of ``config`` holds."""
    corners = scanner_geometry(config).index_to_world(np.array([[0, 0, 0], np.asarray(config.shape_zyx) - 1], float))
    return corners.min(axis=0), corners.max(axis=0)


def draw_scanned_patient(seed: int, config: PhantomConfig) -> Patient:
    """The patient of ``seed``, its nodules kept whole inside the region the CT of ``config`` scans."""
    return draw_patient(seed, config, nodule_box_xyz=scanned_box(config))


def _nodule_labels(patient: Patient, masks, grid: VoxelGrid, group: int, inside_fov: np.ndarray | None):
    """Instance labels on the scanner grid and the nodules that have them, numbered from 1.

    With a circular field of view (``inside_fov``, in-plane), a nodule whose centre the circle
    leaves out is not in the truth (the image shows padding there, not a nodule) and label
    voxels outside the circle are cleared: a detector must not be taught to fire on padding."""
    labels = np.zeros(grid.shape_zyx, np.uint16)
    records = []
    for model, placed in zip(patient.nodules, masks):
        if placed is None:
            continue
        if inside_fov is not None:
            _, y, x = np.rint(grid.geometry.world_to_index(model.centre_xyz)).astype(int)
            if not (0 <= y < inside_fov.shape[0] and 0 <= x < inside_fov.shape[1] and inside_fov[y, x]):
                continue
        box, body = placed
        occupancy = thick_slices(body.astype(np.float32), group)
        box = (slice(box[0].start // group, box[0].stop // group),) + box[1:]
        inside = occupancy >= 0.5
        if not inside.any():  # smaller than a voxel: keep the voxel it fills most
            inside = occupancy == occupancy.max()
        identifier = len(records) + 1
        labels[box][inside] = identifier
        centre = model.centre_xyz
        if inside_fov is not None:
            labels[box][..., ~inside_fov[box[1:]]] = 0
        records.append(PhantomNodule(
            id=identifier,
            centre_world_mm=tuple(float(c) for c in centre),
            centre_index_zyx=tuple(float(c) for c in grid.geometry.world_to_index(centre)),
            diameter_mm=float(model.diameter_mm),
            kind=model.kind,
            attached=model.attached,
            spiculated=model.spiculated,
            solid_diameter_mm=float(model.solid_diameter_mm),
        ))
    return labels, records


def generate_chest_ct(seed: int, config: PhantomConfig | None = None) -> PhantomCase:
    """A synthetic chest CT; the same ``seed`` and ``config`` give bit-identical output."""
    config = config or PhantomConfig()
    geometry = scanner_geometry(config)
    grid = VoxelGrid(config.shape_zyx, geometry)
    group = config.slice_supersampling
    patient = draw_scanned_patient(seed, config)
    rendered = render_chest(patient, grid.supersampled_in_z(group), group)
    hu = acquire(thick_slices(rendered.hu, group), grid, config, random_stream(seed, "scanner"))
    lungs = (thick_slices(rendered.lungs.view(np.uint8), group) >= 0.5).astype(np.uint8)
    vessels = (thick_slices(rendered.vessels.view(np.uint8), group) >= 0.5).astype(np.uint8)
    inside_fov = field_of_view(grid) if config.fov_padding_hu is not None else None
    labels, nodules = _nodule_labels(patient, rendered.nodule_masks, grid, group, inside_fov)
    name = f"phantom_s{seed}"
    metadata = {
        "source": "napari-medcad synthetic chest CT phantom",
        "phantom_seed": int(seed),
        "contrast_enhanced": config.contrast_enhanced,
        "slice_thickness_mm": config.spacing_xyz[2],
    }

    def image(array, suffix, modality):
        return MedicalImage(array, geometry, modality=modality, name=name + suffix, metadata=dict(metadata))

    return PhantomCase(
        image=image(hu, "", "CT"),
        labels=image(labels, "_label", "SEG"),
        lung_mask=image(lungs, "_lungs", "SEG"),
        vessel_mask=image(vessels, "_vessels", "SEG"),
        nodules=nodules,
        vessel_trees=list(patient.arteries + patient.veins),
        seed=int(seed),
        config=config,
    )
