"""Bones drawn into one axial slice: ribs, spine, sternum and shoulder blades.

Each bone is a cortical rim around marrow, because that rim is what makes ribs look like ribs
(and not like vessels or nodules) to a detector.  Ribs are modelled as sloping hoops, so an axial
slice cuts each one obliquely into an arc, as in a real scan.
"""

from __future__ import annotations

import numpy as np

from .anatomy import AxialFrame, ChestAnatomy
from .tissues import TissueHU

# per rib (1..12): |phi| where bone ends and where its costal cartilage ends (0: floating rib)
_RIB_BONE_END = np.array([2.45] * 7 + [2.3, 2.25, 2.2, 1.95, 1.65])
_RIB_CARTILAGE_END = np.array([2.95] * 7 + [2.75, 2.6, 2.45, 0.0, 0.0])


def _window(axis: np.ndarray, low: float, high: float) -> slice:
    """The run of an ascending axis lying in [low, high]."""
    return slice(int(np.searchsorted(axis, low)), int(np.searchsorted(axis, high, side="right")))


def _cortical(out: np.ndarray, where: np.ndarray, rim: np.ndarray, cortex: float, marrow: float):
    """Paint bone: ``rim`` marks the cortical part of ``where``."""
    out[where] = np.where(rim[where], cortex, marrow)


def draw_ribs(out, anatomy: ChestAnatomy, tissues: TissueHU, frame: AxialFrame, w: float, ribs_out, cavity):
    """Ribs and costal cartilages in the band between the chest cavity and the chest-wall muscles."""
    size = anatomy.size
    band = (frame.rho >= cavity) & (frame.rho < ribs_out) & (np.abs(frame.phi) > 0.3)
    if not band.any():
        return
    rho, phi, cav = frame.rho[band], np.abs(frame.phi[band]), cavity[band]
    # ribs fall steeply round the side, and their cartilages rise again towards the sternum
    drop = anatomy.rib_drop * (1 - np.cos(phi)) / 2 * (1 - 0.35 * np.clip(phi - 2.0, 0, 1) ** 2)
    first = anatomy.apex_w - 4.0 * size
    position = (first - drop - w) / anatomy.rib_pitch
    rib = np.rint(position).astype(int)
    valid = (rib >= 0) & (rib < 12)
    rib = np.clip(rib, 0, 11)
    dz = (position - rib) * anatomy.rib_pitch
    dr = rho - (cav + 0.5 * anatomy.rib_band_mm)
    q = np.sqrt((dr / (3.2 * size)) ** 2 + (dz / (6.0 * size)) ** 2)
    bone = valid & (q <= 1) & (phi < _RIB_BONE_END[rib])
    cartilage = valid & (q <= 0.8) & (phi >= _RIB_BONE_END[rib]) & (phi < _RIB_CARTILAGE_END[rib])
    values = out[band]
    values[bone] = np.where(q[bone] > 0.65, tissues.rib_cortex, tissues.rib_marrow)
    values[cartilage] = tissues.cartilage
    out[band] = values


def draw_sternum(out, anatomy: ChestAnatomy, tissues: TissueHU, u, v, w: float, front_cavity: float):
    size = anatomy.size
    heart_w, heart_c = anatomy.heart_centre[2], anatomy.heart_axes[2]
    if not heart_w - 0.85 * heart_c <= w <= anatomy.apex_w - 25 * size:
        return
    half_width = (24.0 if w > anatomy.arch_w + 10 * size else 14.0) * size
    half_depth = 6.5 * size
    centre_v = -front_cavity - 0.5 * anatomy.rib_band_mm
    rows = _window(v, centre_v - half_depth, centre_v + half_depth)
    cols = _window(u, -half_width, half_width)
    e = (u[cols][None, :] / half_width) ** 2 + ((v[rows][:, None] - centre_v) / half_depth) ** 2
    _cortical(out[rows, cols], e <= 1, e > (1 - 1.6 * size / half_depth) ** 2, tissues.bone_cortex, tissues.marrow)


def draw_spine(out, anatomy: ChestAnatomy, tissues: TissueHU, u, v, w: float):
    """Vertebral body (or disc) with canal, arch, spinous and transverse processes."""
    size = anatomy.size
    centre_v = float(anatomy.vertebra_v(w))
    half_width, half_depth = float(anatomy.vertebra_half_width(w)), anatomy.vertebra_half_depth
    phase = (w / anatomy.vertebra_height + anatomy.vertebra_phase) % 1.0
    canal_v = centre_v + half_depth + 9.0 * size
    rows = _window(v, centre_v - half_depth - 2, canal_v + 50 * size)
    cols = _window(u, -40 * size, 40 * size)
    uu, vv = u[cols][None, :], v[rows][:, None]
    window = out[rows, cols]
    e = (uu / half_width) ** 2 + ((vv - centre_v) / half_depth) ** 2
    if phase < 0.18:
        window[e <= 1] = tissues.disc
    else:
        _cortical(window, e <= 1, e > (1 - 2.0 * size / half_depth) ** 2, tissues.bone_cortex, tissues.marrow)
    canal_radius = 7.5 * size
    canal = np.hypot(uu, vv - canal_v)
    posterior_bone = tissues.marrow + 80.0  # thin cortex around marrow, averaged
    arch = np.zeros(canal.shape, bool)
    if 0.1 <= phase <= 0.9:
        arch |= (canal >= canal_radius) & (canal <= canal_radius + 5.0 * size) & (vv > canal_v - 4.0 * size)
    if 0.3 <= phase <= 0.9:
        length = (vv - canal_v - canal_radius) / (30.0 * size)
        arch |= (length >= 0) & (length <= 1) & (np.abs(uu) < 3.5 * size * (1 - 0.4 * length))
    if 0.3 <= phase <= 0.7:
        for side in (-1.0, 1.0):
            start, end = np.array([6.0 * side, 0.0]) * size, np.array([30.0 * side, 7.0]) * size
            du, dv = uu - start[0], (vv - canal_v) - start[1]
            direction = end - start
            t = np.clip((du * direction[0] + dv * direction[1]) / (direction @ direction), 0, 1)
            arch |= np.hypot(du - t * direction[0], dv - t * direction[1]) < 5.0 * size
    window[arch] = posterior_bone
    window[canal < canal_radius] = tissues.spinal_canal


def draw_scapulae(out, anatomy: ChestAnatomy, tissues: TissueHU, frame: AxialFrame, w: float, ribs_out, muscle_top):
    """Thin curved plates in the muscles behind the upper ribs, narrowing towards their lower tips."""
    extent = float(anatomy.scapula_extent(w))
    if extent <= 0:
        return
    depth = (frame.rho - ribs_out) / np.maximum(muscle_top - ribs_out, 1.0)
    plate = (depth > 0.4) & (frame.rho - ribs_out < 0.4 * (muscle_top - ribs_out) + 3.5 * anatomy.size)
    angle = np.abs(frame.phi)
    plate &= (angle > 0.5) & (angle < 0.5 + 0.8 * extent)
    out[plate] = tissues.rib_cortex * 0.8
