"""Seeded synthetic chest CT and radiograph phantoms with exact ground truth.

The training and benchmark data source: a random adult chest (body layers, lungs, mediastinum,
heart, ribs, spine, branching pulmonary vessels and bronchi, nodules of several kinds) is drawn
in millimetres from a seed, then scanned on a configurable grid with slice thickness, blur and
noise, or projected into a frontal radiograph.  Same seed and config, same bits.

>>> case = generate_chest_ct(7)                       # doctest: +SKIP
>>> case.image, case.labels, case.nodules[0].centre_world_mm  # doctest: +SKIP
"""

from .cases import write_phantom_cases
from .config import PhantomConfig
from .ct import PhantomCase, generate_chest_ct
from .nodules import PhantomNodule
from .radiograph import PhantomRadiograph, ProjectedNodule, chest_radiograph
from .vessels import VesselTree

__all__ = [
    "PhantomCase",
    "PhantomConfig",
    "PhantomNodule",
    "PhantomRadiograph",
    "ProjectedNodule",
    "VesselTree",
    "chest_radiograph",
    "generate_chest_ct",
    "write_phantom_cases",
]
