"""Turning a model card into a runnable torch module, without ever unpickling code.

* state_dict cards: the network is built by our own code (``networks.build``) from the card's
  ``architecture``; the weights are read with ``torch.load(..., weights_only=True)``, which
  refuses any pickle that would construct arbitrary Python objects.
* TorchScript: ``torch.jit.load`` (TorchScript is a restricted language, not pickled Python).
* MONAI bundles: ``configs/inference.json``'s ``network_def`` may only name a class from
  ``monai.networks.nets`` with literal arguments (no ``$`` expressions, which MONAI would
  evaluate as Python); the weights (``models/model.pt``) go through the same safe loader, or
  ``models/model.ts`` through TorchScript.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import MedcadError
from .card import ModelCard


def safe_load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from a checkpoint, refusing anything that needs pickled code."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise MedcadError("the weights file does not exist", path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MedcadError(
            "refused to load: the checkpoint contains pickled Python objects (code), not plain "
            f"weights; save it with torch.save(model.state_dict()) ({str(err).splitlines()[0][:100]})",
            path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise MedcadError(f"not a readable torch checkpoint ({str(err).splitlines()[0][:120]})", path) from None
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "network"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise MedcadError("the checkpoint is not a state dict of tensors", path)
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _load_state_dict(network, state: dict, path: Path) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise MedcadError(f"the weights do not fit the network described by the card ({first[:160]})", path) from None


def _load_torchscript(path: Path):
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as err:
        raise MedcadError(f"not a readable TorchScript file ({str(err).splitlines()[0][:120]})", path) from None


def _literal(value: Any, path: Path) -> Any:
    """Reject MONAI config expressions and references: only plain JSON values may pass."""
    if isinstance(value, str) and (value.startswith("$") or value.startswith("@") or value.startswith("%")):
        raise MedcadError(
            f"refused: the bundle's network_def uses an expression or reference ('{value[:40]}'); "
            "only literal arguments are accepted",
            path,
        )
    if isinstance(value, dict):
        return {k: _literal(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v, path) for v in value]
    return value


def _load_monai_bundle(folder: Path):
    import torch  # noqa: F401  (monai needs it)

    models = folder / "models"
    if (models / "model.ts").is_file():
        return _load_torchscript(models / "model.ts")
    config_path = folder / "configs" / "inference.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MedcadError(f"cannot read the bundle's inference config ({err})", config_path) from None
    definition = config.get("network_def")
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise MedcadError("the bundle's inference.json has no network_def with a _target_", config_path)
    target = str(definition["_target_"])
    class_name = target.removeprefix("monai.networks.nets.")
    from monai.networks import nets

    if "." in class_name or not hasattr(nets, class_name):
        raise MedcadError(
            f"refused: network '{target}' is not a class of monai.networks.nets", config_path
        )
    kwargs = {k: _literal(v, config_path) for k, v in definition.items() if not k.startswith("_")}
    try:
        network = getattr(nets, class_name)(**kwargs)
    except (TypeError, ValueError) as err:
        raise MedcadError(f"cannot build {class_name} from the bundle's arguments ({err})", config_path) from None
    weights = models / "model.pt"
    _load_state_dict(network, safe_load_weights(weights), weights)
    return network


def load_network(card: ModelCard):
    """The card's network on the CPU, in eval mode, with its weights."""
    if card.format == "torchscript":
        network = _load_torchscript(card.weights_path)
    elif card.format == "monai_bundle":
        network = _load_monai_bundle(card.folder / card.weights if card.weights else card.folder)
    else:
        from .networks import build

        network = build(card.architecture)
        _load_state_dict(network, safe_load_weights(card.weights_path), card.weights_path)
    network.eval()
    return network
