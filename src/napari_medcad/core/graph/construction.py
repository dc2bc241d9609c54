"""The candidate graph: candidates are nodes, each joined to its k nearest candidates in world mm.

Distances are measured between ``centre_world_mm`` (LPS mm), never between voxel indices, so a
CT with 5 mm slices and 0.7 mm pixels gives the same graph as the same patient on an isotropic
grid.  Edges go both ways (a message passes from every neighbour), and carry the attributes the
GNN reads: the distance (scaled), a closeness weight, how well the edge follows the target
candidate's long axis (candidates strung along a vessel line up with the vessel), and how much
of the straight path between the two runs through dense tissue (an edge along the vessel tree:
consecutive cross-sections of one vessel are joined by vessel, an isolated nodule by air).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..image import MedicalImage
from .features import CandidateFeatures, dense_path_fraction

EDGE_FEATURE_NAMES = ("distance_20mm", "closeness", "axis_alignment", "dense_path_fraction")


@dataclass
class CandidateGraph:
    """Nodes (finding ids, world positions, features) and directed edges (source -> target)."""

    ids: np.ndarray  # (N,) finding ids
    positions_mm: np.ndarray  # (N, 3) LPS x, y, z
    features: np.ndarray  # (N, F) float32
    feature_names: tuple[str, ...]
    edge_index: np.ndarray  # (2, E) int64: row 0 source node, row 1 target node
    edge_attr: np.ndarray  # (E, len(EDGE_FEATURE_NAMES)) float32
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # per node, e.g. "cnn", "gnn"

    @property
    def n_nodes(self) -> int:
        return len(self.ids)

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def edge_lengths_mm(self) -> np.ndarray:
        source, target = self.edge_index
        return np.linalg.norm(self.positions_mm[source] - self.positions_mm[target], axis=1)


def knn_edges(positions_mm: np.ndarray, k: int, max_distance_mm: float | None = None) -> np.ndarray:
    """(2, E) edges joining every point to its ``k`` nearest others in world mm, both ways,
    without duplicates or self-loops; pairs further apart than ``max_distance_mm`` are left out."""
    from scipy.spatial import cKDTree

    positions = np.asarray(positions_mm, float).reshape(-1, 3)
    n = len(positions)
    if n < 2 or k < 1:
        return np.zeros((2, 0), np.int64)
    neighbours = min(int(k), n - 1)
    distances, indices = cKDTree(positions).query(positions, k=neighbours + 1)
    pairs = set()
    for i in range(n):
        for distance, j in zip(distances[i], indices[i]):
            if j == i or (max_distance_mm is not None and distance > max_distance_mm):
                continue
            pairs.add((int(j), i))
            pairs.add((i, int(j)))
    if not pairs:
        return np.zeros((2, 0), np.int64)
    return np.array(sorted(pairs), np.int64).T


def edge_attributes(positions_mm: np.ndarray, axes_world: np.ndarray, edge_index: np.ndarray,
                    image: MedicalImage | None = None) -> np.ndarray:
    """One row of EDGE_FEATURE_NAMES per edge; without an image the path term is 0."""
    source, target = edge_index
    offsets = positions_mm[source] - positions_mm[target]
    distance = np.linalg.norm(offsets, axis=1)
    unit = offsets / np.maximum(distance, 1e-9)[:, None]
    alignment = np.abs(np.sum(unit * axes_world[target], axis=1))
    dense = np.zeros(len(distance))
    if image is not None:
        fractions: dict[tuple[int, int], float] = {}
        for index, (a, b) in enumerate(zip(source, target)):
            key = (min(a, b), max(a, b))  # the same path both ways
            if key not in fractions:
                fractions[key] = dense_path_fraction(image, positions_mm[key[0]], positions_mm[key[1]])
            dense[index] = fractions[key]
    return np.column_stack([distance / 20.0, np.exp(-distance / 10.0), alignment, dense]).astype(np.float32)


def build_graph(features: CandidateFeatures, k: int = 4, max_distance_mm: float | None = None,
                image: MedicalImage | None = None) -> CandidateGraph:
    """The k-nearest-neighbour graph of the candidates described by ``features``; ``image`` (HU)
    gives the edges' dense-path term."""
    edges = knn_edges(features.positions_mm, k, max_distance_mm)
    attributes = (edge_attributes(features.positions_mm, features.axes_world, edges, image) if edges.shape[1]
                  else np.zeros((0, len(EDGE_FEATURE_NAMES)), np.float32))
    return CandidateGraph(ids=np.asarray(features.ids, int), positions_mm=np.asarray(features.positions_mm, float),
                          features=np.asarray(features.values, np.float32), feature_names=tuple(features.names),
                          edge_index=edges, edge_attr=attributes)
