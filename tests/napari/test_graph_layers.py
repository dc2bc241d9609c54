"""The candidate graph as layers in a real viewer: nodes and edges at the candidates' world
positions over the image (oblique, anisotropic grid), coloured by GNN score and by its change."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.findings import Finding, Findings
from napari_medcad.core.graph import CandidateGraph, knn_edges
from napari_medcad.core.image import Geometry, MedicalImage, lps_to_napari_world
from napari_medcad.napari.graph_layers import ROLE_GRAPH_EDGES, ROLE_GRAPH_NODES, add_graph_layers, graph_layer_data
from napari_medcad.napari.layers import META_KEY, image_layer_data

pytestmark = pytest.mark.viewer


def oblique_case():
    c, s = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
    direction = np.array([[c, s, 0], [s, -c, 0], [0, 0, -1]])
    geometry = Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 80.0), tuple(direction.ravel()))
    image = MedicalImage(np.zeros((12, 40, 50), np.int16), geometry, modality="CT", name="scan")
    index = np.array([[2, 10, 12], [3, 14, 15], [4, 18, 18], [9, 30, 40]], float)
    world = geometry.index_to_world(index)
    findings = Findings(geometry=geometry, shape_zyx=image.spatial_shape)
    cnn = [0.8, 0.7, 0.75, 0.6]
    gnn = [0.1, 0.05, 0.2, 0.95]  # the chain goes down, the isolated one up
    for number, (centre, i, a, b) in enumerate(zip(world, index, cnn, gnn), start=1):
        findings.add(Finding(id=number, label="nodule", probability=b, centre_world_mm=tuple(centre),
                             centre_index_zyx=tuple(i), diameter_mm=5.0, scores={"cnn": a, "gnn": b}))
    edges = knn_edges(world, k=1)
    graph = CandidateGraph(ids=np.arange(1, 5), positions_mm=world, features=np.zeros((4, 1), np.float32),
                           feature_names=("x",), edge_index=edges, edge_attr=np.zeros((edges.shape[1], 4), np.float32))
    return image, findings, graph


def test_graph_layers_sit_on_the_candidates_in_world_mm(make_napari_viewer):
    viewer = make_napari_viewer()
    image, findings, graph = oblique_case()
    data, kwargs, _ = image_layer_data(image)
    image_layer = viewer.add_image(data, **kwargs)
    edges_layer, nodes_layer = add_graph_layers(viewer, graph_layer_data(graph, image, findings, source_layer="scan"))
    assert nodes_layer.metadata[META_KEY]["role"] == ROLE_GRAPH_NODES
    assert edges_layer.metadata[META_KEY]["role"] == ROLE_GRAPH_EDGES
    expected = lps_to_napari_world(graph.positions_mm)
    nodes_world = np.array([nodes_layer.data_to_world(p) for p in nodes_layer.data])
    assert np.allclose(nodes_world, expected, atol=1e-6)
    # the node lies where the image layer shows the candidate's voxel
    voxel_world = np.array([image_layer.data_to_world(f.centre_index_zyx) for f in findings])
    assert np.allclose(nodes_world, voxel_world, atol=1e-6)
    # every undirected edge once, from one candidate to the other, in world mm
    pairs = {tuple(sorted(p)) for p in graph.edge_index.T.tolist()}
    assert len(edges_layer.data) == len(pairs)
    for (start, projection), row in zip(edges_layer.data, edges_layer.features.itertuples()):
        a, b = int(row.source_id) - 1, int(row.target_id) - 1
        assert np.allclose(edges_layer.data_to_world(start), expected[a], atol=1e-6)
        assert np.allclose(edges_layer.data_to_world(start + projection), expected[b], atol=1e-6)
        assert row.length_mm == pytest.approx(np.linalg.norm(graph.positions_mm[a] - graph.positions_mm[b]))
    # colours: the face follows the GNN score, the border its change from the CNN's
    assert list(nodes_layer.features["gnn"]) == [0.1, 0.05, 0.2, 0.95]
    assert np.allclose(nodes_layer.features["change"], np.array([0.1, 0.05, 0.2, 0.95]) - [0.8, 0.7, 0.75, 0.6])
    faces, borders = nodes_layer.face_color, nodes_layer.border_color
    assert not np.allclose(faces[3], faces[1])
    assert borders[3][0] > borders[3][2] and borders[1][2] > borders[1][0]  # raised: red; lowered: blue
    viewer.dims.set_point(0, float(expected[3][0]))
    viewer.screenshot(canvas_only=True)  # draws without errors


def test_graph_layers_from_findings_scores_and_edge_colouring(make_napari_viewer):
    viewer = make_napari_viewer()
    image, findings, graph = oblique_case()
    bare = CandidateGraph(ids=graph.ids, positions_mm=graph.positions_mm, features=graph.features,
                          feature_names=graph.feature_names, edge_index=graph.edge_index, edge_attr=graph.edge_attr)
    edges_layer, nodes_layer = add_graph_layers(viewer, graph_layer_data(bare, image, findings, edge_color_by="change"))
    assert np.allclose(nodes_layer.features["cnn"], [0.8, 0.7, 0.75, 0.6])
    assert (edges_layer.features["change"] < 0).all()  # both chain edges join lowered candidates
    with pytest.raises(MedcadError, match="pass the rescored findings"):
        graph_layer_data(bare, image)
    with pytest.raises(MedcadError, match="coloured by"):
        graph_layer_data(graph, image, edge_color_by="size")
    empty = CandidateGraph(ids=np.zeros(0, int), positions_mm=np.zeros((0, 3)), features=np.zeros((0, 1), np.float32),
                           feature_names=("x",), edge_index=np.zeros((2, 0), np.int64), edge_attr=np.zeros((0, 4), np.float32),
                           scores={"cnn": np.zeros(0), "gnn": np.zeros(0)})
    edges_layer, nodes_layer = add_graph_layers(viewer, graph_layer_data(empty, image))
    assert len(nodes_layer.data) == 0 and len(edges_layer.data) == 0
