"""The shape of one patient's chest as analytic regions in millimetres.

Positions are taken in a patient frame centred on the chest: ``u = x - centre_x`` (towards the
patient's left), ``v = y - centre_y`` (posterior), ``w = z - centre_z`` (superior).  Angles ``phi``
are measured around the body axis from the posterior midline (0) through the patient's left
(+pi/2) to the front (+-pi).  Every function broadcasts, so the same code classifies a cloud of
points (vessel growth, nodule placement) and whole axial slices (rendering), which keeps the lung
mask, the vessels and the nodules consistent with each other at any voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Mediastinal half-widths (mm, right and left of the midline) against the normalised AP position
# (-1 front of the chest cavity, +1 back) at three heights: above the aortic arch, at the arch,
# and at heart level.  The back rows cover the vertebral body, the left ones the descending aorta.
_MEDIASTINUM_V = np.array([-1.05, -0.7, -0.3, 0.1, 0.45, 0.75, 1.05])
_MEDIASTINUM_RIGHT = np.array([
    [6, 14, 22, 22, 23, 24, 16],
    [6, 16, 28, 24, 23, 24, 16],
    [4, 10, 14, 18, 23, 24, 16],
], dtype=float)
_MEDIASTINUM_LEFT = np.array([
    [6, 16, 24, 24, 24, 24, 16],
    [8, 24, 44, 48, 46, 38, 16],
    [4, 10, 16, 24, 40, 38, 16],
], dtype=float)


def _interp2(table: np.ndarray, rows_at: np.ndarray, cols_at: np.ndarray, row, col) -> np.ndarray:
    """Bilinear lookup in ``table`` at (row, col) positions given on the axes ``rows_at``/``cols_at``."""
    r = np.interp(row, rows_at, np.arange(len(rows_at)))
    c = np.interp(col, cols_at, np.arange(len(cols_at)))
    r0 = np.minimum(np.floor(r).astype(int), len(rows_at) - 2)
    c0 = np.minimum(np.floor(c).astype(int), len(cols_at) - 2)
    fr, fc = r - r0, c - c0
    top = table[r0, c0] * (1 - fc) + table[r0, c0 + 1] * fc
    bottom = table[r0 + 1, c0] * (1 - fc) + table[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


@dataclass(frozen=True)
class AxialFrame:
    """Quantities of in-plane positions (u, v) that do not change along the body axis.

    A renderer computes them once per grid and reuses them on every slice.
    """

    rho: np.ndarray  # distance from the body axis, mm
    phi: np.ndarray
    body_radius: np.ndarray  # body outline at chest level along phi
    fat_mm: np.ndarray
    rib_cage_radius: np.ndarray  # inner surface of the rib cage at chest level along phi
    diaphragm_w: np.ndarray  # height of the diaphragm above this position
    apex_w: np.ndarray  # height of the lung's upper surface
    heart_p: np.ndarray  # heart-frame coordinates (the heart is rotated about the body axis only)
    heart_q: np.ndarray


@dataclass(frozen=True)
class ChestAnatomy:
    """Sizes and positions (mm) that make one patient; see :func:`draw_anatomy`."""

    centre_xyz: tuple[float, float, float]
    size: float
    half_width: float  # body outline at chest level
    half_depth: float
    front_exponent: float  # superellipse exponents: the back is flatter than the front
    back_exponent: float
    fat_mm: float
    fat_harmonics: tuple[float, float, float]  # posterior excess, lateral excess, left-right asymmetry
    cage_half_width: float  # inner surface of the rib cage (a rounder superellipse than the body;
    cage_front: float  # muscle fills the space between, thickest beside the spine)
    cage_back: float
    cage_exponent: float
    rib_band_mm: float
    lung_height: float
    dome_heights: tuple[float, float]  # right, left diaphragm dome above the posterior recesses
    heart_centre: tuple[float, float, float]
    heart_axes: tuple[float, float, float]
    heart_angle: float
    vertebra_height: float
    vertebra_phase: float
    rib_pitch: float
    rib_drop: float
    stomach_gas_mm: float  # radius of the gas bubble in the stomach's fundus (0: none)
    fissure_heights: tuple[float, float, float, float, float]  # oblique fissures (right back, right
    # front, left back, left front) and the right horizontal fissure

    # heights ----------------------------------------------------------------------------------
    @property
    def apex_w(self) -> float:
        return 0.5 * self.lung_height

    @property
    def base_w(self) -> float:
        return -0.5 * self.lung_height

    @property
    def carina_w(self) -> float:
        return self.apex_w - 0.4 * self.lung_height

    @property
    def arch_w(self) -> float:
        return self.carina_w + 28.0 * self.size

    # outline and layers -----------------------------------------------------------------------
    def body_scale(self, w):
        """Cross-section scale along the body: narrower over the apices, a neck above them."""
        keys = [self.base_w - 160, self.base_w - 20, self.base_w + 40, self.apex_w - 40,
                self.apex_w + 15, self.apex_w + 80]
        return np.interp(w, keys, [0.93, 0.97, 1.0, 1.0, 0.93, 0.5])

    def _layers(self, phi):
        """Body radius, fat thickness and rib-cage radius at chest level along ``phi``."""
        sin, cos = np.abs(np.sin(phi)), np.cos(phi)
        exponent = np.where(cos > 0, self.back_exponent, self.front_exponent)
        body = (
            (sin / self.half_width) ** exponent + (np.abs(cos) / self.half_depth) ** exponent
        ) ** (-1.0 / exponent)
        depth = np.where(cos > 0, self.cage_back, self.cage_front)
        cage = (
            (sin / self.cage_half_width) ** self.cage_exponent + (np.abs(cos) / depth) ** self.cage_exponent
        ) ** (-1.0 / self.cage_exponent)
        back, lateral, asymmetry = self.fat_harmonics
        fat = self.fat_mm * (1 + back * np.maximum(cos, 0) + lateral * sin**2 + asymmetry * np.sin(phi))
        return tuple(np.asarray(a, dtype=np.float32) for a in (body, fat, cage))

    def frame(self, u, v) -> AxialFrame:
        u = np.asarray(u, dtype=np.float32)
        v = np.asarray(v, dtype=np.float32)
        phi = np.arctan2(u, v)
        shape = np.broadcast(u, v).shape
        p, q, _ = self.heart_coordinates(u, v, 0.0)
        return AxialFrame(
            np.hypot(u, v), phi, *self._layers(phi),
            np.broadcast_to(self.diaphragm_w(u, v), shape).astype(np.float32),
            np.broadcast_to(self.apex_w_at(u, v), shape).astype(np.float32),
            np.broadcast_to(p, shape).astype(np.float32), np.broadcast_to(q, shape).astype(np.float32))

    def scapula_extent(self, w):
        """0..1: how far down the shoulder blades this height is (0 outside them)."""
        top, bottom = self.apex_w + 10 * self.size, self.apex_w - 150 * self.size
        inside = (w <= top) & (w >= bottom)
        return np.where(inside, np.sqrt(np.clip((w - bottom) / (top - bottom), 0, 1)), 0.0)

    def cage_scale(self, w):
        """The rib cage is a barrel: narrower towards the apices than the body around it."""
        return np.interp(w, [self.base_w + 30, self.apex_w - 30], [1.0, 0.86])

    def _radii(self, body, fat, cage, w):
        scale, cage_scale = self.body_scale(w), self.cage_scale(w)
        if np.ndim(w) == 0:  # plain floats keep float32 slices in float32
            scale, cage_scale = float(scale), float(cage_scale)
        skin = scale * body
        muscle_top = skin - fat
        cavity = np.clip(scale * cage_scale * cage, 0.0, muscle_top - self.rib_band_mm - 4.0 * self.size)
        return skin, muscle_top, cavity + self.rib_band_mm, cavity

    def outline_radii(self, frame: AxialFrame, w):
        """Radii (mm) of the skin, the fat/muscle border, the outer rib band and the chest cavity."""
        return self._radii(frame.body_radius, frame.fat_mm, frame.rib_cage_radius, w)

    def cavity_depths(self, w) -> tuple[np.ndarray, np.ndarray]:
        """Chest cavity radius straight ahead (front) and straight back at height ``w``."""
        radii = self._radii(*self._midline_layers, np.asarray(w)[..., None])[3]
        return radii[..., 0], radii[..., 1]

    @cached_property
    def _midline_layers(self):
        return self._layers(np.array([np.pi, 0.0]))

    @cached_property
    def cavity_half_width(self) -> float:
        return float(self._radii(*self._layers(np.array([np.pi / 2])), 0.0)[3][0])

    # organs -----------------------------------------------------------------------------------
    def diaphragm_w(self, u, v):
        """Height of the diaphragm: a dome over each side, dipping into the costophrenic recesses."""
        half = self.cavity_half_width
        right = u < self.midline_u
        dome = np.where(right, self.dome_heights[0], self.dome_heights[1])
        du = (u - np.where(right, -0.4, 0.4) * half) / (0.62 * half)
        dv = (v + 0.15 * half) / np.where(v < -0.15 * half, 0.85 * half, 0.55 * half)
        r2 = du * du + dv * dv
        recess = 20.0 * self.size * np.clip(np.sqrt(r2) - 1, 0, 1.5)
        return self.base_w + dome * np.clip(1 - r2, 0, 1) ** 0.6 - recess

    def apex_w_at(self, u, v):
        """Upper surface of the lungs: a dome over each apex."""
        half = self.cavity_half_width
        du = (np.abs(u) - 0.42 * half) / (0.42 * half)
        dv = (v - 0.1 * half) / (0.55 * half)
        return self.apex_w - 50.0 * self.size * (du**2 + dv**2)

    def heart_coordinates(self, u, v, w):
        """Position in the heart's frame, scaled so that the heart's surface is at radius 1."""
        cu, cv, cw = self.heart_centre
        a, b, c = self.heart_axes
        cos, sin = np.cos(self.heart_angle), np.sin(self.heart_angle)
        du, dv = u - cu, v - cv
        # the long axis points to the patient's left and forwards
        return (du * cos - dv * sin) / a, (du * sin + dv * cos) / b, (w - cw) / c

    def from_heart(self, p, q, s) -> np.ndarray:
        """Inverse of :meth:`heart_coordinates` for one point: (u, v, w)."""
        a, b, c = self.heart_axes
        cos, sin = np.cos(self.heart_angle), np.sin(self.heart_angle)
        p, q = p * a, q * b
        cu, cv, cw = self.heart_centre
        return np.array([cu + p * cos + q * sin, cv - p * sin + q * cos, cw + s * c])

    def heart_radius2(self, frame: AxialFrame, w):
        """Squared heart-frame radius (1 on the heart's surface)."""
        s = (w - self.heart_centre[2]) / self.heart_axes[2]
        return frame.heart_p**2 + frame.heart_q**2 + s * s

    def mediastinum_half_widths(self, v, w):
        """Right and left half-widths (mm) of the mediastinum at AP position ``v``, height ``w``."""
        front, back = self.cavity_depths(w)
        v_norm = np.where(v < 0, v / np.maximum(front, 1.0), v / np.maximum(back, 1.0))
        heights = np.array([self.arch_w + 18 * self.size, self.arch_w, self.carina_w - 25 * self.size])
        order = np.argsort(heights)
        right = _interp2(_MEDIASTINUM_RIGHT[order], heights[order], _MEDIASTINUM_V, w, v_norm)
        left = _interp2(_MEDIASTINUM_LEFT[order], heights[order], _MEDIASTINUM_V, w, v_norm)
        return right * self.size, left * self.size

    @property
    def midline_u(self) -> float:
        return 4.0 * self.size

    def vertebra_v(self, w):
        """AP position of the vertebral bodies' centres: the lungs reach further back beside them."""
        return self.cavity_depths(w)[1] - self.vertebra_half_depth - 10.0 * self.size

    @property
    def vertebra_half_depth(self) -> float:
        return 15.0 * self.size

    def vertebra_half_width(self, w):
        lower = np.clip((self.apex_w - w) / self.lung_height, 0, 1.3)
        return (17.0 + 6.0 * lower) * self.size

    # lungs ------------------------------------------------------------------------------------
    def fissure_distance(self, u, v, w):
        """Distance (mm) to the nearest interlobar fissure: an oblique one in each lung, sloping
        from high at the back to low at the front, and the right lung's horizontal fissure in front
        of its oblique one."""
        front, back = self.cavity_depths(w)
        right = u < self.midline_u
        right_back, right_front, left_back, left_front, horizontal = self.fissure_heights
        high = np.where(right, right_back, left_back)
        low = np.where(right, right_front, left_front)
        depth = np.maximum(front + back, 1.0)
        slope = (high - low) / depth
        along = (v + front) / depth
        oblique = np.abs(w - (low + (high - low) * along)) / np.sqrt(1 + slope * slope)
        in_front = w > low + (high - low) * along
        level = np.where(right & in_front, np.abs(w - horizontal), np.inf)
        return np.minimum(oblique, level)

    def lungs(self, u, v, w, frame: AxialFrame):
        """True inside either lung (the lung mask, vessels and airways included).

        The heart and the fat pad below it (between heart and diaphragm) are not lung.
        """
        cavity = self.outline_radii(frame, w)[3]
        inside = (frame.rho < cavity) & (w > frame.diaphragm_w) & (w < frame.apex_w)
        right, left = self.mediastinum_half_widths(v, w)
        offset = u - self.midline_u
        inside &= (offset > left) | (offset < -right)
        heart = self.heart_radius2(frame, w) <= 1.05**2
        heart |= (frame.heart_p**2 + frame.heart_q**2 <= 1.0) & (w < self.heart_centre[2])
        return inside & ~heart

    def to_patient(self, points_xyz) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        local = np.asarray(points_xyz, dtype=float) - np.asarray(self.centre_xyz)
        return local[..., 0], local[..., 1], local[..., 2]

    def to_world(self, points_uvw) -> np.ndarray:
        return np.asarray(points_uvw, dtype=float) + np.asarray(self.centre_xyz)

    def lung_inside(self, points_xyz) -> np.ndarray:
        """True for world points (..., 3) inside a lung."""
        u, v, w = self.to_patient(points_xyz)
        return self.lungs(u, v, w, self.frame(u, v))

    def lung_side(self, points_xyz) -> np.ndarray:
        """-1 for the right lung's side of the body, +1 for the left."""
        u = self.to_patient(points_xyz)[0]
        return np.where(u < self.midline_u, -1, 1)

    def sample_lung_points(self, rng: np.random.Generator, count: int, side: int) -> np.ndarray:
        """``count`` world points spread uniformly through one lung (side -1 right, +1 left)."""
        half = self.cavity_half_width
        low = np.array([min(0.0, side) * half, -half, self.base_w])
        high = np.array([max(0.0, side) * half, half, self.apex_w])
        found = []
        total = 0
        for _ in range(1000):
            candidates = self.to_world(rng.uniform(low, high, size=(4 * count, 3)))
            keep = candidates[self.lung_inside(candidates) & (self.lung_side(candidates) == side)]
            found.append(keep)
            total += len(keep)
            if total >= count:
                return np.concatenate(found)[:count]
        raise RuntimeError("the phantom's lung has no volume")


def draw_anatomy(rng: np.random.Generator, size_range: tuple[float, float], centre_z: float) -> ChestAnatomy:
    """A random adult chest: outline, fat and muscle, lung height, domes, heart and skeleton."""
    size = float(rng.uniform(*size_range))
    lung_height = float(rng.uniform(225, 265)) * size
    dome_right = float(rng.uniform(50, 70)) * size
    dome_left = dome_right - float(rng.uniform(5, 15)) * size
    half_width, half_depth = float(rng.uniform(155, 178)) * size, float(rng.uniform(118, 136)) * size
    heart_axes = tuple(float(a) * size for a in rng.uniform([64, 44, 40], [74, 52, 46]))
    heart_centre = (
        float(rng.uniform(18, 30)) * size,
        float(rng.uniform(-34, -24)) * size,
        -0.5 * lung_height + dome_left - 10 * size + heart_axes[2],
    )
    return ChestAnatomy(
        centre_xyz=(float(rng.uniform(-12, 12)), float(rng.uniform(-10, 10)), centre_z),
        size=size,
        half_width=half_width,
        half_depth=half_depth,
        front_exponent=float(rng.uniform(2.0, 2.5)),
        back_exponent=float(rng.uniform(2.6, 3.4)),
        fat_mm=float(rng.uniform(5, 26)) * size,
        fat_harmonics=(float(rng.uniform(0.0, 0.4)), float(rng.uniform(0.1, 0.6)), float(rng.uniform(-0.08, 0.08))),
        cage_half_width=half_width * float(rng.uniform(0.76, 0.82)),
        cage_front=half_depth * float(rng.uniform(0.66, 0.72)),
        cage_back=half_depth * float(rng.uniform(0.66, 0.74)),
        cage_exponent=float(rng.uniform(2.0, 2.4)),
        rib_band_mm=11.0 * size,
        lung_height=lung_height,
        dome_heights=(dome_right, dome_left),
        heart_centre=heart_centre,
        heart_axes=heart_axes,
        heart_angle=float(rng.uniform(0.45, 0.75)),
        vertebra_height=float(rng.uniform(23, 27)) * size,
        vertebra_phase=float(rng.uniform(0, 1)),
        rib_pitch=float(rng.uniform(22, 26)) * size,
        rib_drop=float(rng.uniform(95, 125)) * size,
        stomach_gas_mm=float(rng.uniform(8, 26)) * size if rng.random() < 0.6 else 0.0,
        fissure_heights=(
            float(rng.uniform(0.55, 0.7)) * lung_height - 0.5 * lung_height,
            float(rng.uniform(0.12, 0.25)) * lung_height - 0.5 * lung_height,
            float(rng.uniform(0.6, 0.75)) * lung_height - 0.5 * lung_height,
            float(rng.uniform(0.1, 0.22)) * lung_height - 0.5 * lung_height,
            float(rng.uniform(0.45, 0.55)) * lung_height - 0.5 * lung_height,
        ),
    )
