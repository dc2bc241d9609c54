"""Pulmonary vessel and airway trees grown to fill each lung.

Trees grow by space colonisation (Runions et al. 2007): random target points fill the lung, and
every branch tip steps towards the targets nearest to it, so branches split where targets pull
apart and the tree fills the lung the way real vessels do, in every direction, including the
many segments running along the body axis whose axial cross-sections look like nodules.  Radii
follow Murray's law from the tips back to the hilum; arteries run beside the bronchi.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .anatomy import ChestAnatomy
from .tubes import Tubes


@dataclass(frozen=True)
class VesselTree:
    """Nodes (world mm) with their parent (-1 for the root) and radius (mm)."""

    position_xyz: np.ndarray
    parent: np.ndarray
    radius: np.ndarray

    def tubes(self) -> Tubes:
        """One capsule per node, from its parent, with the node's radius."""
        child = np.flatnonzero(self.parent >= 0)
        parent = self.parent[child]
        radius = self.radius[child]
        return Tubes(self.position_xyz[parent], self.position_xyz[child], radius, radius)


def grow_tree(rng: np.random.Generator, root_xyz, targets_xyz: np.ndarray, step_mm: float,
              influence_mm: float, kill_mm: float, max_nodes: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """Space colonisation from ``root_xyz`` towards ``targets_xyz``: node positions and parents."""
    from scipy.spatial import cKDTree  # imported here: importing the package stays fast

    position = np.empty((max_nodes, 3))
    parent = np.empty(max_nodes, np.int64)
    position[0], parent[0] = root_xyz, -1
    count = 1
    targets = np.asarray(targets_xyz, dtype=float)
    for _ in range(400):
        if len(targets) == 0 or count >= max_nodes:
            break
        tree = cKDTree(position[:count])
        distance, nearest = tree.query(targets, distance_upper_bound=influence_mm)
        pulled = np.isfinite(distance)
        if pulled.any():
            pull = targets[pulled] - position[nearest[pulled]]
            pull /= np.maximum(np.linalg.norm(pull, axis=1, keepdims=True), 1e-9)
            growing, slot = np.unique(nearest[pulled], return_inverse=True)
            direction = np.zeros((len(growing), 3))
            np.add.at(direction, slot, pull)
        else:  # the trunk: head for the targets until they can pull
            growing = np.array([count - 1])
            direction = targets.mean(axis=0, keepdims=True) - position[count - 1]
        direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
        direction += rng.normal(0.0, 0.12, direction.shape)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        new = position[growing] + step_mm * direction
        fresh = tree.query(new, distance_upper_bound=0.4 * step_mm)[0] == np.inf
        new, growing = new[fresh][: max_nodes - count], growing[fresh][: max_nodes - count]
        if len(new) == 0:
            break
        position[count: count + len(new)] = new
        parent[count: count + len(new)] = growing
        count += len(new)
        reached = cKDTree(new).query(targets, distance_upper_bound=kill_mm)[0] < np.inf
        targets = targets[~reached]
    return position[:count].copy(), parent[:count].copy()


def murray_radii(parent: np.ndarray, root_radius: float, exponent: float = 2.5,
                 tip_limits: tuple[float, float] = (0.3, 0.7)) -> np.ndarray:
    """Radii with r_parent^k = sum r_child^k, scaled so that the root has ``root_radius``."""
    count = len(parent)
    has_child = np.zeros(count, bool)
    has_child[parent[parent >= 0]] = True
    flow = np.where(has_child, 0.0, 1.0)
    for node in range(count - 1, 0, -1):  # children always come after their parent
        flow[parent[node]] += flow[node]
    tip = float(np.clip(root_radius / flow[0] ** (1 / exponent), *tip_limits))
    return tip * flow ** (1 / exponent)


def with_twigs(rng, anatomy: ChestAnatomy, tree: VesselTree) -> VesselTree:
    """Two-segment twigs beyond every tip: the fine peripheral vessels that colonisation is too
    coarse to grow (cheap, and they give the lung its fine branching texture)."""
    position, parent, radius = tree.position_xyz, tree.parent, tree.radius
    tips = np.setdiff1d(np.arange(len(parent)), parent)
    tips = tips[parent[tips] >= 0]
    tips = np.repeat(tips, rng.integers(1, 3, size=len(tips)))
    heading = position[tips] - position[parent[tips]]
    heading /= np.maximum(np.linalg.norm(heading, axis=1, keepdims=True), 1e-9)
    nodes, parents, radii = [position], [parent], [radius]
    start, start_index, start_radius, count = position[tips], tips, radius[tips], len(parent)
    for length, shrink in ((6.0, 0.7), (5.0, 0.6)):
        heading = heading + rng.normal(0, 0.6, heading.shape)
        heading /= np.maximum(np.linalg.norm(heading, axis=1, keepdims=True), 1e-9)
        end = start + heading * (length * anatomy.size * rng.uniform(0.6, 1.4, (len(start), 1)))
        keep = anatomy.lung_inside(end)
        start, start_index, start_radius, heading = end[keep], start_index[keep], start_radius[keep], heading[keep]
        start_radius = np.maximum(start_radius * shrink, 0.18)
        nodes.append(start)
        parents.append(start_index)
        radii.append(start_radius)
        start_index = count + np.arange(len(start))
        count += len(start)
    return VesselTree(np.concatenate(nodes), np.concatenate(parents), np.concatenate(radii))


def grow_vessel_tree(rng, anatomy: ChestAnatomy, root_xyz, side: int, root_radius: float,
                     n_targets: int) -> VesselTree:
    targets = anatomy.sample_lung_points(rng, n_targets, side)
    size = anatomy.size
    position, parent = grow_tree(rng, root_xyz, targets, 3.5 * size, 26.0 * size, 4.5 * size)
    return VesselTree(position, parent, murray_radii(parent, root_radius))


def grow_bronchoarterial_tree(rng, anatomy: ChestAnatomy, root_xyz, toward_xyz, side: int, root_radius: float,
                              n_targets: int, smallest_bronchus: float = 1.0) -> tuple[VesselTree, Tubes]:
    """Bronchi grown from the hilum, and the pulmonary arteries that run beside them.

    The side each artery lies on is carried down the tree (parallel transport), so an artery
    stays on one side of its bronchus like a real bronchovascular bundle; at the hilum it starts
    on the side facing ``toward_xyz`` (the pulmonary artery).  Returns the arteries and the outer
    walls of the bronchi with an artery radius of at least ``smallest_bronchus``.
    """
    airway = grow_vessel_tree(rng, anatomy, root_xyz, side, root_radius, n_targets)
    position, parent, radius = airway.position_xyz, airway.parent, airway.radius
    offset = np.zeros_like(position)
    first_child = np.flatnonzero(parent == 0)
    axis = position[first_child[0]] - position[0] if len(first_child) else np.array([0.0, 0.0, 1.0])
    axis /= max(np.linalg.norm(axis), 1e-9)
    toward = np.asarray(toward_xyz, dtype=float) - position[0] + rng.normal(0, 1.0, 3)
    offset[0] = toward - (toward @ axis) * axis
    offset[0] /= max(np.linalg.norm(offset[0]), 1e-9)
    for node in range(1, len(parent)):
        direction = position[node] - position[parent[node]]
        direction /= max(np.linalg.norm(direction), 1e-9)
        side_vector = offset[parent[node]] - (offset[parent[node]] @ direction) * direction
        offset[node] = side_vector / max(np.linalg.norm(side_vector), 1e-9)
    outer = 0.85 * radius
    arteries = with_twigs(rng, anatomy, VesselTree(position + offset * (radius + outer + 0.4)[:, None], parent, radius))
    keep = np.flatnonzero((parent >= 0) & (radius >= smallest_bronchus))
    bronchi = Tubes(position[parent[keep]], position[keep], outer[keep], outer[keep])
    return arteries, bronchi
