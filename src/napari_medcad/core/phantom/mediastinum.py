"""The central tubes: trachea and main bronchi, aorta, pulmonary trunk, caval veins, oesophagus,
clavicles, and the hila where the lung trees start.

Positions are laid out relative to the spine, the heart and the carina of the patient's
anatomy, so they move with them from patient to patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import ChestAnatomy
from .tubes import Tubes


@dataclass(frozen=True)
class CentralTubes:
    """Central structures in world mm; pairs are (right, left).

    The lung trees start at the hila: bronchi at the ends of the main bronchi, veins at the left
    atrium, and each pulmonary artery runs from the trunk's bifurcation through a waypoint to
    its tree.
    """

    trachea: Tubes  # outer wall of the trachea and main bronchi
    hila_xyz: tuple[np.ndarray, np.ndarray]
    aorta: Tubes
    pulmonary_trunk: Tubes
    pulmonary_bifurcation_xyz: np.ndarray
    pulmonary_artery_waypoints: tuple[np.ndarray, np.ndarray]
    systemic_veins: Tubes
    oesophagus: Tubes
    clavicles: Tubes
    vein_roots: tuple[np.ndarray, np.ndarray]


def central_tubes(anatomy: ChestAnatomy) -> CentralTubes:
    s = anatomy.size
    apex, carina_w, arch = anatomy.apex_w, anatomy.carina_w, anatomy.arch_w
    spine_back = float(anatomy.vertebra_v(carina_w)) - anatomy.vertebra_half_depth
    trachea_v = spine_back - 22 * s
    oesophagus_v = spine_back - 8 * s
    hu, hv, hw = anatomy.heart_centre
    heart_top = hw + 0.6 * anatomy.heart_axes[2]
    world = anatomy.to_world

    def line(points, radii):
        return Tubes.polyline(world(np.asarray(points, dtype=float)), np.asarray(radii, dtype=float) * s)

    carina = np.array([0.0, trachea_v + 4 * s, carina_w])
    trachea = line([[-2 * s, trachea_v - 8 * s, apex + 130 * s], [0, trachea_v, carina_w + 10 * s], carina], 9.0)
    right_hilum = np.array([-30 * s, trachea_v + 6 * s, carina_w - 28 * s])
    left_hilum = np.array([42 * s, trachea_v + 12 * s, carina_w - 40 * s])
    bronchi = Tubes.concatenate([line([carina, right_hilum], 7.5), line([carina, left_hilum], 6.5)])

    def descending_v(w):
        return float(anatomy.vertebra_v(w)) - anatomy.vertebra_half_depth + 6 * s

    ascending_root = np.array([hu - 14 * s, hv - 4 * s, heart_top - 10 * s])
    aorta = Tubes.concatenate([
        line([ascending_root, [4 * s, hv - 10 * s, arch - 6 * s], [8 * s, trachea_v - 12 * s, arch + 8 * s],
              [22 * s, trachea_v + 8 * s, arch + 4 * s], [24 * s, descending_v(arch - 12 * s), arch - 12 * s],
              [20 * s, descending_v(anatomy.base_w), anatomy.base_w],
              [8 * s, descending_v(anatomy.base_w - 80 * s) - 8 * s, anatomy.base_w - 80 * s]],
             [14, 13, 12.5, 12, 11.5, 11, 10.5]),
        line([[6 * s, trachea_v - 14 * s, arch + 8 * s], [-14 * s, trachea_v - 18 * s, apex + 60 * s]], 6.0),
        line([[14 * s, trachea_v - 8 * s, arch + 10 * s], [20 * s, trachea_v - 8 * s, apex + 70 * s]], 4.0),
        line([[22 * s, trachea_v + 4 * s, arch + 8 * s], [32 * s, trachea_v + 4 * s, apex + 15 * s],
              [75 * s, trachea_v, apex + 25 * s]], 5.0),
    ])
    bifurcation = np.array([14 * s, trachea_v - 16 * s, carina_w - 12 * s])
    trunk = line([[hu - 4 * s, hv - 30 * s, heart_top - 15 * s], bifurcation], 14.0)
    waypoints = (np.array([-20 * s, trachea_v - 10 * s, carina_w - 20 * s]),
                 np.array([36 * s, trachea_v - 2 * s, carina_w - 14 * s]))
    svc_top = np.array([-24 * s, trachea_v - 18 * s, arch + 25 * s])
    veins = Tubes.concatenate([
        line([[-26 * s, trachea_v - 20 * s, apex + 70 * s], svc_top, [-28 * s, hv - 10 * s, heart_top - 5 * s]], 10.0),
        line([[60 * s, trachea_v - 30 * s, apex + 12 * s], [20 * s, trachea_v - 34 * s, arch + 26 * s], svc_top], 6.0),
    ])
    left_atrium = anatomy.from_heart(-0.3, 0.6, 0.35)
    vein_roots = (left_atrium + np.array([-38 * s, 4 * s, -6 * s]), left_atrium + np.array([38 * s, 6 * s, -4 * s]))
    front = float(anatomy.cavity_depths(apex - 15 * s)[0])
    clavicles = Tubes.concatenate([
        line([[side * 14 * s, -front - 6 * s, apex - 16 * s], [side * 70 * s, -front - 4 * s, apex + 2 * s],
              [side * 128 * s, -0.35 * front, apex + 22 * s]], 7.0) for side in (-1.0, 1.0)
    ])
    oesophagus = line([[2 * s, oesophagus_v, apex + 130 * s], [6 * s, oesophagus_v, carina_w],
                       [14 * s, descending_v(anatomy.base_w + 40 * s) - 22 * s, anatomy.base_w + 40 * s],
                       [40 * s, descending_v(anatomy.base_w - 20 * s) - 50 * s, anatomy.base_w - 20 * s]], 7.5)
    return CentralTubes(
        trachea=Tubes.concatenate([trachea, bronchi]),
        hila_xyz=(world(right_hilum), world(left_hilum)),
        aorta=aorta,
        pulmonary_trunk=trunk,
        pulmonary_bifurcation_xyz=world(bifurcation),
        pulmonary_artery_waypoints=tuple(world(point) for point in waypoints),
        systemic_veins=veins,
        oesophagus=oesophagus,
        clavicles=clavicles,
        vein_roots=tuple(world(root) for root in vein_roots),
    )
