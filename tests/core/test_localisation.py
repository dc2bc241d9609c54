"""Localisation supervision (core.training.localisation): the masks follow the hit rule, and the
in-graph heatmaps that training shapes are the very maps core.explain shows."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from classifier_samples import heldout_samples, one_thread  # noqa: E402,F401

from napari_medcad.core.models.networks import build  # noqa: E402
from napari_medcad.core.training.classifier_data import heatmap_hit, sample_image  # noqa: E402
from napari_medcad.core.training.localisation import (  # noqa: E402
    gradcam_in_graph,
    gradcam_of_maps,
    localisation_loss,
    nodule_masks,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("dims", [2, 3])
def test_nodule_masks_follow_the_heatmap_hit_rule(dims):
    samples = heldout_samples()
    positives = np.flatnonzero(samples.labels == 1)[:3]
    negative = int(np.flatnonzero(samples.labels == 0)[0])
    masks = nodule_masks(samples, [*positives, negative], dims)
    assert masks.shape == ((4, 64, 64) if dims == 2 else (4, 16, 64, 64))
    assert masks[-1].sum() == 0 and all(masks[k].sum() > 10 for k in range(3))
    rng = np.random.default_rng(0)
    for row, index in enumerate(positives):
        image = sample_image(samples, int(index), dims)
        inside, outside = np.argwhere(masks[row] > 0), np.argwhere(masks[row] == 0)
        for voxel in [*inside[rng.choice(len(inside), 5)], *outside[rng.choice(len(outside), 5)]]:
            one_peak = np.zeros(image.spatial_shape, np.float32)
            one_peak[tuple(voxel)] = 1.0
            assert heatmap_hit(image.with_array(one_peak), samples, int(index)) == bool(masks[row][tuple(voxel)])


def test_localisation_loss_rewards_the_heat_inside_the_nodule_and_skips_empty_samples():
    masks = torch.zeros(3, 64, 64)
    masks[0, 8:24, 8:24] = 1.0  # cells (2..5, 2..5) of a 16 x 16 grid
    masks[1, 40:48, 40:48] = 1.0
    on = torch.full((3, 16, 16), 0.001)
    on[0, 3, 3] = on[1, 11, 11] = 5.0
    off = torch.full((3, 16, 16), 0.001)
    off[0, 12, 12] = off[1, 2, 2] = 5.0
    assert float(localisation_loss(on, masks)) < 0.1 < 2.0 < float(localisation_loss(off, masks))
    # the third sample (no nodule) does not count: changing its map changes nothing
    other = on.clone()
    other[2] = 7.0
    assert float(localisation_loss(other, masks)) == pytest.approx(float(localisation_loss(on, masks)))
    empty = torch.zeros(2, 64, 64)
    heat = torch.rand(2, 16, 16, requires_grad=True)
    loss = localisation_loss(heat, empty)
    loss.backward()
    assert float(loss) == 0.0 and heat.grad is not None
    # scores (Grad-CAM before its ReLU): a map that is negative everywhere still has a gradient
    dead = (-1.0 - torch.rand(3, 16, 16)).requires_grad_(True)
    localisation_loss(dead, masks, scores=True).backward()
    assert float(dead.grad.abs().sum()) > 0 and float(dead.grad[0, 3, 3]) < 0


def test_attention_in_the_graph_is_monais_saved_matrix_and_can_be_trained():
    torch.manual_seed(3)
    net = build({"name": "attention2d", "params": {"num_layers": 1}}).eval()
    x = torch.rand(2, 1, 64, 64)
    _, attention = net(x, return_attention=True)
    saved = net.blocks[-1].attn.att_mat[:, :, 0, 1:].mean(dim=1).reshape(2, 16, 16)
    assert torch.allclose(attention, saved, atol=1e-7)
    attention[:, 5, 5].sum().backward()
    assert float(net.stem.conv1.weight.grad.abs().sum()) > 0


def test_gradcam_in_the_graph_is_monais_gradcam():
    from monai.visualize import GradCAM

    torch.manual_seed(4)
    net = build({"name": "plain_cnn2d", "params": {}}).eval()
    x = torch.rand(3, 1, 64, 64)
    logits, raw = gradcam_in_graph(net, "features.act3", x)
    reference = GradCAM(nn_module=net, target_layers="features.act3", postprocessing=lambda m: m).compute_map(
        x.clone().requires_grad_(True), class_idx=1)
    assert raw.shape == (3, 16, 16)
    torch.testing.assert_close(torch.relu(raw), reference[:, 0].detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logits, net(x))
    raw[:, 4, 4].sum().backward()  # the map itself is differentiable in the weights
    assert float(net.classifier[1].weight.grad.abs().sum()) > 0


def test_gradcam_of_a_frozen_slice_encoders_maps_is_the_lstms_gradcam():
    from monai.visualize import GradCAM

    torch.manual_seed(5)
    net = build({"name": "slice_lstm", "params": {"readout": "max"}}).eval()
    x = torch.rand(2, 1, 6, 64, 64)
    with torch.no_grad():
        maps = net.encode_maps(x)
    assert maps.shape == (2, 6, 64, 16, 16)
    torch.testing.assert_close(net.embed(maps), net.encode(x))
    logits, raw = gradcam_of_maps(net, maps)
    reference = GradCAM(nn_module=net, target_layers="encoder.act4", postprocessing=lambda m: m).compute_map(
        x.clone().requires_grad_(True), class_idx=1)
    torch.testing.assert_close(torch.relu(raw), reference.reshape(2, 6, 16, 16).detach(), atol=1e-6, rtol=1e-5)
    raw[:, 2].sum().backward()
    assert float(net.lstm.weight_ih_l0.grad.abs().sum()) > 0


def test_standardised_scores_make_the_loss_blind_to_the_maps_scale():
    masks = torch.zeros(2, 64, 64)
    masks[:, 8:24, 8:24] = 1.0
    heat = torch.randn(2, 16, 16)
    assert float(localisation_loss(10.0 * heat, masks, scores=True)) == pytest.approx(
        float(localisation_loss(heat, masks, scores=True)), rel=1e-4)


TINY = dict(train_cases=1, val_cases=0, epochs=1, steps_per_epoch=2, batch_size=4, max_in_plane=192, max_slices=48,
            n_nodules=[3, 4], nodule_diameter_mm=[10.0, 20.0])


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("classifier_cases")


@pytest.mark.parametrize("name, settings", [
    ("nodule-cnn2d", {}),  # Grad-CAM in the graph
    ("nodule-attention2d", {}),  # its own attention, in the graph
    ("nodule-mil3d", {}),  # attention pooling over a frozen encoder
    ("nodule-lstm3d", {"freeze_encoder": True}),  # Grad-CAM from a frozen encoder's maps
    ("nodule-lstm3d", {"freeze_encoder": False}),  # Grad-CAM of the slice encoder, per slice
])
def test_the_localisation_weight_changes_what_training_learns(name, settings, tmp_path, tiny_cache):
    from napari_medcad.core.models.card import read_card
    from napari_medcad.core.models.loading import safe_load_weights
    from napari_medcad.core.training.classifiers import train_classifier_builtin

    weights = {}
    for weight in (0.0, 1.0):
        card = train_classifier_builtin(name, tmp_path / str(weight), cache_dir=tiny_cache, localisation_weight=weight,
                                        **TINY, **settings)
        assert read_card(card).provenance["recipe"]["localisation_weight"] == weight
        weights[weight] = safe_load_weights(card.parent / "weights.pt")
    plain, taught = weights[0.0], weights[1.0]
    assert any(not torch.equal(plain[k], taught[k]) for k in plain if plain[k].is_floating_point())


def test_training_phantoms_without_samples_of_both_classes_are_a_user_error(tmp_path, tiny_cache):
    from napari_medcad.core.errors import MedcadError
    from napari_medcad.core.training.classifiers import train_classifier_builtin

    with pytest.raises(MedcadError, match="no samples of one class"):
        train_classifier_builtin("nodule-cnn2d", tmp_path, cache_dir=tiny_cache,
                                 **{**TINY, "max_in_plane": 96, "max_slices": 16, "n_nodules": [0, 0]})
