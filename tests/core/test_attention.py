"""The classifier networks (plain CNN, LSTM, self-attention, attention MIL) and their built-in cards.

Shapes and the meaning of the returned attention (the weights the model itself pooled with),
weights_only loading of the shipped cards, and the shipped models' discrimination on held-out
phantom samples.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from classifier_samples import one_thread  # noqa: E402,F401

from napari_medcad.core.errors import MedcadError  # noqa: E402
from napari_medcad.core.models.networks import build  # noqa: E402

CLASSIFIERS = ("nodule-cnn2d", "nodule-lstm3d", "nodule-attention2d", "nodule-mil3d")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_plain_cnn_is_the_method_description():
    net = build({"name": "plain_cnn2d", "params": {}})
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in net.features if isinstance(m, torch.nn.MaxPool2d)]
    dense = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert len(pools) == 3
    assert [d.out_features for d in dense] == [256, 2]
    logits = net(torch.rand(3, 1, 64, 64))
    assert logits.shape == (3, 2)
    with pytest.raises(ValueError, match="64 x 64"):
        net(torch.rand(1, 1, 48, 48))


def test_lstm_takes_any_number_of_slices():
    torch.manual_seed(0)
    net = build({"name": "slice_lstm", "params": {}}).eval()
    for depth in (1, 7, 16):
        assert net(torch.rand(2, 1, depth, 64, 64)).shape == (2, 2)
    # the LSTM reads the slices in order: reversing them changes the answer
    x = torch.rand(1, 1, 9, 64, 64)
    assert not torch.allclose(net(x), net(torch.flip(x, dims=[2])))


def test_lstm_max_readout_is_the_maximum_of_its_outputs_over_the_slices():
    torch.manual_seed(1)
    net = build({"name": "slice_lstm", "params": {"readout": "max"}}).eval()
    x = torch.rand(2, 1, 9, 64, 64)
    embeddings = net.encode(x)
    outputs, _ = net.lstm(net.norm(embeddings))
    assert torch.allclose(net(x), net.head(outputs.amax(dim=1)), atol=1e-6)
    with pytest.raises(MedcadError, match="readout must be"):
        build({"name": "slice_lstm", "params": {"readout": "mean"}})


def test_attention2d_returns_the_class_token_attention_over_the_grid():
    torch.manual_seed(2)
    net = build({"name": "attention2d", "params": {}}).eval()
    x = torch.rand(2, 1, 64, 64)
    logits, attention = net(x, return_attention=True)
    assert logits.shape == (2, 2) and attention.shape == (2, 16, 16)
    assert torch.allclose(net(x), logits)  # the same forward, with or without the map
    # the class token's softmax row, minus its attention to itself, is spread over the 256 tokens
    weights = net.blocks[-1].attn.att_mat
    self_attention = weights[:, :, 0, 0].mean(dim=1)
    assert torch.allclose(attention.sum(dim=(1, 2)) + self_attention, torch.ones(2), atol=1e-5)
    assert bool((attention >= 0).all())
    # token (r, c) is the 4 x 4 pixel cell (4r..4r+3, 4c..4c+3): an input change there moves the
    # weight of a token within the stem's receptive field (two cells either way) most
    changed = x.clone()
    changed[0, 0, 40:44, 12:16] += 5.0
    _, after = net(changed, return_attention=True)
    delta = (after[0] - attention[0]).abs()
    row, col = np.unravel_index(int(delta.argmax()), delta.shape)
    assert max(abs(row - 10), abs(col - 3)) <= 2


def test_mil_attention_is_what_pools_the_bag():
    torch.manual_seed(0)
    net = build({"name": "attention_mil3d", "params": {}}).eval()
    x = torch.rand(2, 1, 5, 64, 64)
    logits, attention = net(x, return_attention=True)
    assert attention.shape == (2, 5, 16, 16)
    assert torch.allclose(attention.sum(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    # the logits are the head applied to the attention-weighted mean of the instance embeddings
    maps = net.encoder(x.permute(0, 2, 1, 3, 4).reshape(10, 1, 64, 64))  # (B*D, C, 16, 16)
    instances = maps.reshape(2, 5, -1, 16, 16).permute(0, 1, 3, 4, 2)  # (B, D, 16, 16, C)
    bag = (attention[..., None] * instances).sum(dim=(1, 2, 3))
    assert torch.allclose(net.head(bag), logits, atol=1e-5)
    # bags of other sizes work (volumes are explained in windows, tests use other depths)
    assert net(torch.rand(1, 1, 16, 32, 48), return_attention=True)[1].shape == (1, 16, 8, 12)


def test_networks_are_registered_by_name_and_bad_params_are_user_errors():
    with pytest.raises(MedcadError, match="cannot build network 'plain_cnn2d'"):
        build({"name": "plain_cnn2d", "params": {"input_size": 60}})  # not a multiple of the pooling
    with pytest.raises(MedcadError, match="cannot build"):
        build({"name": "attention2d", "params": {"features": [16, 32, 60], "num_heads": 7}})


def test_importing_core_and_explain_does_not_import_torch():
    code = ("import sys, napari_medcad.core, napari_medcad.core.explain, napari_medcad.core.training.classifiers; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_builtin_card_loads_with_weights_only(name, monkeypatch):
    from napari_medcad.core.models import loading
    from napari_medcad.core.models.registry import find_model

    card = find_model(name)
    assert card.task == "classification" and card.provenance.get("untrained") is False
    assert card.weights_path.stat().st_size < 3_000_000
    calls = []
    original = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    network = loading.load_network(card)
    assert calls == [True]
    assert not network.training


def test_a_card_whose_weights_pickle_code_is_refused(tmp_path):
    from napari_medcad.core.models.card import read_card
    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.models.registry import find_model

    card = find_model("nodule-mil3d")
    card.save(tmp_path / "card.yaml")
    torch.save(build(card.architecture), tmp_path / card.weights)  # the whole module: pickled classes
    with pytest.raises(MedcadError, match="refused to load"):
        load_network(read_card(tmp_path / "card.yaml"))


@pytest.mark.parametrize("name", [
    "nodule-cnn2d", "nodule-attention2d", "nodule-mil3d", "nodule-lstm3d",
])
def test_shipped_model_separates_held_out_phantom_samples(name):
    from classifier_samples import heldout_samples

    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.models.registry import find_model
    from napari_medcad.core.training.classifiers import predict_probabilities
    from napari_medcad.core.training.evaluation import roc_auc

    samples = heldout_samples()
    card = find_model(name)
    probabilities = predict_probabilities(load_network(card), samples, card.dims)
    assert roc_auc(samples.labels, probabilities) >= 0.85
