"""The candidate graph as napari layers: nodes as Points, edges as Vectors, on the image's grid.

Same conventions as :mod:`findings_layers`: data in the image's voxel index (z, y, x) with the
image's ``Geometry.napari_transform`` (napari world = LPS mm in z, y, x), ``metadata["medcad"]``
naming the role.  Nodes are filled by the GNN score and ringed by how much the GNN changed the
CNN's score (blue: lowered, red: raised); each undirected edge is drawn once, coloured by the
mean GNN score of its two ends (or by their mean change).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import MedcadError
from ..core.findings import Findings
from ..core.graph import CandidateGraph
from ..core.image import MedicalImage
from .findings_layers import PROBABILITY_COLORMAP
from .layers import META_KEY, layer_metadata

ROLE_GRAPH_NODES = "graph_nodes"
ROLE_GRAPH_EDGES = "graph_edges"
#: diverging colormap for the change (GNN - CNN), limits -1..1
CHANGE_COLORMAP = "bwr"
#: node diameter on screen (mm)
NODE_MM = 8.0


def _scores(graph: CandidateGraph, findings: Findings | None) -> tuple[np.ndarray, np.ndarray]:
    """(cnn, gnn) per node: the graph's own, else the findings' ``scores``."""
    if "cnn" in graph.scores and "gnn" in graph.scores:
        return np.asarray(graph.scores["cnn"], float), np.asarray(graph.scores["gnn"], float)
    if findings is None:
        raise MedcadError("the graph carries no scores: pass the rescored findings")
    by_id = {f.id: f for f in findings}
    try:
        rows = [by_id[int(i)].scores for i in graph.ids]
        return np.array([r["cnn"] for r in rows], float), np.array([r["gnn"] for r in rows], float)
    except KeyError as err:
        raise MedcadError(f"the findings lack the graph's scores ({err})") from None


def graph_layer_data(
    graph: CandidateGraph,
    image: MedicalImage,
    findings: Findings | None = None,
    *,
    source_layer: str = "",
    model: str = "",
    model_version: str = "",
    edge_color_by: str = "gnn",
) -> list[tuple[Any, dict, str]]:
    """LayerDataTuples (edges, then nodes) of ``graph`` on ``image``'s grid."""
    import pandas as pd

    if edge_color_by not in ("gnn", "change"):
        raise MedcadError(f"edges are coloured by 'gnn' or 'change', not '{edge_color_by}'")
    if image.ndim != 3:
        raise MedcadError("the candidate graph is drawn on 3-D images")
    source = source_layer or image.name
    transform = image.geometry.napari_transform()
    cnn, gnn = _scores(graph, findings)
    change = gnn - cnn
    nodes = image.world_to_index(graph.positions_mm).reshape(-1, 3) if graph.n_nodes else np.zeros((0, 3))
    meta = {"model": model, "model_version": model_version, "source_layer": source}

    source_nodes, target_nodes = graph.edge_index if graph.n_edges else (np.zeros(0, int), np.zeros(0, int))
    once = source_nodes < target_nodes  # each undirected edge once
    first, second = source_nodes[once], target_nodes[once]
    vectors = np.stack([nodes[first], nodes[second] - nodes[first]], axis=1) if len(first) else np.zeros((0, 2, 3))
    lengths = np.linalg.norm(graph.positions_mm[first] - graph.positions_mm[second], axis=1) if len(first) else []
    edge_features = pd.DataFrame({
        "source_id": graph.ids[first].astype(int), "target_id": graph.ids[second].astype(int),
        "length_mm": np.asarray(lengths, float), "gnn": 0.5 * (gnn[first] + gnn[second]),
        "change": 0.5 * (change[first] + change[second]),
    })
    edges = (vectors, {
        "name": f"{source} graph edges", "ndim": 3, "features": edge_features,
        "edge_color": edge_color_by, "edge_colormap": PROBABILITY_COLORMAP if edge_color_by == "gnn" else CHANGE_COLORMAP,
        "edge_contrast_limits": (0.0, 1.0) if edge_color_by == "gnn" else (-1.0, 1.0),
        "edge_width": 0.4, "vector_style": "line", "projection_mode": "fade", "opacity": 0.8,
        "metadata": layer_metadata(image, role=ROLE_GRAPH_EDGES, edge_color_by=edge_color_by, **meta), **transform,
    }, "vectors")
    if not len(first):
        edges[1].pop("edge_color")  # napari cannot colour zero vectors by a feature
        edges[1].pop("edge_colormap")
        edges[1].pop("edge_contrast_limits")

    node_features = pd.DataFrame({"id": graph.ids.astype(int), "cnn": cnn, "gnn": gnn, "change": change})
    spacing = float(np.mean(image.geometry.spacing_zyx[-2:]))
    points = (nodes, {
        "name": f"{source} graph nodes", "ndim": 3, "features": node_features, "size": NODE_MM / spacing,
        "face_color": "gnn", "face_colormap": PROBABILITY_COLORMAP, "face_contrast_limits": (0.0, 1.0),
        "border_color": "change", "border_colormap": CHANGE_COLORMAP, "border_contrast_limits": (-1.0, 1.0),
        "border_width": 0.3, "text": {"string": "{gnn:.2f}", "color": "white", "size": 8, "anchor": "lower_right"},
        "projection_mode": "rescale_linear",  # a node shows, shrinking, on the slices near it
        "metadata": layer_metadata(image, role=ROLE_GRAPH_NODES, **meta), **transform,
    }, "points")
    if not graph.n_nodes:
        for key in ("face_color", "face_colormap", "face_contrast_limits", "border_color", "border_colormap",
                    "border_contrast_limits", "text"):
            points[1].pop(key)
    return [edges, points]


def graph_layers_of(layers, source_layer: str) -> list:
    """The candidate-graph layers made for the layer named ``source_layer``."""
    found = []
    for layer in layers:
        info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
        if info.get("role") in (ROLE_GRAPH_NODES, ROLE_GRAPH_EDGES) and info.get("source_layer") == source_layer:
            found.append(layer)
    return found


def add_graph_layers(viewer, layer_data: list[tuple[Any, dict, str]]) -> list:
    """Add the graph's layers to ``viewer``; returns them (edges, nodes)."""
    return [getattr(viewer, f"add_{kind}")(data, **kwargs) for data, kwargs, kind in layer_data]
