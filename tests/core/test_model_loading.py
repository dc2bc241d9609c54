"""Model cards, the registry, and loading weights without ever running pickled code."""

import json
import os

import pytest
import torch

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.models import registry
from napari_medcad.core.models.card import ModelCard, read_card
from napari_medcad.core.models.loading import load_network, safe_load_weights

UNET = {"name": "monai:UNet", "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                         "channels": [4, 8], "strides": [2], "num_res_units": 0}}


class Exploit:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_model_folder(folder, name="tiny", **card_fields):
    from napari_medcad.core.models.networks import build

    folder.mkdir(parents=True, exist_ok=True)
    network = build(UNET)
    torch.save(network.state_dict(), folder / "weights.pt")
    card = ModelCard(name=name, task="segmentation", dims=3, architecture=UNET, weights="weights.pt", **card_fields)
    card.save(folder / "card.yaml")
    return network


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.zeros(1), "payload": Exploit(marker)}, path)
    with pytest.raises(MedcadError, match="refused"):
        safe_load_weights(path)
    assert not marker.exists()


def test_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # pickles the class, not just tensors
    with pytest.raises(MedcadError, match="refused"):
        safe_load_weights(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(MedcadError, match="checkpoint"):
        safe_load_weights(path)
    with pytest.raises(MedcadError, match="does not exist"):
        safe_load_weights(tmp_path / "missing.pt")


def test_card_round_trip_and_load(tmp_path):
    original = make_model_folder(tmp_path / "tiny", spacing_xyz=[1.0, 1.0, 2.0])
    card = read_card(tmp_path / "tiny" / "card.yaml")
    assert card.name == "tiny" and card.spacing_xyz == [1.0, 1.0, 2.0]
    network = load_network(card)
    assert not network.training
    for key, value in original.state_dict().items():
        assert torch.equal(network.state_dict()[key], value)


def test_weights_that_do_not_fit_the_card(tmp_path):
    make_model_folder(tmp_path / "m")
    torch.save({"bogus.weight": torch.zeros(3)}, tmp_path / "m" / "weights.pt")
    with pytest.raises(MedcadError, match="do not fit"):
        load_network(read_card(tmp_path / "m" / "card.yaml"))


@pytest.mark.parametrize("bad, message", [
    ({"name": "x", "task": "dance", "dims": 3}, "task must be"),
    ({"name": "x", "task": "detection", "dims": 4}, "dims must be"),
    ({"name": "x", "task": "detection"}, "lacks dims"),
    ({"name": "x", "task": "detection", "dims": 3, "colour": "red"}, "unknown model card fields"),
])
def test_invalid_cards(tmp_path, bad, message):
    path = tmp_path / "card.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(MedcadError, match=message):
        read_card(path)


def test_torchscript_model_with_card(tmp_path):
    scripted = torch.jit.script(torch.nn.Conv3d(1, 1, 1))
    scripted.save(str(tmp_path / "model.ts"))
    ModelCard(name="ts", task="segmentation", dims=3, format="torchscript", weights="model.ts").save(tmp_path / "model.yaml")
    card = registry.find_model(tmp_path / "model.ts")  # the card beside the file is found
    network = load_network(card)
    assert network(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 1, 4, 4, 4)


def test_monai_bundle(tmp_path):
    from monai.networks.nets import UNet

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    params = {k: v for k, v in UNET["params"].items()}
    (bundle / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1"}))
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet", **params}}))
    reference = UNet(**params)
    torch.save(reference.state_dict(), bundle / "models" / "model.pt")
    ModelCard(name="bundle", task="segmentation", dims=3, format="monai_bundle").save(bundle / "card.yaml")
    network = load_network(registry.find_model(bundle))
    x = torch.randn(1, 1, 8, 8, 8)
    reference.eval()
    assert torch.allclose(network(x), reference(x))


def test_monai_bundle_expressions_are_refused(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "UNet", "spatial_dims": "$__import__('os').system('touch x')"}}))
    ModelCard(name="b", task="segmentation", dims=3, format="monai_bundle").save(bundle / "card.yaml")
    with pytest.raises(MedcadError, match="refused"):
        load_network(registry.find_model(bundle))
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "os.system"}}))
    with pytest.raises(MedcadError, match="refused"):
        load_network(registry.find_model(bundle))


def test_registry_lists_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(tmp_path))
    make_model_folder(tmp_path / "mine", name="my-model")
    names = [card.name for card in registry.list_models()]
    assert "my-model" in names
    assert registry.find_model("my-model").name == "my-model"
    with pytest.raises(MedcadError, match="unknown model"):
        registry.find_model("no-such-model")
    with pytest.raises(MedcadError, match="no model card"):
        registry.find_model(tmp_path)


def test_a_broken_user_model_is_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(tmp_path))
    make_model_folder(tmp_path / "good", name="good-model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.yaml").write_text("name: broken\ntask: dance\ndims: 3\n")
    with pytest.warns(UserWarning, match="skipping a user model"):
        names = [card.name for card in registry.list_models()]
    assert "good-model" in names and "broken" not in names
    with pytest.raises(MedcadError, match="task must be one of"):  # asked for by path, it says why
        registry.find_model(tmp_path / "broken")
