"""A patient drawn onto a voxel grid: noise-free HU plus the masks that are its ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .body import draw_body
from .grid import VoxelGrid
from .patient import Patient
from .tubes import Tubes, composite, draw_tubes


@dataclass
class RenderedChest:
    hu: np.ndarray  # float32, noise-free
    lungs: np.ndarray  # bool
    vessels: np.ndarray  # bool: pulmonary vessel trees where they fill at least half a voxel
    nodule_masks: list  # per nodule: (box as zyx slices, bool mask of its body in that box)


def _trees(group) -> Tubes:
    return Tubes.concatenate([tree.tubes() for tree in group])


def _layers(patient: Patient):
    """(tubes, HU, is a lung vessel) in drawing order: later layers cover earlier ones."""
    tissues, central, size = patient.tissues, patient.central, patient.anatomy.size
    return [
        (central.oesophagus, tissues.muscle, False),
        (central.aorta, tissues.aorta, False),
        (central.systemic_veins, tissues.pulmonary_veins, False),
        (patient.central_arteries, tissues.pulmonary_arteries, False),
        (_trees(patient.veins), tissues.pulmonary_veins, True),
        (_trees(patient.arteries), tissues.pulmonary_arteries, True),
        (Tubes.concatenate([central.trachea, patient.airways]), tissues.airway_wall, False),
        (Tubes.concatenate([central.trachea.with_radii(1.0, 2.0 * size), patient.airways.with_radii(0.72)]),
         tissues.air, False),
        (central.clavicles, tissues.bone_cortex, False),
        (central.clavicles.with_radii(0.62), tissues.marrow, False),
    ]


def render_chest(patient: Patient, grid: VoxelGrid, z_group: int = 1) -> RenderedChest:
    """Draw ``patient`` on ``grid``; nodule boxes are aligned to groups of ``z_group`` slices."""
    hu, lungs = draw_body(patient.anatomy, patient.tissues, grid, patient.lung_texture)
    scratch = np.zeros(grid.shape_zyx, np.float32)
    vessels = np.zeros(grid.shape_zyx, bool)
    for tubes, value, is_vessel in _layers(patient):
        index, fraction = draw_tubes(tubes, grid, scratch)
        composite(hu, index, fraction, value)
        if is_vessel:
            vessels.reshape(-1)[index[fraction >= 0.5]] = True
    nodule_masks = []
    for nodule in patient.nodules:
        reach = nodule.reach_mm + 2 * grid.edge_mm
        box = grid.index_box(nodule.centre_xyz - reach, nodule.centre_xyz + reach)
        if box is None:
            nodule_masks.append(None)
            continue
        z = box[0]
        box = (slice(z.start // z_group * z_group, -(-z.stop // z_group) * z_group),) + box[1:]
        nodule_masks.append((box, nodule.draw(grid, hu, scratch, box)))
    return RenderedChest(hu, lungs, vessels, nodule_masks)
