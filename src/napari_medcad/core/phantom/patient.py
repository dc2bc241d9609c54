"""One synthetic patient, drawn from a seed: anatomy, tissues, central tubes, lung trees, nodules.

The patient lives in world millimetres and knows nothing of voxels, so a CT and a radiograph of
the same seed and config show the same body, and the same patient can be scanned at any spacing.
Independent random streams feed each part, so asking for more nodules does not move the vessels.
The patient is centred on the scanned range, and nodules are kept inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import ChestAnatomy, draw_anatomy
from .config import PhantomConfig
from .mediastinum import CentralTubes, central_tubes
from .nodules import NoduleModel, draw_nodules
from .texture import SmoothField
from .tissues import TissueHU, draw_tissues
from .tubes import Tubes
from .vessels import VesselTree, grow_bronchoarterial_tree, grow_vessel_tree, with_twigs


@dataclass(frozen=True)
class Patient:
    anatomy: ChestAnatomy
    tissues: TissueHU
    lung_texture: SmoothField
    central: CentralTubes
    arteries: tuple[VesselTree, ...]
    veins: tuple[VesselTree, ...]
    central_arteries: Tubes  # pulmonary trunk and the arteries from its bifurcation to each lung's tree
    airways: Tubes  # outer walls of the bronchi inside the lungs
    nodules: tuple[NoduleModel, ...]


STREAMS = ("anatomy", "vessels", "nodules", "scanner", "radiograph")


def random_stream(seed: int, name: str) -> np.random.Generator:
    """The independent random stream ``name`` of a case (child ``STREAMS.index(name)`` of the seed)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(STREAMS.index(name),)))


def scan_centre_z(config: PhantomConfig) -> float:
    """The patient is centred on the scanned range."""
    return config.first_slice_z_mm + 0.5 * (config.shape_zyx[0] - 1) * config.spacing_xyz[2]


def great_vessels(central, central_arteries: Tubes) -> Tubes:
    """The tubes that run through the analytic lung near the hilum and no nodule may be centred in:
    aorta, venae cavae, oesophagus, trachea, pulmonary trunk and central arteries."""
    return Tubes.concatenate([central.aorta, central.systemic_veins, central.oesophagus, central.trachea,
                              central_arteries])


def draw_patient(seed: int, config: PhantomConfig, nodule_box_xyz=None) -> Patient:
    """The patient of ``seed``; ``nodule_box_xyz`` (low, high world corners) keeps nodules inside it."""
    anatomy_rng, vessel_rng, nodule_rng = (random_stream(seed, name) for name in ("anatomy", "vessels", "nodules"))
    anatomy = draw_anatomy(anatomy_rng, config.patient_size, scan_centre_z(config))
    tissues = draw_tissues(anatomy_rng, config.contrast_enhanced)
    reach = np.array([anatomy.half_width, anatomy.half_depth, anatomy.lung_height]) + 40.0
    centre = np.asarray(anatomy.centre_xyz)
    lung_texture = SmoothField(anatomy_rng, centre - reach, centre + reach, float(anatomy_rng.uniform(10, 18)))
    central = central_tubes(anatomy)
    size = anatomy.size
    arteries, veins, airways = [], [], []
    pulmonary_arteries = [central.pulmonary_trunk]
    for side, hilum, waypoint, vein_root in zip((-1, 1), central.hila_xyz, central.pulmonary_artery_waypoints,
                                                central.vein_roots):
        artery, bronchi = grow_bronchoarterial_tree(vessel_rng, anatomy, hilum, waypoint, side,
                                                    float(vessel_rng.uniform(7, 9)) * size, 3000)
        vein = with_twigs(vessel_rng, anatomy, grow_vessel_tree(
            vessel_rng, anatomy, vein_root, side, float(vessel_rng.uniform(6, 8)) * size, 2600))
        pulmonary_arteries.append(Tubes.polyline(
            [central.pulmonary_bifurcation_xyz, waypoint, artery.position_xyz[0]], [10.5 * size, 10 * size, artery.radius[0]]))
        arteries.append(artery)
        veins.append(vein)
        airways.append(bronchi)
    central_arteries = Tubes.concatenate(pulmonary_arteries)
    nodules = draw_nodules(nodule_rng, config, anatomy, arteries + veins, nodule_box_xyz,
                           great_vessels(central, central_arteries) if config.nodules_clear_of_great_vessels else None)
    return Patient(anatomy, tissues, lung_texture, central, tuple(arteries), tuple(veins),
                   central_arteries, Tubes.concatenate(airways), tuple(nodules))
