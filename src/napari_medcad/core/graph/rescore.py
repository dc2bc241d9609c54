"""Rescore a detector's candidates with the graph model: features, graph, GNN, new Findings.

torch and torch_geometric are imported inside the functions: this module is light to import.
"""

from __future__ import annotations

import dataclasses
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
    if names is not None and tuple(names) != node_feature_names(card):
        raise MedcadError(f"model '{card.name}' was trained on other candidate features; retrain it "
                          "(python -m napari_medcad.core.training.gnn)")
    edges = card.inference.get("edge_features")
    if edges is not None and tuple(edges) != EDGE_FEATURE_NAMES:
        raise MedcadError(f"model '{card.name}' was trained on other edge attributes; retrain it "
                          "(python -m napari_medcad.core.training.gnn)")
    return card


def embedding_spec(card: ModelCard):
    """The rescorer's ``cnn_embedding`` (the detector's features it reads), or None."""
    from ..inference.embedding import EmbeddingSpec

    return EmbeddingSpec.from_card(card.inference)


def node_feature_names(card: ModelCard) -> tuple[str, ...]:
    """The node features a rescorer card reads: the measured ones, then the CNN's embedding."""
    spec = embedding_spec(card)
    return FEATURE_NAMES + (spec.names() if spec is not None else ())


def candidate_graph(findings: Findings, image: MedicalImage, probability: MedicalImage, lung_mask: MedicalImage,
                    labels: MedicalImage | None = None, k: int = 4, embeddings: np.ndarray | None = None) -> CandidateGraph:
    """Features of every finding and their k-nearest-neighbour graph in world mm.

    ``embeddings`` (N, C), one row per finding in order, are appended to the measured features
    as ``cnn_embedding_0..C-1``.
    """
    features = candidate_features(findings, image, probability, lung_mask, labels)
    if embeddings is not None:
        from ..inference.embedding import embedding_names

        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(features.ids):
            raise MedcadError(f"candidate embeddings of shape {embeddings.shape} for {len(features.ids)} candidates")
        features = dataclasses.replace(features, values=np.concatenate([features.values, embeddings], axis=1),
                                       names=features.names + embedding_names(embeddings.shape[1]))
    graph = build_graph(features, k=k, image=image)
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


def detector_embeddings(findings: Findings, image: MedicalImage, card: ModelCard, prepared: MedicalImage | None = None,
                        network=None, device: str = "cpu") -> np.ndarray:
    """The rescorer's ``cnn_embedding`` of every finding, from its detector (``inference.detector``).

    ``prepared`` (the detector's input for ``image``) and ``network`` (the detector's, loaded)
    save preparing and loading again when the caller has them.
    """
    from ..inference.embedding import candidate_embeddings

    spec = embedding_spec(card)
    if spec is None:
        raise MedcadError(f"model '{card.name}' reads no detector embedding")
    if prepared is None or network is None:
        from ..inference.run import _split_pipeline
        from ..models.loading import load_network
        from ..models.registry import find_model

        detector = find_model(str(card.inference.get("detector", "lung-nodule-ct")))
        if prepared is None:
            prepared = _split_pipeline(detector)[0].run(image, device="cpu")
        if network is None:
            network = load_network(detector)
    items = list(findings)
    return candidate_embeddings(network, prepared, np.array([f.centre_world_mm for f in items], float),
                                [f.diameter_mm for f in items], spec, device=device)


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
    prepared: MedicalImage | None = None,
    detector_network=None,
    device: str = "cpu",
) -> tuple[Findings, CandidateGraph]:
    """:func:`rescore`, also returning the graph (with ``scores["cnn"]`` and ``scores["gnn"]``).

    A card that reads the detector's embedding gets it from :func:`detector_embeddings`;
    ``prepared``, ``detector_network`` and ``device`` are passed on (run_model has them).
    """
    card = gnn_card(model)
    started = time.perf_counter()
    k = int(card.inference.get("k_neighbours", 4))
    embeddings = None
    if embedding_spec(card) is not None:
        embeddings = detector_embeddings(findings, image, card, prepared=prepared, network=detector_network,
                                         device=device)
    graph = candidate_graph(findings, image, probability, lung_mask, labels, k=k, embeddings=embeddings)
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
