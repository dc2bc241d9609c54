"""Model cards, the registry, and loading weights without ever running pickled code."""

import json
import os

import pytest
import torch
import yaml

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.models import registry
from napari_medcad.core.models.card import ModelCard, read_card
from napari_medcad.core.models import loading
from napari_medcad.core.models.loading import load_network, safe_load_weights
from napari_medcad.core.models.trust import trust

UNET = {"name": "monai:UNet", "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                         "channels": [4, 8], "strides": [2], "num_res_units": 0}}


class Exploit:
    """Unpickling this runs a shell command: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def trust_list(tmp_path, monkeypatch):
    """A scratch user model folder and a scratch trust list of its own."""
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(tmp_path / "user models"))
    monkeypatch.setenv("NAPARI_MEDCAD_TRUST", str(tmp_path / "config" / "trusted.json"))
    return tmp_path / "config" / "trusted.json"


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


def test_torchscript_model_with_card(tmp_path, trust_list):
    scripted = torch.jit.script(torch.nn.Conv3d(1, 1, 1))
    scripted.save(str(tmp_path / "model.ts"))
    ModelCard(name="ts", task="segmentation", dims=3, format="torchscript", weights="model.ts").save(tmp_path / "model.yaml")
    card = registry.find_model(tmp_path / "model.ts")  # the card beside the file is found
    trust(tmp_path / "model.ts", "ts")
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


def test_a_broken_user_model_is_skipped_with_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(tmp_path))
    monkeypatch.setattr(registry, "_reported", set())
    make_model_folder(tmp_path / "good", name="good-model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "card.yaml").write_text("name: broken\ntask: dance\ndims: 3\n")
    with caplog.at_level("WARNING", logger=registry.__name__):
        names = [card.name for card in registry.list_models()]
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("skipped a user model: ") and str(tmp_path / "broken" / "card.yaml") in line
    assert "good-model" in names and "broken" not in names
    with pytest.raises(MedcadError, match="task must be one of"):  # asked for by path, it says why
        registry.find_model(tmp_path / "broken")


# -- TorchScript is code: it runs only when the user trusts the exact file ----------------------

class FileWriter(torch.nn.Module):
    """A scripted module that creates a file when it is loaded (its __setstate__ runs inside
    torch.jit.load) and when it runs: what a hostile TorchScript model does."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        written = torch.from_file(state[0], shared=True, size=4, dtype=torch.uint8)
        written.copy_(torch.tensor([1, 2, 3, 4], dtype=torch.uint8))
        self.marker = state[0] + str(int(written.sum().item()) * 0)  # used, so not optimised away
        self.training = state[1]

    def forward(self, x):
        return x


def write_torchscript_model(folder, module, name="ts"):
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(folder / "model.ts"))
    ModelCard(name=name, task="segmentation", dims=3, format="torchscript", weights="model.ts").save(folder / "card.yaml")
    return read_card(folder / "card.yaml")


def test_untrusted_torchscript_is_refused_before_it_can_run(tmp_path, trust_list):
    marker = tmp_path / "written-at-load"
    card = write_torchscript_model(tmp_path / "m", FileWriter(str(marker)), name="writer")
    assert not marker.exists()  # scripting and saving ran none of it
    with pytest.raises(MedcadError, match="refused to load model 'writer': TorchScript") as caught:
        load_network(card)
    message = str(caught.value)
    assert "\n" not in message and "napari-medcad models --trust" in message and str(card.weights_path) in message
    assert not marker.exists()
    trust(card.weights_path, card.name)  # the user's decision: now it loads (and may run what it holds)
    load_network(card)
    assert marker.exists() and trust_list.is_file()


def test_a_changed_torchscript_file_needs_trust_again(tmp_path, trust_list):
    card = write_torchscript_model(tmp_path / "m", torch.nn.Conv3d(1, 1, 1))
    trust(card.weights_path, card.name)
    load_network(card)
    torch.jit.script(torch.nn.Conv3d(1, 2, 1)).save(str(card.weights_path))
    with pytest.raises(MedcadError, match="not on your trust list"):
        load_network(card)


def test_a_file_that_changed_after_the_user_was_asked_is_not_trusted(tmp_path, trust_list):
    from napari_medcad.core.models.trust import file_digest, is_trusted

    card = write_torchscript_model(tmp_path / "m", torch.nn.Conv3d(1, 1, 1))
    shown = file_digest(card.weights_path)
    torch.jit.script(torch.nn.Conv3d(1, 2, 1)).save(str(card.weights_path))  # swapped while the dialog was open
    with pytest.raises(MedcadError, match="changed after you were asked"):
        trust(card.weights_path, card.name, shown_sha256=shown)
    assert not is_trusted(file_digest(card.weights_path)) and not is_trusted(shown)


def test_the_bytes_checked_are_the_bytes_loaded(tmp_path, trust_list, monkeypatch):
    """A file swapped after the digest was checked does not get loaded: it is read only once."""
    card = write_torchscript_model(tmp_path / "m", torch.nn.Conv3d(1, 1, 1))
    trust(card.weights_path, card.name)
    real_load = torch.jit.load

    def swap_then_load(source, *args, **kwargs):
        torch.jit.script(torch.nn.Conv3d(1, 5, 1)).save(str(card.weights_path))  # the attacker's swap
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", swap_then_load)
    network = load_network(card)
    assert network(torch.zeros(1, 1, 2, 2, 2)).shape[1] == 1  # the trusted module, not the swapped one


def test_a_bundles_torchscript_needs_trust_too(tmp_path, trust_list):
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    torch.jit.script(torch.nn.Conv3d(1, 1, 1)).save(str(bundle / "models" / "model.ts"))
    ModelCard(name="tsb", task="segmentation", dims=3, format="monai_bundle").save(bundle / "card.yaml")
    card = registry.find_model(bundle)
    assert loading.torchscript_file(card) == bundle.resolve() / "models" / "model.ts"
    with pytest.raises(MedcadError, match="not on your trust list"):
        load_network(card)
    trust(bundle / "models" / "model.ts", "tsb")
    load_network(card)


def test_a_trusted_torchscript_with_pickled_code_says_why(tmp_path, trust_list):
    """torch refuses a pickled global in data.pkl with a message that starts with a newline."""
    import pickle
    import zipfile

    good = tmp_path / "good.ts"
    torch.jit.script(torch.nn.Conv3d(1, 1, 1)).save(str(good))
    folder = tmp_path / "m"
    folder.mkdir()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(folder / "model.ts", "w") as target:
        for info in source.infolist():
            data = source.read(info.filename)
            target.writestr(info, pickle.dumps(Exploit(tmp_path / "pwned"), protocol=2)
                            if info.filename.endswith("/data.pkl") else data)
    ModelCard(name="p", task="segmentation", dims=3, format="torchscript", weights="model.ts").save(folder / "card.yaml")
    trust(folder / "model.ts", "p")
    with pytest.raises(MedcadError, match="not a readable TorchScript file \\(.*system") as caught:
        load_network(read_card(folder / "card.yaml"))
    assert "()" not in str(caught.value) and not (tmp_path / "pwned").exists()


def test_models_trust_command(tmp_path, run_cli, monkeypatch):
    user = tmp_path / "user models"
    monkeypatch.setenv("NAPARI_MEDCAD_MODELS", str(user))
    monkeypatch.setenv("NAPARI_MEDCAD_TRUST", str(tmp_path / "trusted.json"))
    write_torchscript_model(user / "scripted", torch.nn.Conv3d(1, 1, 1), name="scripted")
    make_model_folder(user / "plain", name="plain")
    rows = {row["name"]: row for row in json.loads(run_cli("models", "--json").stdout)["models"]}
    assert rows["scripted"]["trust"] == "needs --trust" and rows["plain"]["trust"] == "-"
    result = run_cli("models", "--trust", "scripted")
    assert result.returncode == 0, result.stderr
    import hashlib

    digest = hashlib.sha256((user / "scripted" / "model.ts").read_bytes()).hexdigest()
    assert digest in result.stdout and "read and write files" in result.stdout
    assert digest in json.loads((tmp_path / "trusted.json").read_text())["trusted"]
    assert not (user / "trusted.json").exists()  # a model archive unpacked there cannot bring its own
    rows = {row["name"]: row for row in json.loads(run_cli("models", "--json").stdout)["models"]}
    assert rows["scripted"]["trust"] == "trusted"
    refused = run_cli("models", "--trust", "plain")
    assert refused.returncode == 2 and "not TorchScript" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


# -- checkpoints that are damaged or hostile: one line, nothing inflated -----------------------

def _truncated_legacy(path):
    torch.save({"w": torch.zeros(100)}, path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:20])


@pytest.mark.parametrize("name, write, reason", [
    ("empty", lambda p: p.write_bytes(b""), "the file is empty"),
    ("text", lambda p: p.write_text("e" * 120), "not a readable torch checkpoint"),
    ("truncated-legacy", _truncated_legacy, "ends too early"),
    ("truncated-zip", lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 40), "not a readable torch checkpoint"),
    ("folder", lambda p: p.mkdir(), "is a folder"),
])
def test_a_damaged_checkpoint_is_one_line(tmp_path, name, write, reason):
    path = tmp_path / f"{name}.pt"
    write(path)
    with pytest.raises(MedcadError, match=reason) as caught:
        safe_load_weights(path)
    assert "\n" not in str(caught.value) and not str(caught.value).endswith("()")


def test_torch_messages_lose_their_colour_codes(tmp_path, monkeypatch):
    import pickle

    path = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, path)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed. \x1b[1mdo those steps only if you trust\x1b[0m.\n"
                                     "\tWeightsUnpickler error: Unsupported global: GLOBAL builtins.eval was not allowed")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(MedcadError, match="code: builtins.eval") as caught:
        safe_load_weights(path)
    assert "\x1b" not in str(caught.value)


def test_a_zip_bomb_is_refused_before_torch_inflates_it(tmp_path, monkeypatch):
    import zipfile

    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", bytes(64 << 20))  # 64 MB of zeros in about 64 KB
    assert path.stat().st_size < 1 << 20

    def must_not_run(*args, **kwargs):
        raise AssertionError("torch.load ran on a zip bomb")

    monkeypatch.setattr(torch, "load", must_not_run)
    with pytest.raises(MedcadError, match="zip bomb"):
        safe_load_weights(path)
    monkeypatch.setattr(loading, "MAX_UNCOMPRESSED_BYTES", 1 << 20)
    with pytest.raises(MedcadError, match="unpacks to"):
        safe_load_weights(path)


# -- MONAI networks named by cards and bundles build nothing that downloads ----------------------

def write_bundle(folder, network_def, config="inference.json", weights=None):
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    text = json.dumps({"network_def": network_def}) if config.endswith(".json") else \
        yaml.safe_dump({"network_def": network_def})
    (folder / "configs" / config).write_text(text)
    if weights is not None:
        torch.save(weights, folder / "models" / "model.pt")
    ModelCard(name=folder.name, task="segmentation", dims=3, format="monai_bundle").save(folder / "card.yaml")
    return read_card(folder / "card.yaml")


@pytest.mark.parametrize("network_def, message", [
    ({"_target_": "get_pretrained_resnet_medicalnet", "resnet_depth": 10}, "not a network class"),
    ({"_target_": "HoVerNet", "pretrained_url": "file:///etc/hostname"}, "'pretrained_url' of HoVerNet would download"),
    ({"_target_": "DenseNet121", "spatial_dims": 3, "in_channels": 1, "out_channels": 1, "pretrained": True},
     "'pretrained' of DenseNet121 would download"),
    ({"_target_": "Transchex", "in_channels": 1}, "downloads or reads files"),
    ({"_target_": "BasicUNet", "spatial_dims": 3, "features": [1]}, "cannot build BasicUNet"),
    ({"_target_": "BasicUNet", "spatial_dims": 3, "act": {"$x": 1}}, "expression or reference"),
    ({"_target_": "monai.networks.nets.basic_unet.BasicUNet"}, "not a class of monai.networks.nets"),
])
def test_a_bundle_network_may_not_download_or_crash(tmp_path, monkeypatch, network_def, message):
    import torch.hub

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    card = write_bundle(tmp_path / "b", network_def)
    with pytest.raises(MedcadError, match=message) as caught:
        load_network(card)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(str(tmp_path))


def test_a_network_that_defaults_to_pretrained_is_built_without_it(monkeypatch):
    """EfficientNetBN's pretrained defaults to True (a download); it is forced off."""
    import torch.hub

    from napari_medcad.core.models.networks import build

    def no_network(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr("monai.networks.nets.efficientnet.model_zoo.load_url", no_network, raising=False)
    network = build({"name": "monai:EfficientNetBN", "params": {"model_name": "efficientnet-b0", "spatial_dims": 2,
                                                                 "in_channels": 1, "num_classes": 2}})
    assert isinstance(network, torch.nn.Module)
    with pytest.raises(MedcadError, match="not a network class"):
        build({"name": "monai:get_pretrained_resnet_medicalnet", "params": {"resnet_depth": 10}})


def test_monai_bundle_with_a_yaml_config(tmp_path):
    from monai.networks.nets import UNet

    reference = UNet(**UNET["params"])
    card = write_bundle(tmp_path / "yb", {"_target_": "UNet", **UNET["params"]}, config="inference.yaml",
                        weights=reference.state_dict())
    network = load_network(card)
    x = torch.randn(1, 1, 8, 8, 8)
    assert torch.allclose(network(x), reference.eval()(x))
    (tmp_path / "yb" / "configs" / "inference.yaml").write_text("a: &a [1]\nb: *a\nnetwork_def: {_target_: UNet}\n")
    with pytest.raises(MedcadError, match="aliases"):
        load_network(card)
