"""The candidate graph: kNN in world mm on anisotropic and oblique grids, candidate features on a
synthetic lung, GNN scoring, the built-in rescorer (safe loading, chain vs isolated nodule) and
its training recipe (seeded, deterministic) on synthetic candidates."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.findings import Finding, Findings
from napari_medcad.core.graph import (
    FEATURE_NAMES,
    build_graph,
    candidate_features,
    candidate_graph,
    knn_edges,
    rescore,
    rescore_with_graph,
    score_graph,
)
from napari_medcad.core.image import Geometry, MedicalImage

LUNG_HU, TISSUE_HU = -850.0, 40.0
#: the vessel's candidate segments: their length and the distance between their starts (mm)
SEGMENT_MM, PITCH_MM = 10.0, 13.0


def brute_force_knn(positions: np.ndarray, k: int) -> set[tuple[int, int]]:
    pairs = set()
    for i, p in enumerate(positions):
        distances = np.linalg.norm(positions - p, axis=1)
        distances[i] = np.inf
        for j in np.argsort(distances, kind="stable")[:k]:
            pairs |= {(int(i), int(j)), (int(j), int(i))}
    return pairs


def test_knn_is_in_world_mm_not_voxels_with_anisotropic_spacing():
    # 0.5 mm pixels, 5 mm slices: one slice up (5 mm) is further than six pixels across (3 mm)
    geometry = Geometry((0.5, 0.5, 5.0), (10.0, -20.0, 30.0), tuple(np.eye(3).ravel()))
    # node 4 sits beside node 1 (2.5 mm), so node 1 has a nearer neighbour than node 0 too
    index_zyx = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 6], [0, 40, 0], [1, 0, 5]], float)
    world = geometry.index_to_world(index_zyx)
    edges = knn_edges(world, k=1)
    pairs = set(map(tuple, edges.T.tolist()))
    assert (2, 0) in pairs and (0, 2) in pairs  # world-nearest: 3 mm apart
    assert (1, 0) not in pairs  # voxel-nearest (one index step) but 5 mm away
    assert pairs == brute_force_knn(world, 1)
    # an index-space graph would have joined 0 and 1 instead: the test can tell the two apart
    assert (1, 0) in brute_force_knn(index_zyx, 1)


def test_knn_edges_are_symmetric_without_self_loops_and_respect_a_cutoff():
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 100, (30, 3))
    edges = knn_edges(positions, k=3)
    pairs = set(map(tuple, edges.T.tolist()))
    assert pairs == brute_force_knn(positions, 3)
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    assert len(pairs) == edges.shape[1]  # no duplicates
    short = knn_edges(positions, k=3, max_distance_mm=15.0)
    lengths = np.linalg.norm(positions[short[0]] - positions[short[1]], axis=1)
    assert short.shape[1] < edges.shape[1] and lengths.max() <= 15.0
    assert knn_edges(positions[:1], k=3).shape == (2, 0)
    assert knn_edges(np.zeros((0, 3)), k=3).shape == (2, 0)


def oblique_geometry() -> Geometry:
    c, s = np.cos(np.deg2rad(25)), np.sin(np.deg2rad(25))
    direction = np.array([[c, s, 0], [s, -c, 0], [0, 0, -1]])
    return Geometry((0.7, 0.9, 2.5), (12.0, -40.0, 80.0), tuple(direction.ravel()))


def synthetic_lung(geometry: Geometry, shape=(48, 120, 140), chain=4, seed=0):
    """A box of aerated lung inside tissue, a straight vessel along y carrying ``chain`` candidate
    segments, and an isolated spherical nodule; candidates as Findings with masks and a CNN map."""
    rng = np.random.default_rng(seed)
    index = np.indices(shape, dtype=float)  # z, y, x
    spacing = np.asarray(geometry.spacing_zyx)
    mm = [index[a] * spacing[a] for a in range(3)]  # mm along the array axes
    extent = (np.asarray(shape) - 1) * spacing
    lungs = np.ones(shape, bool)
    margin = np.array([6.0, 8.0, 8.0])
    for a in range(3):
        lungs &= (mm[a] >= margin[a]) & (mm[a] <= extent[a] - margin[a])
    hu = np.where(lungs, LUNG_HU, TISSUE_HU).astype(np.float32)
    vessel_centre = np.array([0.5 * extent[0], 0.0, 0.30 * extent[2]])
    vessel = ((mm[0] - vessel_centre[0]) ** 2 + (mm[2] - vessel_centre[2]) ** 2 <= 2.2**2) & lungs
    vessel |= ((mm[0] - vessel_centre[0]) ** 2 + (mm[2] - vessel_centre[2]) ** 2 <= 2.2**2) & ~lungs
    nodule_centre = np.array([0.5 * extent[0], 0.5 * extent[1], 0.70 * extent[2]])
    nodule = sum((m - c) ** 2 for m, c in zip(mm, nodule_centre)) <= 4.0**2
    hu[vessel | nodule] = TISSUE_HU
    hu += rng.normal(0, 10, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint16)
    probability = np.zeros(shape, np.float32)
    findings = Findings(geometry=geometry, shape_zyx=shape)
    segments = []
    for number in range(chain):
        y0 = 0.15 * extent[1] + number * PITCH_MM
        segments.append(vessel & (mm[1] >= y0) & (mm[1] <= y0 + SEGMENT_MM))
    from scipy import ndimage

    for number, body in enumerate(segments + [nodule], start=1):
        # like the CNN's regions at a low threshold: the object and a 1.5 mm rim of air around it
        region = ndimage.distance_transform_edt(~body, sampling=spacing) <= 1.5
        if number <= len(segments):
            region &= (mm[1] >= mm[1][body].min()) & (mm[1] <= mm[1][body].max())
        labels[region] = number
        probability[region] = 0.3
        probability[body] = 0.6
        voxels = np.argwhere(region)
        centre = voxels.mean(axis=0)
        lo, hi = voxels.min(axis=0), voxels.max(axis=0) + 1
        volume = float(region.sum() * np.prod(spacing))
        findings.add(Finding(
            id=number, label="nodule", probability=0.6, centre_world_mm=tuple(geometry.index_to_world(centre)),
            centre_index_zyx=tuple(centre), diameter_mm=(6 * volume / np.pi) ** (1 / 3), volume_mm3=volume,
            bbox_index_zyx=(tuple(lo), tuple(hi)), mask_value=number, scores={"cnn": 0.6},
        ))
    image = MedicalImage(hu, geometry, modality="CT", name="toy")
    return (findings, image, image.with_array(probability, modality="OT"), image.with_array(lungs.astype(np.uint8), modality="SEG"),
            image.with_array(labels, modality="SEG"), nodule_centre)


@pytest.fixture(scope="module")
def toy():
    return synthetic_lung(oblique_geometry())


def test_candidate_graph_measures_world_mm_on_an_oblique_anisotropic_grid(toy):
    findings, image, probability, lungs, labels, _ = toy
    graph = candidate_graph(findings, image, probability, lungs, labels, k=2)
    world = np.array([f.centre_world_mm for f in findings])
    assert np.allclose(graph.positions_mm, world)
    assert set(map(tuple, graph.edge_index.T.tolist())) == brute_force_knn(world, 2)
    source, target = graph.edge_index
    # the lengths agree with positions recomputed from voxel indices through the geometry
    from_index = image.index_to_world(np.array([f.centre_index_zyx for f in findings]))
    assert np.allclose(graph.edge_lengths_mm(), np.linalg.norm(from_index[source] - from_index[target], axis=1))
    # chain members are PITCH_MM apart along the vessel, whatever the 0.7 / 0.9 / 2.5 mm voxels
    chain = [i for i in range(len(findings) - 1)]
    gaps = [np.linalg.norm(world[i + 1] - world[i]) for i in chain[:-1]]
    assert np.allclose(gaps, PITCH_MM, atol=1.0)
    assert graph.features.shape == (len(findings), len(FEATURE_NAMES))
    assert graph.edge_attr.shape == (graph.n_edges, 4) and np.isfinite(graph.edge_attr).all()
    assert np.allclose(graph.scores["cnn"], 0.6)


def test_features_tell_a_vessel_segment_from_an_isolated_nodule(toy):
    findings, image, probability, lungs, labels, nodule_centre = toy
    features = candidate_features(findings, image, probability, lungs, labels)
    table = dict(zip(FEATURE_NAMES, features.values.T))
    vessel, nodule = slice(0, len(findings) - 1), -1
    assert table["dense_border_faces"][nodule] == 0 and (table["dense_border_faces"][vessel] >= 2).all()
    assert (table["log_dense_extent"][vessel] > table["log_dense_extent"][nodule] + 0.5).all()
    assert (table["elongation"][vessel] > table["elongation"][nodule]).all()
    assert table["elongation"][nodule] < 1.3  # a sphere on 0.7 x 0.9 x 2.5 mm voxels is still round
    assert 8.0 < table["diameter_mm"][nodule] < 12.0  # 8 mm and a 1.5 mm rim
    assert abs(table["p90_hu"][nodule] - TISSUE_HU) < 25 and table["shell_mean_hu"][nodule] < -800
    assert LUNG_HU < table["mean_hu"][nodule] < TISSUE_HU  # tissue and its rim of air
    assert np.allclose(table["cnn_peak"], 0.6)
    means = [probability.array[labels.array == f.mask_value].mean() for f in findings]
    assert np.allclose(table["cnn_mean"], means) and max(means) < 0.55  # the rim's 0.3 counts
    # the nodule's distance to the lung wall: its centre to the nearest face of the lung box
    spacing = np.asarray(image.geometry.spacing_zyx)
    extent = (np.asarray(image.spatial_shape) - 1) * spacing
    margin = np.array([6.0, 8.0, 8.0])
    expected = min(np.min(nodule_centre - margin), np.min(extent - margin - nodule_centre))
    assert abs(table["lung_wall_mm"][nodule] - expected) < 3.0
    # the nearest candidate of a chain member is its neighbour PITCH_MM away; the nodule's is far
    assert np.allclose(table["nearest_candidate_mm"][vessel], PITCH_MM, atol=1.0)
    assert table["nearest_candidate_mm"][nodule] > 20
    # chain links: each vessel segment is joined to its neighbours through the vessel, the nodule to none
    assert list(table["vessel_neighbours"]) == [1, 2, 2, 1, 0]
    # a ball curves every way, a vessel not along itself (on the oblique 0.7 x 0.9 x 2.5 mm grid)
    assert (table["blobness"][nodule] > 3 * table["blobness"][vessel]).all()
    assert np.isfinite(features.values).all()


def test_blobness_finds_a_ball_on_a_vessel_and_does_not_depend_on_the_voxel_size():
    from napari_medcad.core.graph.features import blobness

    def scene(spacing_zyx):
        shape = np.round(np.array([40.0, 40.0, 40.0]) / spacing_zyx).astype(int)
        mm = [np.arange(n) * s for n, s in zip(shape, spacing_zyx)]
        z, y, x = np.meshgrid(*mm, indexing="ij")
        hu = np.full(shape, LUNG_HU, np.float32)
        hu[(z - 20) ** 2 + (x - 20) ** 2 <= 2.0**2] = TISSUE_HU  # a vessel along y through the middle
        ball = (z - 20) ** 2 + (y - 20) ** 2 + (x - 24) ** 2 <= 4.0**2  # a 8 mm nodule touching it
        with_ball = hu.copy()
        with_ball[ball] = TISSUE_HU
        noise = np.random.default_rng(0).normal(0, 20, shape).astype(np.float32)  # scanner noise
        return hu + noise, with_ball + noise, np.array([20.0, 20.0, 24.0]) / spacing_zyx

    values = {}
    for spacing in ((1.0, 1.0, 1.0), (2.5, 0.7, 0.7)):
        spacing = np.asarray(spacing)
        vessel_only, with_ball, centre = scene(spacing)
        values[tuple(spacing)] = (blobness(with_ball, spacing, centre),
                                  blobness(vessel_only, spacing, np.array([20.0, 20.0, 20.0]) / spacing))
    for ball_value, vessel_value in values.values():
        assert ball_value > 3 * vessel_value
    (iso_ball, _), (aniso_ball, _) = values.values()
    assert abs(iso_ball - aniso_ball) < 0.25 * iso_ball  # measured in mm, not voxels


def test_blobness_is_the_definition_computed_on_the_whole_crop():
    """The per-axis passes cut to the centre's neighbourhood give exactly what filtering the whole
    crop with ndimage.gaussian_filter gives (the values the GNN was trained on)."""
    from scipy import ndimage

    from napari_medcad.core.graph import features

    def reference(hu, spacing, centre_index):
        spacing = np.asarray(spacing, float)
        reach = np.ceil((features.BLOB_NEAR_MM + 3.0 * max(features.BLOB_SCALES_MM)) / spacing).astype(int)
        centre = np.round(np.asarray(centre_index, float)).astype(int)
        low, high = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, hu.shape)
        crop = np.clip(hu[tuple(slice(a, b) for a, b in zip(low, high))].astype(np.float32), *features.BLOB_HU_RANGE)
        near_voxels = np.ceil(features.BLOB_NEAR_MM / spacing).astype(int)
        local = np.clip(centre - low, 0, np.array(crop.shape) - 1)
        near = tuple(slice(max(0, c - k), c + k + 1) for c, k in zip(local, near_voxels))
        best = 0.0
        for scale_mm in features.BLOB_SCALES_MM:
            hessian = np.empty((*crop[near].shape, 3, 3), np.float32)
            for i in range(3):
                for j in range(i, 3):
                    order = [0, 0, 0]
                    order[i] += 1
                    order[j] += 1
                    second = ndimage.gaussian_filter(crop, scale_mm / spacing, order=order)[near] / (spacing[i] * spacing[j])
                    hessian[..., i, j] = hessian[..., j, i] = second
            weakest = np.linalg.eigvalsh(hessian)[..., 2]
            best = max(best, float(np.max(np.where(weakest < 0, -weakest * scale_mm**2, 0.0))))
        return best

    rng = np.random.default_rng(5)
    field = ndimage.gaussian_filter(rng.normal(0, 1, (50, 70, 70)).astype(np.float32), 2.0)
    hu = (-600 + 300 * field / field.std()).astype(np.int16)  # lumps of tissue in lung, HU -1500..300
    values = []
    for _ in range(12):
        spacing = np.array([rng.choice([0.7, 1.25, 2.5, 5.0]), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)])
        centre = rng.uniform([-1, -1, -1], [51, 71, 71])
        values.append(features.blobness(hu, spacing, centre))
        assert values[-1] == reference(hu, spacing, centre)
    assert sum(v > 10 for v in values) >= 6  # the comparison is not of zeros


def test_features_without_masks_use_the_finding_sphere(toy):
    findings, image, probability, lungs, _, _ = toy
    with_masks = candidate_features(findings, image, probability, lungs, None)
    assert with_masks.values.shape == (len(findings), len(FEATURE_NAMES)) and np.isfinite(with_masks.values).all()
    with pytest.raises(MedcadError, match="grid"):
        candidate_features(findings, image, probability.with_array(np.zeros((4, 4, 4), np.float32)), lungs)


def small_network():
    import torch

    from napari_medcad.core.models.networks import build

    torch.manual_seed(0)
    return build({"name": "medcad:CandidateGraphAttention", "params": {"in_features": len(FEATURE_NAMES), "hidden": 8}}).eval()


def test_gnn_scores_every_node_of_any_graph(toy):
    import torch

    findings, image, probability, lungs, labels, _ = toy
    network = small_network()
    graph = candidate_graph(findings, image, probability, lungs, labels, k=3)
    # standardised features, as training sets them: raw HU and HU/mm2 would saturate the untrained net
    features = torch.from_numpy(graph.features.astype(np.float32))
    network.set_normalisation(features.mean(0), features.std(0) + 1.0)
    scores = score_graph(graph, network)
    assert scores.shape == (graph.n_nodes,) and ((scores > 0) & (scores < 1)).all()
    single = build_graph(candidate_features(Findings(items=[findings.items[-1]], geometry=findings.geometry),
                                            image, probability, lungs, labels))
    assert single.n_edges == 0 and score_graph(single, network).shape == (1,)
    empty = candidate_graph(Findings(geometry=findings.geometry), image, probability, lungs, labels)
    assert empty.n_nodes == 0 and score_graph(empty, network).shape == (0,)
    # messages pass along edges: moving a neighbour changes a node's score, an isolated node's does not
    moved = candidate_graph(findings, image, probability, lungs, labels, k=3)
    moved.features[0, FEATURE_NAMES.index("mean_hu")] += 500
    changed = np.abs(score_graph(moved, network) - scores) > 1e-6
    neighbours_of_0 = set(graph.edge_index[1][graph.edge_index[0] == 0].tolist())
    assert changed[0] and all(changed[j] for j in neighbours_of_0)


def test_builtin_rescorer_loads_safely_and_is_listed():
    import torch

    from napari_medcad.commands.models import describe_models
    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.models.registry import find_model

    card = find_model("lung-nodule-gnn")
    assert card.family == "gnn" and card.inference["detector"] == "lung-nodule-ct"
    assert tuple(card.inference["features"]) == FEATURE_NAMES
    assert card.provenance["seed"] and card.provenance["epochs"] > 0 and not card.provenance["untrained"]
    state = torch.load(card.weights_path, map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "feature_mean" in state
    network = load_network(card)
    assert torch.equal(network.feature_std, state["feature_std"])
    assert any(row["name"] == "lung-nodule-gnn" and row["family"] == "gnn" for row in describe_models())


def test_rescore_keeps_the_cnn_score_and_sets_the_gnn_score(toy):
    findings, image, probability, lungs, labels, _ = toy
    rescored, graph = rescore_with_graph(findings, image, probability, lungs, labels)
    assert [f.id for f in rescored] == [f.id for f in findings]
    for before, after, gnn in zip(findings, rescored, graph.scores["gnn"]):
        assert after.scores["cnn"] == before.probability == 0.6
        assert after.probability == after.scores["gnn"] == pytest.approx(gnn)
    assert all(f.probability == 0.6 and "gnn" not in f.scores for f in findings)  # the input is untouched
    assert rescored.provenance["rescored_by"]["model"] == "lung-nodule-gnn"
    assert len(rescore(Findings(geometry=findings.geometry), image, probability, lungs, labels)) == 0
    with pytest.raises(MedcadError, match="not a graph rescorer"):
        rescore(findings, image, probability, lungs, labels, model="lung-nodule-ct")


def test_trained_rescorer_ranks_an_isolated_nodule_above_a_vessel_chain():
    """Same CNN score everywhere: only shape, surroundings and the graph tell them apart.  The
    chain's inner links (a vessel on both sides) score low; its free end looks like a nodule on
    a vessel and is not judged here."""
    for geometry in (oblique_geometry(), Geometry((0.8, 0.8, 1.25), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))):
        findings, image, probability, lungs, labels, _ = synthetic_lung(geometry, chain=5, seed=1)
        rescored, graph = rescore_with_graph(findings, image, probability, lungs, labels)
        links = graph.features[:, FEATURE_NAMES.index("vessel_neighbours")]
        inner = [f.probability for f, n in zip(rescored, links) if n >= 2]
        nodule = rescored.items[-1].probability
        assert len(inner) == 3 and links[-1] == 0
        assert nodule > 0.5 > max(inner), (nodule, [f.probability for f in rescored])
        assert nodule > max(inner) + 0.3


def test_core_graph_import_does_not_import_torch():
    code = ("import sys, napari_medcad.core, napari_medcad.core.graph, napari_medcad.core.training.gnn; "
            "sys.exit(int('torch' in sys.modules or 'torch_geometric' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def fake_case(seed: int):
    """A CandidateCase as the CNN stage would leave it: a toy lung whose isolated candidate is the nodule."""
    from napari_medcad.core.training.gnn import CandidateCase

    geometry = Geometry((0.8, 0.8, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    findings, image, probability, lungs, labels, nodule_centre = synthetic_lung(geometry, shape=(24, 60, 60),
                                                                                  chain=2 + seed % 3, seed=seed)
    world = image.index_to_world(np.asarray(nodule_centre) / np.asarray(geometry.spacing_zyx))
    return CandidateCase(findings, image, probability, labels, lungs, world.reshape(1, 3), np.array([9.0]))


def test_training_recipe_is_seeded_and_writes_a_loadable_card(tmp_path, monkeypatch):
    import torch

    from napari_medcad.core.models.card import read_card
    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.training import builtin, gnn

    assert builtin.BUILTIN_RECIPES["lung-nodule-gnn"] == (gnn.GNN_CARD, gnn.GNN_TRAINING)
    calls = []

    def candidates(seed, config, cnn_card, recipe, cache_dir=None, digest=""):
        calls.append(seed)
        return fake_case(len(calls))

    monkeypatch.setattr(gnn, "phantom_candidates", candidates)
    recipe = {**gnn.GNN_TRAINING, "train_cases": 2, "val_cases": 1, "epochs": 3}
    with pytest.raises(MedcadError, match="needs at least 20 of each"):  # 2 nodules: too few to learn from
        calls.clear()
        gnn.train_gnn(gnn.GNN_CARD, recipe, tmp_path / "refused")
    recipe["min_class_nodes"] = 2
    paths = []
    for folder in ("a", "b"):
        calls.clear()
        paths.append(gnn.train_gnn(gnn.GNN_CARD, recipe, tmp_path / folder))
    first, second = (torch.load(p.parent / "weights.pt", weights_only=True) for p in paths)
    assert all(torch.equal(first[k], second[k]) for k in first)
    card = read_card(paths[0])
    assert card.provenance["epochs"] == 3 and card.provenance["data"]["train_positive_nodes"] == 2
    assert card.provenance["validation"]["cases"] == 1 and "gnn" in card.provenance["validation"]
    assert 0.05 <= card.threshold <= 0.95
    load_network(card)


def test_embedding_columns_are_appended_by_name_and_checked_against_the_card(toy):
    import dataclasses

    from napari_medcad.core.graph import gnn_card
    from napari_medcad.core.graph.rescore import node_feature_names
    from napari_medcad.core.models.registry import find_model

    findings, image, probability, lungs, labels, _ = toy
    embeddings = np.arange(len(findings) * 3, dtype=np.float32).reshape(len(findings), 3)
    graph = candidate_graph(findings, image, probability, lungs, labels, k=2, embeddings=embeddings)
    plain = candidate_graph(findings, image, probability, lungs, labels, k=2)
    assert graph.feature_names == FEATURE_NAMES + ("cnn_embedding_0", "cnn_embedding_1", "cnn_embedding_2")
    np.testing.assert_array_equal(graph.features[:, len(FEATURE_NAMES):], embeddings)
    np.testing.assert_array_equal(graph.features[:, :len(FEATURE_NAMES)], plain.features)
    with pytest.raises(MedcadError, match="candidate embeddings of shape"):
        candidate_graph(findings, image, probability, lungs, labels, embeddings=embeddings[:-1])
    shipped = find_model("lung-nodule-gnn")
    assert node_feature_names(shipped) == FEATURE_NAMES  # the shipped rescorer reads no embedding
    spec = {"layer": "upcat_1", "channels": 8, "patch_zyx": [16, 16, 16]}
    reads = dataclasses.replace(shipped, inference={**shipped.inference, "cnn_embedding": spec})
    with pytest.raises(MedcadError, match="other candidate features"):
        gnn_card(reads)  # its features list still names the 17 measured ones only
    listed = dataclasses.replace(reads, inference={**reads.inference,
                                                   "features": list(node_feature_names(reads))})
    assert gnn_card(listed) is listed
