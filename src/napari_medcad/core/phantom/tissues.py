"""Hounsfield units of each tissue for one patient and one contrast phase."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TissueHU:
    air: float
    lung: float
    lung_gravity: float  # extra density of the dependent (posterior) lung
    lung_texture: float  # amplitude of the low-frequency parenchymal texture
    fat: float
    muscle: float
    skin: float
    blood: float  # unenhanced blood, also myocardium
    pulmonary_arteries: float
    pulmonary_veins: float
    aorta: float
    right_heart: float
    left_heart: float
    liver: float
    spleen: float
    bone_cortex: float
    rib_cortex: float
    marrow: float
    rib_marrow: float
    cartilage: float
    disc: float
    spinal_canal: float
    airway_wall: float
    table_shell: float
    table_core: float


def draw_tissues(rng: np.random.Generator, contrast_enhanced: bool) -> TissueHU:
    """Per-patient tissue values; with contrast, a random phase between pulmonary-arterial and venous."""
    blood = float(rng.uniform(32, 52))
    if contrast_enhanced:
        arterial = float(rng.uniform(0, 1))  # 1: pulmonary-arterial phase (CTPA), 0: late venous phase
        enhancement = float(rng.uniform(130, 330))
        pulmonary_arteries = blood + enhancement * (0.55 + 0.45 * arterial)
        systemic = blood + enhancement * (0.9 - 0.35 * arterial)
        right_heart, left_heart, veins = pulmonary_arteries, systemic, systemic
        liver_gain = float(rng.uniform(20, 60))
    else:
        pulmonary_arteries = right_heart = left_heart = veins = systemic = blood
        liver_gain = 0.0
    return TissueHU(
        air=-1000.0,
        lung=float(rng.uniform(-885, -830)),
        lung_gravity=float(rng.uniform(10, 70)),
        lung_texture=float(rng.uniform(8, 22)),
        fat=float(rng.uniform(-115, -85)),
        muscle=float(rng.uniform(38, 58)),
        skin=float(rng.uniform(20, 45)),
        blood=blood,
        pulmonary_arteries=pulmonary_arteries,
        pulmonary_veins=veins,
        aorta=systemic,
        right_heart=right_heart,
        left_heart=left_heart,
        liver=float(rng.uniform(50, 68)) + liver_gain,
        spleen=float(rng.uniform(40, 52)) + liver_gain,
        bone_cortex=float(rng.uniform(900, 1300)),
        rib_cortex=float(rng.uniform(650, 1000)),
        marrow=float(rng.uniform(130, 260)),
        rib_marrow=float(rng.uniform(80, 200)),
        cartilage=float(rng.uniform(90, 160)),
        disc=float(rng.uniform(70, 100)),
        spinal_canal=float(rng.uniform(20, 35)),
        airway_wall=float(rng.uniform(10, 60)),
        table_shell=float(rng.uniform(150, 350)),
        table_core=float(rng.uniform(-950, -850)),
    )
