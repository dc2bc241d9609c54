"""Turning a model card into a runnable torch module without running code the user has not trusted.

* state_dict cards: the network is built by our own code (``networks.build``) from the card's
  ``architecture``; the weights are read with ``torch.load(..., weights_only=True)``, which
  refuses any pickle that would construct arbitrary Python objects.  Before that, a zip
  checkpoint's table of contents is checked, so a small file cannot make torch inflate
  gigabytes (a "zip bomb").
* TorchScript is a program: loading it runs its ``__setstate__`` and inference runs its
  ``forward``, and both can read and write files; PyTorch has no safe mode for
  ``torch.jit.load``.  So it is loaded only when the user trusts that exact file
  (:mod:`.trust`, ``napari-medcad models --trust``), from the very bytes whose digest was checked.
* MONAI bundles: ``configs/inference.json`` (or ``.yaml``/``.yml``, read like a card)'s
  ``network_def`` may only name a network class of ``monai.networks.nets`` with literal
  arguments (no ``$`` expressions, which MONAI would evaluate as Python, and nothing that
  downloads: see ``networks.monai_network``); the weights (``models/model.pt``) go through the
  same safe loader, or ``models/model.ts`` through the TorchScript trust check.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from ..errors import MedcadError
from .card import ModelCard
from .configfile import cut, read_config

#: an archive inflating to more than this is not a model we load
MAX_UNCOMPRESSED_BYTES = 2 << 30
#: torch stores tensors uncompressed; a member this much larger than its compressed size is a bomb
MAX_COMPRESSION_RATIO = 100
#: members smaller than this may compress well without harm (zeros, text)
RATIO_CHECK_FROM_BYTES = 1 << 20
MAX_ARCHIVE_MEMBERS = 100_000

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
BUNDLE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")


def _reason(err: BaseException, limit: int = 140) -> str:
    """A library's exception as a short clause: ANSI colour codes removed, torch's advice and
    boilerplate after the first sentence dropped, the exception type when there is no text."""
    text = _ANSI.sub("", str(err))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return {EOFError: "the file ends too early: truncated"}.get(type(err), type(err).__name__)
    first = lines[0]
    if len(first) > limit and ". " in first:
        first = first[: first.index(". ") + 1]  # torch: "...: not a ZIP archive. This is an internal miniz error..."
    return cut(first, limit)


def _check_archive(stream, path: Path) -> None:
    """Refuse a zip archive (torch's format) that would inflate far beyond a model's size."""
    if not zipfile.is_zipfile(stream):
        return
    stream.seek(0)
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise MedcadError(f"not a readable model archive ({_reason(err)})", path) from None
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise MedcadError(f"refused: the archive holds {len(members)} files; a model has far fewer", path)
    total = sum(member.file_size for member in members)
    if total > MAX_UNCOMPRESSED_BYTES:
        raise MedcadError(f"refused: the archive unpacks to {total / 2**30:.1f} GB, more than a model's "
                          f"{MAX_UNCOMPRESSED_BYTES / 2**30:.0f} GB", path)
    for member in members:
        if member.file_size >= RATIO_CHECK_FROM_BYTES and (
                member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1)):
            raise MedcadError(
                f"refused: '{cut(member.filename, 60)}' in the archive unpacks {member.file_size / 2**20:.0f} MB "
                f"from {member.compress_size / 2**20:.2f} MB (a zip bomb; torch stores weights uncompressed)",
                path,
            )


def _refusal(err: BaseException) -> str | None:
    """What torch's weights-only unpickler refused to construct, if that was the failure."""
    found = _GLOBAL.search(_ANSI.sub("", str(err)))
    return found.group(1) if found else None


def safe_load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A state dict from a checkpoint, refusing anything that needs pickled code; every
    failure is a one-line MedcadError."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise MedcadError("the weights file is a folder" if path.is_dir() else "the weights file does not exist",
                          path)
    try:
        with open(path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size == 0:
                raise MedcadError("not a readable torch checkpoint (the file is empty)", path)
            _check_archive(stream, path)
            stream.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's advice about pickle protocols, not the user's concern
                checkpoint = torch.load(stream, map_location="cpu", weights_only=True)
    except MedcadError:
        raise
    except OSError as err:
        raise MedcadError(f"cannot read the weights file ({err.strerror or _reason(err)})", path) from None
    except MemoryError:
        raise MedcadError("not enough memory to load the weights", path) from None
    except pickle.UnpicklingError as err:
        needs = _refusal(err)
        if needs is None:
            raise MedcadError(f"not a readable torch checkpoint ({_unpickler_reason(err)})", path) from None
        raise MedcadError(
            f"refused to load: the checkpoint contains pickled Python objects (code: {cut(needs, 60)}), not plain "
            "weights; save it with torch.save(model.state_dict())",
            path,
        ) from None
    except Exception as err:  # weights_only=True ran no code: any other failure means a damaged file
        raise MedcadError(f"not a readable torch checkpoint ({_damage(err)})", path) from None
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model", "network"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if (not isinstance(checkpoint, dict) or not all(isinstance(k, str) for k in checkpoint)
            or not all(isinstance(v, torch.Tensor) for v in checkpoint.values())):
        raise MedcadError("the checkpoint is not a state dict of tensors", path)
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def _damage(err: BaseException) -> str:
    """Why torch could not read a file: its message when it has one that means something
    (RuntimeError, ValueError, EOFError), else that the content is not what a checkpoint holds
    (a text file gives KeyError: 101, the code of its first letter)."""
    if isinstance(err, (RuntimeError, ValueError, EOFError)):
        return _reason(err)
    return f"unexpected content: {type(err).__name__}"


def _unpickler_reason(err: BaseException) -> str:
    """torch's weights-only unpickler message without its boilerplate (what it choked on)."""
    text = _ANSI.sub("", str(err))
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in detail.splitlines() if line.strip()]
        if lines:
            return cut(lines[0], 120)
    return _reason(err)


def _load_state_dict(network, state: dict, path: Path) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise MedcadError(f"the weights do not fit the network described by the card ({_mismatch(err)})",
                          path) from None


def _mismatch(err: RuntimeError) -> str:
    """torch's load_state_dict error, whose first line only says that there are errors: the
    first of them (missing keys, unexpected keys, a size mismatch)."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return cut(lines[1], 160)
    return _reason(err, 160)


def torchscript_file(card: ModelCard) -> Path | None:
    """The TorchScript file a card's model would load (which needs the user's trust), if any."""
    if card.format == "torchscript":
        return card.weights_path
    if card.format == "monai_bundle":
        candidate = _bundle_folder(card) / "models" / "model.ts"
        return candidate if candidate.is_file() else None
    return None


def _load_torchscript(path: Path, model: str):
    """A trusted TorchScript file, loaded from the bytes whose digest was checked."""
    import torch

    from .trust import read_trusted

    data = read_trusted(path, model)
    stream = io.BytesIO(data)
    _check_archive(stream, path)
    stream.seek(0)
    try:
        return torch.jit.load(stream, map_location="cpu")
    except MemoryError:
        raise MedcadError("not enough memory to load the TorchScript model", path) from None
    except Exception as err:  # torch raises RuntimeError, ValueError, ... for a damaged archive
        raise MedcadError(f"not a readable TorchScript file ({_reason(err)})", path) from None


def _literal(value: Any, path: Path) -> Any:
    """Reject MONAI config expressions and references: only plain values may pass."""
    if isinstance(value, str) and value[:1] in ("$", "@", "%"):
        raise MedcadError(
            f"refused: the bundle's network_def uses an expression or reference ('{cut(value, 40)}'); "
            "only literal arguments are accepted",
            path,
        )
    if isinstance(value, dict):
        return {_literal(k, path): _literal(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v, path) for v in value]
    return value


def _bundle_folder(card: ModelCard) -> Path:
    return card.folder / card.weights if card.weights else card.folder


def _bundle_config(folder: Path) -> tuple[Any, Path]:
    """The bundle's inference config (JSON or YAML, read with the card's safe rules)."""
    configs = folder / "configs"
    for name in BUNDLE_CONFIGS:
        if (configs / name).is_file():
            return read_config(configs / name, "the bundle's inference config"), configs / name
    raise MedcadError(f"the bundle has no inference config (expected configs/{' or '.join(BUNDLE_CONFIGS)})",
                      folder)


def _load_monai_bundle(folder: Path, model: str):
    from .networks import monai_network

    models = folder / "models"
    if (models / "model.ts").is_file():
        return _load_torchscript(models / "model.ts", model)
    config, config_path = _bundle_config(folder)
    definition = config.get("network_def") if isinstance(config, dict) else None
    if not isinstance(definition, dict) or "_target_" not in definition:
        raise MedcadError("the bundle's inference config has no network_def with a _target_", config_path)
    target = definition["_target_"]
    class_name = target.removeprefix("monai.networks.nets.") if isinstance(target, str) else ""
    if not class_name.isidentifier() or class_name.startswith("_"):
        raise MedcadError(f"refused: network {cut(repr(target), 60)} is not a class of monai.networks.nets",
                          config_path)
    kwargs = {k: _literal(v, config_path) for k, v in definition.items() if not k.startswith("_")}
    network = monai_network(class_name, kwargs, config_path)
    weights = models / "model.pt"
    _load_state_dict(network, safe_load_weights(weights), weights)
    return network


def load_network(card: ModelCard):
    """The card's network on the CPU, in eval mode, with its weights."""
    if card.format == "torchscript":
        network = _load_torchscript(card.weights_path, card.name)
    elif card.format == "monai_bundle":
        network = _load_monai_bundle(_bundle_folder(card), card.name)
    else:
        from .networks import build

        network = build(card.architecture, card.path)
        _load_state_dict(network, safe_load_weights(card.weights_path), card.weights_path)
    network.eval()
    return network
