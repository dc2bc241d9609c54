"""graph.pyg: torch_geometric imported without torch._dynamo, and nothing else changed."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch_geometric")


def _run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_load_spares_dynamo_and_keeps_is_torch_instance_exact():
    code = """
import sys, torch
from napari_medcad.core.graph.pyg import load
tg = load()
from torch_geometric.nn import TransformerConv
print('torch._dynamo' in sys.modules, tg.is_torch_instance(torch.nn.Linear(2, 2), torch.nn.Linear),
      tg.is_torch_instance(torch.nn.Linear(2, 2), torch.nn.Conv1d), tg.is_torch_instance(3, (int, str)))
conv = TransformerConv(4, 4, edge_dim=2)   # a real layer runs without dynamo too
out = conv(torch.ones(3, 4), torch.tensor([[0, 1, 2], [1, 2, 0]]), torch.ones(3, 2))
print(tuple(out.shape) == (3, 4), 'torch._dynamo' in sys.modules)
compiled = torch.compile(torch.nn.Linear(2, 2))   # imports dynamo: the wrapper is seen through
print(tg.is_torch_instance(compiled, torch.nn.Linear), tg.is_torch_instance(compiled, torch.nn.Conv1d))
"""
    assert _run(code) == ["False", "True", "False", "True", "True", "False", "True", "False"]


def test_names_the_light_module_lacks_come_from_the_real_one():
    code = """
import sys, typing
from napari_medcad.core.graph.pyg import load
load()
light = sys.modules['torch_geometric.isinstance']
print(light.Tuple is typing.Tuple, light.torch is sys.modules['torch'], hasattr(light, 'no_such_name'))
"""
    assert _run(code) == ["True", "True", "False"]


def test_an_earlier_plain_import_is_left_alone():
    code = """
import sys, torch_geometric
from napari_medcad.core.graph.pyg import load
print(load() is torch_geometric, 'torch._dynamo' in sys.modules,
      sys.modules['torch_geometric.isinstance'].__file__.endswith('isinstance.py'))
"""
    assert _run(code) == ["True", "True", "True"]
