"""Network builders by name: a card's ``architecture`` becomes a torch module built by code
that ships with this package (never by code stored in a checkpoint).

``{"name": "monai:UNet", "params": {...}}`` builds a class of ``monai.networks.nets``;
other names are this package's own networks, registered with :func:`register`.
"""

from __future__ import annotations

from typing import Any, Callable

from ...errors import MedcadError

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


def build(architecture: dict[str, Any]):
    """A freshly initialised network for a card's ``architecture`` entry."""
    name = str(architecture.get("name", ""))
    params = dict(architecture.get("params", {}))
    if name.startswith("monai:"):
        from monai.networks import nets

        class_name = name.removeprefix("monai:")
        if "." in class_name or not hasattr(nets, class_name):
            raise MedcadError(f"unknown MONAI network '{class_name}'")
        builder = getattr(nets, class_name)
    else:
        if name not in _BUILDERS:
            _import_builtin_networks()
        if name not in _BUILDERS:
            known = ", ".join(sorted(_BUILDERS)) or "none"
            raise MedcadError(f"unknown network '{name}' (known: {known}, or monai:<ClassName>)")
        builder = _BUILDERS[name]
    try:
        return builder(**params)
    except (TypeError, ValueError) as err:
        raise MedcadError(f"cannot build network '{name}' ({err})") from None
