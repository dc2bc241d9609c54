"""The chest drawn slice by slice: skin, fat, muscle, lungs, mediastinum, heart, abdomen, bones.

Everything here is two-dimensional per slice (the tubes and nodules are added in 3D afterwards),
which keeps the cost linear in the number of voxels and the memory to a few slices.
"""

from __future__ import annotations

import numpy as np

from .anatomy import AxialFrame, ChestAnatomy
from .grid import VoxelGrid
from .skeleton import draw_ribs, draw_scapulae, draw_spine, draw_sternum
from .texture import SmoothField
from .tissues import TissueHU

# heart chambers in the heart's own frame (centre p, q, s and radii; surface at radius 1):
# p towards the apex (left, forwards), q backwards-left, s up
_RIGHT_CHAMBERS = (((0.1, -0.45, -0.1), (0.55, 0.3, 0.5)), ((-0.6, -0.1, 0.1), (0.35, 0.4, 0.45)))
_LEFT_CHAMBERS = (((0.2, 0.25, -0.1), (0.55, 0.38, 0.5)), ((-0.35, 0.55, 0.35), (0.4, 0.3, 0.35)))


def _ellipse(u, v, centre_u, centre_v, half_u, half_v):
    return ((u - centre_u) / half_u) ** 2 + ((v - centre_v) / half_v) ** 2 <= 1


def _table(anatomy: ChestAnatomy, tissues: TissueHU, u, v) -> np.ndarray:
    """The patient table under the back: a curved carbon shell around a foam core (NaN elsewhere)."""
    size = anatomy.size
    top = anatomy.half_depth + 6.0 * size - 0.0006 * u**2
    depth = v - top
    table = np.full(np.broadcast(u, v).shape, np.nan, np.float32)
    across = np.abs(u) < 1.05 * anatomy.half_width
    table[across & (depth >= 0) & (depth < 18)] = tissues.table_core
    table[across & (((depth >= 0) & (depth < 2)) | ((depth >= 16) & (depth < 18)))] = tissues.table_shell
    return table


def _draw_heart(out, anatomy: ChestAnatomy, tissues: TissueHU, frame: AxialFrame, heart_window, w: float):
    """Myocardium, blood-filled chambers and a rim of pericardial fat, within the heart's window."""
    s = (w - anatomy.heart_centre[2]) / anatomy.heart_axes[2]
    if abs(s) > 1.06:
        return
    out = out[heart_window]
    p, q = frame.heart_p[heart_window], frame.heart_q[heart_window]
    radius2 = p * p + q * q + s * s
    out[(radius2 <= 1.06**2) & (radius2 > 1.0)] = tissues.fat
    out[radius2 <= 1.0] = tissues.blood
    for chambers, value in ((_RIGHT_CHAMBERS, tissues.right_heart), (_LEFT_CHAMBERS, tissues.left_heart)):
        for (cp, cq, cs), (rp, rq, rs) in chambers:
            out[((p - cp) / rp) ** 2 + ((q - cq) / rq) ** 2 + ((s - cs) / rs) ** 2 <= 1] = value


def _heart_window(anatomy: ChestAnatomy, u, v) -> tuple[slice, slice]:
    reach = 1.1 * max(anatomy.heart_axes[:2])
    cu, cv = anatomy.heart_centre[:2]
    return (slice(int(np.searchsorted(v, cv - reach)), int(np.searchsorted(v, cv + reach))),
            slice(int(np.searchsorted(u, cu - reach)), int(np.searchsorted(u, cu + reach))))


def _draw_abdomen(out, anatomy: ChestAnatomy, tissues: TissueHU, u, v, w: float, below, diaphragm, front, back):
    """Liver under the right dome, spleen and stomach (with its gas bubble) under the left."""
    half = anatomy.cavity_half_width
    out[below] = tissues.muscle * 0.5 + tissues.fat * 0.5
    out[below & (u < anatomy.midline_u + 35 * anatomy.size)] = tissues.liver
    out[below & _ellipse(u, v, 0.62 * half, 0.45 * back, 0.3 * half, 0.38 * back)] = tissues.spleen
    stomach = below & _ellipse(u, v, 0.35 * half, -0.25 * front, 0.3 * half, 0.42 * front)
    out[stomach] = tissues.muscle * 0.6
    # gas in the fundus, under the dome, floating on the stomach's contents (a flat fluid level)
    radius = anatomy.stomach_gas_mm
    gas_centre_w = anatomy.base_w + anatomy.dome_heights[1] - 6 * anatomy.size - radius
    if radius > 0 and gas_centre_w - 0.3 * radius < w:
        depth = ((w - gas_centre_w) / radius) ** 2
        gas = ((u - 0.4 * half) / (1.3 * radius)) ** 2 + ((v + 0.35 * front) / radius) ** 2 + depth <= 1
        out[stomach & gas] = tissues.air


def _draw_slice(out, lungs_out, anatomy, tissues, frame: AxialFrame, u, v, u2, v2, w, texture, table, heart_window,
                edge_mm):
    """One axial slice at height ``w`` into ``out`` (HU) and ``lungs_out``; ``u``, ``v`` are the grid's
    column and row positions (1D, ascending) and ``u2``, ``v2`` the same ready to broadcast."""
    size = anatomy.size
    skin, muscle_top, ribs_out, cavity = anatomy.outline_radii(frame, w)
    rho = frame.rho
    out[...] = tissues.air
    np.copyto(out, table, where=~np.isnan(table))
    out[rho < skin] = tissues.skin
    out[rho < skin - 1.8 * size] = tissues.fat
    out[rho < muscle_top] = tissues.muscle
    muscle = muscle_top - ribs_out
    thick = muscle > 14 * size  # a fat plane between the layers of thick muscle groups
    out[thick & (np.abs(muscle_top - rho - 0.45 * muscle) < 1.2 * size)] = tissues.fat
    inside = rho < cavity
    out[inside] = tissues.fat if w < anatomy.apex_w - 15 * size else 0.5 * (tissues.fat + tissues.muscle)
    front, back = (float(d) for d in anatomy.cavity_depths(w))
    diaphragm = frame.diaphragm_w
    out[inside & (w < diaphragm)] = tissues.muscle
    below = inside & (w < diaphragm - 5.0 * size)
    if below.any():
        _draw_abdomen(out, anatomy, tissues, u2, v2, w, below, diaphragm, front, back)
    _draw_heart(out, anatomy, tissues, frame, heart_window, w)
    lungs = anatomy.lungs(u2, v2, w, frame)
    dependent = np.clip((v2 + front) / max(front + back, 1.0), 0, 1) ** 2
    parenchyma = tissues.lung + tissues.lung_gravity * dependent + tissues.lung_texture * texture
    out[lungs] = np.broadcast_to(parenchyma, out.shape)[lungs]
    rows, columns = np.nonzero(lungs)
    fissure = anatomy.fissure_distance(u[columns], v[rows], w)  # a pleural sheet, thinner than a voxel
    sheet = np.clip(1.0 - fissure / (0.5 * edge_mm + 0.2), 0, 1) * (0.35 * edge_mm / (edge_mm + 0.35))
    out[rows, columns] += sheet * (tissues.muscle - out[rows, columns])
    lungs_out[...] = lungs
    draw_ribs(out, anatomy, tissues, frame, w, ribs_out, cavity)
    draw_scapulae(out, anatomy, tissues, frame, w, ribs_out, muscle_top)
    draw_sternum(out, anatomy, tissues, u, v, w, front)
    draw_spine(out, anatomy, tissues, u, v, w)


def draw_body(anatomy: ChestAnatomy, tissues: TissueHU, grid: VoxelGrid, lung_texture: SmoothField):
    """HU (float32) and lung mask (bool) of the chest on ``grid``, without tubes and nodules."""
    z_mm, y_mm, x_mm = grid.axes_mm
    centre_x, centre_y, centre_z = anatomy.centre_xyz
    u = (x_mm - centre_x).astype(np.float32)
    v = (y_mm - centre_y).astype(np.float32)
    u2, v2 = u[None, :], v[:, None]
    frame = anatomy.frame(u2, v2)
    table = _table(anatomy, tissues, u2, v2)
    heart_window = _heart_window(anatomy, u, v)
    texture = lung_texture.slices(grid)
    hu = np.empty(grid.shape_zyx, np.float32)
    lungs = np.empty(grid.shape_zyx, bool)
    for k, z in enumerate(z_mm):
        _draw_slice(hu[k], lungs[k], anatomy, tissues, frame, u, v, u2, v2, float(z - centre_z), texture(k), table,
                    heart_window, grid.edge_mm)
    return hu, lungs
