"""Candidate graphs: the detector's candidates as nodes of a k-nearest-neighbour graph in world
mm, rescored by a graph neural network (torch_geometric) so vessel cross-sections strung along a
vessel score low and isolated round nodules stay high.

``rescore(findings, image, probability, lung_mask, labels)`` is the one call; the modules here
import NumPy and SciPy only, torch and torch_geometric are imported when a network runs.
"""

from .construction import EDGE_FEATURE_NAMES, CandidateGraph, build_graph, knn_edges
from .features import FEATURE_NAMES, CandidateFeatures, candidate_features
from .rescore import candidate_graph, gnn_card, rescore, rescore_with_graph, score_graph

__all__ = [
    "EDGE_FEATURE_NAMES",
    "FEATURE_NAMES",
    "CandidateFeatures",
    "CandidateGraph",
    "build_graph",
    "candidate_features",
    "candidate_graph",
    "gnn_card",
    "knn_edges",
    "rescore",
    "rescore_with_graph",
    "score_graph",
]
