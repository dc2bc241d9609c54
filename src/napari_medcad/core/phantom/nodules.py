"""Lung nodules: where they go, what they look like, and their ground truth.

Solid nodules are dense and sharp, ground-glass ones faint and fuzzy, part-solid ones a
ground-glass halo around a solid core.  Shapes are spheres made lobulated by smooth bumps and
stretched, some with spicules; every shape is rescaled so that its volume is exactly that of a
sphere of the recorded diameter, which keeps ``diameter_mm`` equal to the label's
equivalent-sphere diameter.  Placement uses the analytic lung, so a nodule is in the lung at
any voxel size: free in the parenchyma, touching a vessel, or touching the pleura.  No nodule
is centred inside a great vessel or the trachea, which run through the analytic lung near the
hilum: a ground-glass nodule placed in the superior vena cava was invisible (the vein is denser).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .anatomy import ChestAnatomy
from .grid import VoxelGrid
from .texture import SmoothField
from .tubes import Tubes, composite, draw_tubes
from .vessels import VesselTree

KINDS = ("solid", "ground-glass", "part-solid")
ATTACHMENTS = ("none", "vessel", "pleura")
KIND_HU = {"solid": (-40.0, 60.0), "ground-glass": (-720.0, -380.0), "part-solid": (-680.0, -400.0)}


def _sphere_directions(count: int) -> np.ndarray:
    """Evenly spread unit vectors (Fibonacci sphere)."""
    index = np.arange(count) + 0.5
    polar = np.arccos(1 - 2 * index / count)
    azimuth = np.pi * (1 + 5**0.5) * index
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


_DIRECTIONS = _sphere_directions(2000)  # for shape integrals
_PROBES = _sphere_directions(200)  # for placement checks


@dataclass(frozen=True)
class PhantomNodule:
    """Ground truth of one nodule, as an annotator would record it."""

    id: int
    centre_world_mm: tuple[float, float, float]  # LPS x, y, z
    centre_index_zyx: tuple[float, float, float]  # continuous array index of the centre
    diameter_mm: float  # equivalent-sphere diameter of the nodule (its label)
    kind: str  # "solid", "ground-glass" or "part-solid"
    attached: str  # "none", "vessel" or "pleura"
    spiculated: bool
    solid_diameter_mm: float  # the solid part: the whole nodule, the core, or 0 for ground glass


@dataclass(frozen=True)
class NoduleModel:
    """A nodule's shape and appearance in world millimetres (texture and spicules relative to the centre)."""

    centre_xyz: np.ndarray
    diameter_mm: float
    kind: str
    attached: str
    to_local: np.ndarray  # 3x3, world offset -> shape frame (rotation and volume-preserving stretch)
    centroid_local: np.ndarray  # the star-shaped body's centroid in the shape frame: lands on the centre
    base_radius_mm: float
    bump_directions: np.ndarray  # (n, 3) in the shape frame
    bump_heights: np.ndarray
    bump_sharpness: float
    hu: float
    fuzz_mm: float  # extra blur of the border (ground glass)
    texture: SmoothField
    texture_hu: float
    core_diameter_mm: float
    core_offset_mm: np.ndarray
    core_hu: float
    spicules: Tubes

    @property
    def spiculated(self) -> bool:
        return len(self.spicules) > 0

    @property
    def solid_diameter_mm(self) -> float:
        return {"solid": self.diameter_mm, "ground-glass": 0.0}.get(self.kind, self.core_diameter_mm)

    def radius_along(self, directions: np.ndarray) -> np.ndarray:
        """Surface radius (mm, shape frame) along unit ``directions`` (..., 3)."""
        bumps = np.exp(self.bump_sharpness * (directions @ self.bump_directions.T - 1.0)) @ self.bump_heights
        return self.base_radius_mm * (1.0 + bumps)

    @property
    def reach_mm(self) -> float:
        """Radius of a world sphere that holds the whole body of the nodule."""
        stretch = 1.0 / np.linalg.svd(self.to_local, compute_uv=False).min()
        return float((self.radius_along(_DIRECTIONS).max() + np.linalg.norm(self.centroid_local)) * stretch)

    def draw(self, grid: VoxelGrid, hu: np.ndarray, scratch: np.ndarray, box) -> np.ndarray:
        """Paint the nodule into ``hu`` within ``box`` (slices of ``grid``); return its body mask there."""
        z_mm, y_mm, x_mm = grid.axes_mm
        points = np.stack(np.meshgrid(x_mm[box[2]], y_mm[box[1]], z_mm[box[0]], indexing="ij"), axis=-1)
        points = points.transpose(2, 1, 0, 3)  # (z, y, x, 3) in x, y, z order
        local = (points - self.centre_xyz) @ self.to_local.T + self.centroid_local
        distance = np.linalg.norm(local, axis=-1)
        surface = self.radius_along(local / np.maximum(distance, 1e-6)[..., None])
        edge = grid.edge_mm + self.fuzz_mm
        fraction = np.clip(0.5 + (surface - distance) / edge, 0, 1)
        value = self.hu + self.texture_hu * self.texture.at(points - self.centre_xyz)
        if self.kind == "part-solid":
            core = np.linalg.norm(local - self.core_offset_mm, axis=-1)
            solid = np.clip(0.5 + (0.5 * self.core_diameter_mm - core) / grid.edge_mm, 0, 1)
            value = value + solid * (self.core_hu - value)
        window = hu[box]
        np.maximum(window, window + fraction * (value - window), out=window)
        if self.spiculated:
            spicules = Tubes(self.spicules.start_xyz + self.centre_xyz, self.spicules.end_xyz + self.centre_xyz,
                             self.spicules.start_radius, self.spicules.end_radius)
            index, spicule = draw_tubes(spicules, grid, scratch)
            composite(hu, index, spicule, self.core_hu, only_brighter=True)
        return distance <= surface


def _diameter(rng: np.random.Generator, limits: tuple[float, float]) -> float:
    """LUNA16-like sizes: mostly 4-15 mm, a tail of large ones."""
    for _ in range(50):
        diameter = float(rng.lognormal(np.log(7.5), 0.55))
        if limits[0] <= diameter <= limits[1]:
            return diameter
    return float(rng.uniform(*limits))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _model(rng, kind: str, diameter: float, spiculated: bool) -> NoduleModel:
    """A nodule centred at the origin; placement sets its centre and attachment."""
    stretch = rng.uniform(0.85, 1.18, size=2)
    stretch = np.append(stretch, 1.0 / stretch.prod())
    rotation = _random_rotation(rng)
    to_local = (rotation * (1.0 / stretch)[None, :]).T  # world offset -> rotated, un-stretched frame
    lobes = int(rng.integers(0, 7))
    directions = _sphere_directions(lobes) @ _random_rotation(rng).T if lobes else np.zeros((0, 3))
    heights = rng.uniform(0.04, 0.22, size=lobes)
    sharpness = float(rng.uniform(3.0, 9.0))
    shape = np.exp(sharpness * (_DIRECTIONS @ directions.T - 1.0)) @ heights + 1.0
    base_radius = 0.5 * diameter / float(np.mean(shape**3)) ** (1 / 3)
    radius = base_radius * shape
    centroid = 0.75 * (radius[:, None] ** 4 * _DIRECTIONS).mean(axis=0) / (radius**3).mean()
    low, high = KIND_HU[kind]
    hu = float(rng.uniform(low, high))
    core_diameter = float(rng.uniform(0.3, 0.65)) * diameter if kind == "part-solid" else 0.0
    core_offset = rng.normal(size=3) * 0.12 * (diameter - core_diameter)
    core_hu = float(rng.uniform(*KIND_HU["solid"])) if kind == "part-solid" else hu
    fuzz = float(rng.uniform(0.8, 2.0) + 0.05 * diameter) if kind != "solid" else 0.2
    texture_hu = float(rng.uniform(5, 15) if kind == "solid" else rng.uniform(20, 50))
    texture = SmoothField(rng, [-diameter] * 3, [diameter] * 3, float(rng.uniform(2.5, 5.0)))
    spicules = Tubes.empty()
    if spiculated:
        count = int(rng.integers(5, 16))
        out = _sphere_directions(count) @ _random_rotation(rng).T
        start = out * 0.35 * diameter
        length = (0.45 * diameter + rng.uniform(0.3, 1.0, size=count) * (0.5 * diameter + 4.0))[:, None]
        spicules = Tubes(start, start + out * length, rng.uniform(0.5, 0.9, count) * min(1.5, 0.12 * diameter),
                         np.full(count, 0.15))
    return NoduleModel(np.zeros(3), diameter, kind, "none", to_local, centroid, base_radius, directions, heights, sharpness,
                       hu, fuzz, texture, texture_hu, core_diameter, core_offset, core_hu, spicules)


class _Placer:
    """Finds centres for nodules: inside the lung, apart from each other, attached as asked."""

    def __init__(self, rng, anatomy: ChestAnatomy, trees: list[VesselTree], box_xyz, central: Tubes | None = None):
        self.rng, self.anatomy, self.box_xyz = rng, anatomy, box_xyz
        self.central = central if central is not None and len(central) else None
        offsets = np.cumsum([0] + [len(tree.parent) for tree in trees[:-1]])
        self.vessel_position = np.concatenate([tree.position_xyz for tree in trees])
        self.vessel_parent = np.concatenate(
            [np.where(tree.parent >= 0, tree.parent + offset, -1) for tree, offset in zip(trees, offsets)])
        self.vessel_radius = np.concatenate([tree.radius for tree in trees])
        thick = self.vessel_radius > 1.5
        self.thick_vessels = self.vessel_position[thick], self.vessel_radius[thick]
        candidates = np.flatnonzero((self.vessel_radius >= 1.0) & (self.vessel_radius <= 4.5) & (self.vessel_parent >= 0))
        self.attachable = candidates[anatomy.lung_inside(self.vessel_position[candidates])]
        self.placed: list[tuple[np.ndarray, float]] = []

    def _fits(self, centre, reach) -> bool:
        if self.central is not None and self.central.surface_distance(centre).min() <= 0.0:
            return False
        if self.box_xyz is not None:
            low, high = self.box_xyz
            if np.any(centre - reach < low) or np.any(centre + reach > high):
                return False
        return all(np.linalg.norm(centre - other) > reach + other_reach + 3.0 for other, other_reach in self.placed)

    def _lung_fraction(self, centre, radius) -> float:
        return float(self.anatomy.lung_inside(centre + _PROBES * radius).mean())

    def _clear_of_vessels(self, centre, reach) -> bool:
        position, radius = self.thick_vessels
        return bool(np.all(np.linalg.norm(position - centre, axis=1) - radius > reach + 1.0))

    def _propose(self, attached: str, radius: float, reach: float):
        rng, anatomy = self.rng, self.anatomy
        if attached == "vessel":
            if len(self.attachable) == 0:
                return None
            node = int(self.attachable[rng.integers(len(self.attachable))])
            axis = self.vessel_position[node] - self.vessel_position[self.vessel_parent[node]]
            axis /= max(np.linalg.norm(axis), 1e-9)
            side = rng.normal(size=3)
            side -= (side @ axis) * axis
            side /= max(np.linalg.norm(side), 1e-9)
            centre = self.vessel_position[node] + side * (self.vessel_radius[node] + 0.85 * radius)
            return centre if self._lung_fraction(centre, reach + 1.0) == 1.0 else None
        start = anatomy.sample_lung_points(rng, 1, int(rng.choice([-1, 1])))[0]
        if attached == "none":
            ok = self._lung_fraction(start, reach + 3.0) == 1.0 and self._clear_of_vessels(start, reach)
            return start if ok else None
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        steps = np.arange(0.0, 200.0, 1.0)
        inside = anatomy.lung_inside(start + steps[:, None] * direction)
        if inside.all():
            return None
        centre = start + (steps[int(np.argmin(inside))] - 0.5 - 0.9 * radius) * direction
        inside_core = self._lung_fraction(centre, 0.95 * radius)
        touching = self._lung_fraction(centre, reach + 1.0) < 1.0
        return centre if anatomy.lung_inside(centre) and inside_core >= 0.85 and touching else None

    def place(self, attached: str, model: NoduleModel):
        radius, reach = 0.5 * model.diameter_mm, model.reach_mm
        for _ in range(80):
            centre = self._propose(attached, radius, reach)
            if centre is not None and self._fits(centre, reach):
                self.placed.append((centre, reach))
                return centre
        return None


def draw_nodules(rng: np.random.Generator, config, anatomy: ChestAnatomy, trees: list[VesselTree],
                 box_xyz=None, central: Tubes | None = None) -> list[NoduleModel]:
    """Nodules for one patient, as many as ``config.n_nodules`` asks and the lungs can hold.

    ``box_xyz`` (low, high world corners) keeps whole nodules inside a scanned region; no nodule is
    centred inside the ``central`` tubes (the great vessels, oesophagus and trachea).
    """
    placer = _Placer(rng, anatomy, trees, box_xyz, central)
    count = int(rng.integers(config.n_nodules[0], config.n_nodules[1] + 1))
    kinds = np.clip([1.0 - config.ground_glass_fraction - config.part_solid_fraction,
                     config.ground_glass_fraction, config.part_solid_fraction], 0, None)
    attachments = np.clip([1.0 - config.juxta_vascular_fraction - config.juxta_pleural_fraction,
                           config.juxta_vascular_fraction, config.juxta_pleural_fraction], 0, None)
    models = []
    for _ in range(count):
        kind = KINDS[int(rng.choice(3, p=kinds / kinds.sum()))]
        attached = ATTACHMENTS[int(rng.choice(3, p=attachments / attachments.sum()))]
        spiculated = kind != "ground-glass" and bool(rng.random() < config.spiculated_fraction)
        model = _model(rng, kind, _diameter(rng, config.nodule_diameter_mm), spiculated)
        centre = placer.place(attached, model)
        if centre is None and attached != "none":
            attached, centre = "none", placer.place("none", model)
        if centre is not None:
            models.append(replace(model, centre_xyz=centre, attached=attached))
    return models
