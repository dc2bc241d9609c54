"""Network builders by name: a card's ``architecture`` becomes a torch module built by code
that ships with this package (never by code stored in a checkpoint).

``{"name": "monai:UNet", "params": {...}}`` builds a class of ``monai.networks.nets``;
other names are this package's own networks, registered with :func:`register`.

A MONAI network named by a user's card or bundle must not reach outside the process while it
is built: some MONAI constructors download weights (``pretrained=True``, HoVerNet's
``pretrained_url``, which also reads ``file://`` URLs) or read files (CellSamWrapper's
``checkpoint``), and ``monai.networks.nets`` also exports functions that download.  So only
``torch.nn.Module`` classes are built, arguments that would fetch or read something are refused,
``pretrained`` is forced off, and the few classes that fetch whatever their arguments are refused.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ...errors import MedcadError, first_line
from ..configfile import cut

#: MONAI classes that download or read files in their constructor whatever their arguments
UNSAFE_MONAI_CLASSES = {"Transchex", "CellSamWrapper"}
#: argument names that name something to download or read (refused when true or given a text/list)
FETCHING_ARGUMENT = re.compile(r"pretrain|url|download|checkpoint_?path|^checkpoint$|cache|file|_path$|_dir$|hub")

_BUILDERS: dict[str, Callable[..., Any]] = {}


def register(name: str):
    """Decorator: make ``builder(**params)`` available to cards as ``name``."""

    def decorate(builder):
        _BUILDERS[name] = builder
        return builder

    return decorate


def _import_builtin_networks() -> None:
    # our own networks register themselves when their module is imported (they import torch)
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def _fetches(name: str, value: Any) -> bool:
    """Whether argument ``name`` = ``value`` would make a constructor download or read a file."""
    names_something = value is True or (isinstance(value, (str, list, dict)) and len(value) > 0)
    return names_something and bool(FETCHING_ARGUMENT.search(name.lower()))  # numbers (cache sizes) pass


def monai_network(class_name: str, params: dict[str, Any], path=None):
    """``monai.networks.nets.<class_name>(**params)``, within the rules of the module docstring;
    any failure is one MedcadError (naming ``path``, the card or config, if given)."""
    import inspect

    import torch
    from monai.networks import nets

    target = getattr(nets, class_name, None) if class_name.isidentifier() else None
    if target is None:
        raise MedcadError(f"unknown MONAI network '{cut(class_name, 60)}' (a class of monai.networks.nets)", path)
    if not (inspect.isclass(target) and issubclass(target, torch.nn.Module)):
        raise MedcadError(f"refused: monai.networks.nets.{class_name} is not a network class", path)
    if any(issubclass(target, getattr(nets, unsafe)) for unsafe in UNSAFE_MONAI_CLASSES if hasattr(nets, unsafe)):
        raise MedcadError(f"refused: MONAI's {class_name} downloads or reads files when it is built", path)
    for name, value in params.items():
        if _fetches(name, value):
            raise MedcadError(f"refused: argument '{cut(name, 40)}' of {class_name} would download or read "
                              "weights; the card's or bundle's own weights file is loaded instead", path)
    params = dict(params)
    try:
        if "pretrained" in inspect.signature(target).parameters:
            params["pretrained"] = False  # some default to True (EfficientNetBN) and download
    except (TypeError, ValueError):
        pass
    try:
        return target(**params)
    except Exception as err:  # MONAI checks arguments with asserts, ValueError, TypeError, KeyError...
        raise MedcadError(f"cannot build {class_name} from the given arguments ({first_line(err)})", path) from None


def build(architecture: dict[str, Any], path=None):
    """A freshly initialised network for a card's ``architecture`` entry."""
    name = str(architecture.get("name", ""))
    params = architecture.get("params") or {}
    if not isinstance(params, dict):
        raise MedcadError(f"the parameters of network '{cut(name, 60)}' must be a mapping", path)
    if name.startswith("monai:"):
        return monai_network(name.removeprefix("monai:"), params, path)
    if name not in _BUILDERS:
        _import_builtin_networks()
    if name not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS)) or "none"
        raise MedcadError(f"unknown network '{cut(name, 60)}' (known: {known}, or monai:<ClassName>)", path)
    try:
        return _BUILDERS[name](**params)
    except Exception as err:  # the card's parameters are user input: any failure is theirs
        raise MedcadError(f"cannot build network '{name}' ({first_line(err)})", path) from None
