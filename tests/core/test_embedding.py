"""The detector's embedding at each candidate (what the graph rescorer reads as "the CNN's
embedding"): world-aligned, the same whatever else is in the batch, zero padding at the border,
clear refusals; appended to the graph's node features under their own names."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.inference.embedding import EmbeddingSpec, candidate_embeddings

SPEC = EmbeddingSpec("upcat_1", 4, (16, 16, 16))


@pytest.fixture(scope="module")
def network():
    import torch

    from napari_medcad.core.models.networks import build

    torch.manual_seed(0)
    return build({"name": "monai:BasicUNet", "params": {
        "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "features": [4, 4, 8, 8, 8, 4], "norm": ["batch", {}]}}).eval()


def volume(geometry: Geometry, shape=(24, 40, 40), seed: int = 0) -> MedicalImage:
    return MedicalImage(np.random.default_rng(seed).random(shape, dtype=np.float32), geometry, modality="OT")


def test_embedding_follows_world_positions_not_voxel_indices(network):
    direction = tuple(np.diag([-1.0, -1.0, 1.0]).ravel())  # the x and y axes run backwards, as often
    image = volume(Geometry((1.5, 1.5, 2.0), (0.0, 0.0, 0.0), direction))
    shift = np.array([30.0, -12.0, 8.0])
    moved = MedicalImage(image.array, Geometry((1.5, 1.5, 2.0), tuple(shift), direction), modality="OT")
    centres = image.index_to_world(np.array([[12, 20, 20], [10, 12, 30]], float))
    first = candidate_embeddings(network, image, centres, [6.0, 9.0], SPEC)
    assert first.shape == (2, 4) and np.isfinite(first).all()
    # the same tissue, found at its new world position
    np.testing.assert_allclose(candidate_embeddings(network, moved, centres + shift, [6.0, 9.0], SPEC), first,
                               rtol=1e-5, atol=1e-6)
    # at the old world positions the moved image holds other tissue
    assert not np.allclose(candidate_embeddings(network, moved, centres, [6.0, 9.0], SPEC), first, atol=1e-4)


def test_embedding_of_a_candidate_does_not_depend_on_the_batch(network):
    image = volume(Geometry((1.5, 1.5, 2.0), (-20.0, 5.0, 100.0), tuple(np.eye(3).ravel())), seed=1)
    rng = np.random.default_rng(2)
    centres = image.index_to_world(rng.uniform([0, 0, 0], [23, 39, 39], (7, 3)))
    diameters = rng.uniform(3, 15, 7)
    together = candidate_embeddings(network, image, centres, diameters, SPEC, batch_size=16)
    alone = np.concatenate([candidate_embeddings(network, image, centres[i:i + 1], diameters[i:i + 1], SPEC)
                            for i in range(7)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    # the radius matters: a wider average is another number
    wider = candidate_embeddings(network, image, centres, diameters + 10, SPEC)
    assert not np.allclose(wider, together)


def test_candidates_at_the_border_are_zero_padded_and_empty_lists_are_fine(network):
    spacing = np.array([1.5, 1.5, 2.0])
    image = volume(Geometry(tuple(spacing), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    corner = image.index_to_world(np.array([[0, 0, 0]], float))
    got = candidate_embeddings(network, image, corner, [5.0], SPEC)
    # the same image with its zeros written out: 8 voxels of 0 before each axis, the origin moved back
    padded = MedicalImage(np.pad(image.array, ((8, 0), (8, 0), (8, 0))),
                          Geometry(tuple(spacing), tuple(-8 * spacing), tuple(np.eye(3).ravel())), modality="OT")
    np.testing.assert_allclose(candidate_embeddings(network, padded, corner, [5.0], SPEC), got, rtol=1e-5, atol=1e-6)
    assert candidate_embeddings(network, image, np.zeros((0, 3)), [], SPEC).shape == (0, 4)


def test_embedding_refuses_a_layer_or_shape_the_detector_does_not_have(network):
    image = volume(Geometry((1.5, 1.5, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())))
    centre = image.index_to_world(np.array([[12, 20, 20]], float))
    with pytest.raises(MedcadError, match="no layer 'decoder9'"):
        candidate_embeddings(network, image, centre, [5.0], EmbeddingSpec("decoder9", 4, (16, 16, 16)))
    with pytest.raises(MedcadError, match="gives 4 channels"):
        candidate_embeddings(network, image, centre, [5.0], EmbeddingSpec("upcat_1", 8, (16, 16, 16)))
    with pytest.raises(MedcadError, match="2 diameters for 1 candidates"):
        candidate_embeddings(network, image, centre, [5.0, 6.0], SPEC)
    assert EmbeddingSpec.from_card({}) is None
    with pytest.raises(MedcadError, match="needs layer"):
        EmbeddingSpec.from_card({"cnn_embedding": {"layer": "upcat_1"}})
    with pytest.raises(MedcadError, match="bad patch"):
        EmbeddingSpec.from_card({"cnn_embedding": {"layer": "upcat_1", "channels": 8, "patch_zyx": [16, 16]}})
    spec = EmbeddingSpec.from_card({"cnn_embedding": SPEC.to_dict()})
    assert spec == SPEC and spec.names() == ("cnn_embedding_0", "cnn_embedding_1", "cnn_embedding_2",
                                             "cnn_embedding_3")
