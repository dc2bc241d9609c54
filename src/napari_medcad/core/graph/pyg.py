"""torch_geometric, imported without ``torch._dynamo``.

``import torch_geometric`` (2.x) runs ``import torch._dynamo`` in ``torch_geometric.isinstance``,
only so that ``is_torch_instance`` can see through a model wrapped by ``torch.compile``.  On this
machine that import takes about 1.1 s of the 1.6 s torch_geometric costs, which was most of
the graph stage's cost in a one-case ``predict`` (issue 5's 10% budget).  Nothing here compiles a
model, and an object can only be a ``torch._dynamo.OptimizedModule`` once ``torch._dynamo`` has
been imported, so ``is_torch_instance`` below asks ``sys.modules`` instead: the same answer for
every object, without the import.

Every import of torch_geometric in this package goes through :func:`load`.  If torch_geometric
or ``torch._dynamo`` is already imported, :func:`load` changes nothing.  A name the real
``torch_geometric.isinstance`` defines and this module does not is fetched from the real module
(which then imports ``torch._dynamo``), so a newer torch_geometric still works, only slower.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

_MODULE = "torch_geometric.isinstance"
_lock = threading.Lock()


def load() -> types.ModuleType:
    """``import torch_geometric`` (raises ImportError when it is not installed), sparing
    ``torch._dynamo`` if nothing imported either yet."""
    with _lock:
        if "torch_geometric" not in sys.modules and "torch._dynamo" not in sys.modules \
                and _MODULE not in sys.modules:
            spec = importlib.util.find_spec("torch_geometric")
            if spec is None:
                raise ImportError("No module named 'torch_geometric'")
            sys.modules[_MODULE] = _light_isinstance(Path(next(iter(spec.submodule_search_locations))))
        import torch_geometric

        return torch_geometric


def _light_isinstance(package: Path) -> types.ModuleType:
    module = types.ModuleType(_MODULE, "torch_geometric.isinstance without the torch._dynamo import")
    real: list[types.ModuleType] = []

    def is_torch_instance(obj: Any, cls: type | tuple[type, ...]) -> bool:
        """``isinstance``, seeing through a ``torch.compile`` wrapper (which needs torch._dynamo
        imported to exist)."""
        dynamo = sys.modules.get("torch._dynamo")
        optimized = getattr(dynamo, "OptimizedModule", None)
        if optimized is not None and isinstance(obj, optimized):
            return isinstance(obj._orig_mod, cls)
        return isinstance(obj, cls)

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's own attribute fallback (PEP 562)
        if name.startswith("__"):
            raise AttributeError(name)
        if not real:
            spec = importlib.util.spec_from_file_location("torch_geometric._isinstance_full",
                                                          package / "isinstance.py")
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
            real.append(loaded)
        return getattr(real[0], name)

    module.is_torch_instance = is_torch_instance
    module.__getattr__ = __getattr__
    return module
