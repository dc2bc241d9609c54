"""Rescore a detector's candidates with the graph model: features, graph, GNN, new Findings.

torch and torch_geometric are imported inside the functions: this module is light to import.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import MedcadError
from ..findings import Findings
from ..image import MedicalImage
from ..models.card import ModelCard
from .construction import EDGE_FEATURE_NAMES, CandidateGraph, build_graph
from .features import FEATURE_NAMES, candidate_features

DEFAULT_MODEL = "lung-nodule-gnn"


def gnn_card(model: str | ModelCard = DEFAULT_MODEL) -> ModelCard:
    """The rescorer's card, checked: a GNN whose features are the ones this code measures."""
    if isinstance(model, ModelCard):
        card = model
    else:
        from ..models.registry import find_model

        card = find_model(model)
    if card.family != "gnn":
        raise MedcadError(f"model '{card.name}' is a {card.family} model, not a graph rescorer")
    names = card.inference.get("features")
    if names is not None and tuple(names) != FEATURE_NAMES:
        raise MedcadError(f"model '{card.name}' was trained on other candidate features; retrain it "
                          "(python -m napari_medcad.core.training.gnn)")
    edges = card.inference.get("edge_features")
    if edges is not None and tuple(edges) != EDGE_FEATURE_NAMES:
        raise MedcadError(f"model '{card.name}' was trained on other edge attributes; retrain it "
                          "(python -m napari_medcad.core.training.gnn)")
    return card


def candidate_graph(findings: Findings, image: MedicalImage, probability: MedicalImage, lung_mask: MedicalImage,
                    labels: MedicalImage | None = None, k: int = 4) -> CandidateGraph:
    """Features of every finding and their k-nearest-neighbour graph in world mm."""
    graph = build_graph(candidate_features(findings, image, probability, lung_mask, labels), k=k, image=image)
    graph.scores["cnn"] = np.array([f.scores.get("cnn", f.probability) for f in findings], float)
    return graph


_NETWORKS: dict[tuple, Any] = {}


def _network(card: ModelCard):
    """The card's network (cached per weights file and its modification time)."""
    from ..models.loading import load_network

    key = (str(card.weights_path), card.weights_path.stat().st_mtime_ns if card.weights_path.exists() else 0,
           repr(card.architecture))
    if key not in _NETWORKS:
        try:
            _NETWORKS.clear()
            _NETWORKS[key] = load_network(card)
        except ImportError as err:
            raise MedcadError(f"the graph stage needs torch_geometric ({err})") from None
    return _NETWORKS[key]


def score_graph(graph: CandidateGraph, network) -> np.ndarray:
    """The network's probability for every node of ``graph``."""
    import torch

    if graph.n_nodes == 0:
        return np.zeros(0, float)
    if graph.edge_attr.shape[1] != len(EDGE_FEATURE_NAMES):
        raise MedcadError("the graph's edge attributes do not match the rescorer")
    with torch.inference_mode():
        logits = network(torch.from_numpy(np.ascontiguousarray(graph.features, np.float32)),
                         torch.from_numpy(np.ascontiguousarray(graph.edge_index, np.int64)),
                         torch.from_numpy(np.ascontiguousarray(graph.edge_attr, np.float32)))
        return torch.sigmoid(logits).double().numpy()


def rescore_with_graph(
    findings: Findings,
    image: MedicalImage,
    probability: MedicalImage,
    lung_mask: MedicalImage,
    labels: MedicalImage | None = None,
    model: str | ModelCard = DEFAULT_MODEL,
) -> tuple[Findings, CandidateGraph]:
    """:func:`rescore`, also returning the graph (with ``scores["cnn"]`` and ``scores["gnn"]``)."""
    card = gnn_card(model)
    started = time.perf_counter()
    k = int(card.inference.get("k_neighbours", 4))
    graph = candidate_graph(findings, image, probability, lung_mask, labels, k=k)
    gnn = score_graph(graph, _network(card)) if graph.n_nodes else np.zeros(0)
    graph.scores["gnn"] = gnn
    rescored = findings.copy()
    for finding, cnn, score in zip(rescored, graph.scores["cnn"], gnn):
        finding.scores = {**finding.scores, "cnn": float(cnn), "gnn": float(score)}
        finding.probability = float(score)
    rescored.provenance = {
        **rescored.provenance,
        "rescored_by": {"model": card.name, "model_version": card.version, "threshold": card.threshold,
                        "k_neighbours": k, "seconds": round(time.perf_counter() - started, 4)},
    }
    return rescored, graph


def rescore(
    findings: Findings,
    image: MedicalImage,
    probability: MedicalImage,
    lung_mask: MedicalImage,
    labels: MedicalImage | None = None,
    model: str | ModelCard = DEFAULT_MODEL,
) -> Findings:
    """A copy of ``findings`` whose probability is the graph model's score.

    Each finding keeps the detector's score in ``scores["cnn"]`` and gets ``scores["gnn"]``;
    ``probability`` becomes the GNN score (compare it with the GNN card's ``threshold``).
    ``image`` (HU), ``probability`` (the detector's map) and ``labels`` (its candidate masks) lie
    on the findings' image grid; ``lung_mask`` may lie on another grid (the model's).
    """
    return rescore_with_graph(findings, image, probability, lung_mask, labels, model)[0]
