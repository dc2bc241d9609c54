"""Device selection (CUDA, then MPS, then the faster CPU path) with torch's probes mocked."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from napari_medcad.core.errors import MedcadError
from napari_medcad.core.image import Geometry, MedicalImage
from napari_medcad.core.preprocess import REFERENCE, gaussian, resample, resolve_device, select_device
from napari_medcad.core.preprocess import filters, resampling


@pytest.fixture
def accelerators(monkeypatch):
    """Set which accelerators torch reports: accelerators(cuda=True, mps=False)."""

    def set_available(cuda: bool = False, mps: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


def test_cuda_first_then_mps_then_cpu(accelerators):
    accelerators(cuda=True, mps=True)
    assert select_device() == "cuda"
    accelerators(cuda=False, mps=True)
    assert select_device() == "mps"
    accelerators(cuda=False, mps=False)
    assert select_device() == "cpu"


def test_auto_on_a_cpu_picks_each_steps_faster_implementation(accelerators):
    accelerators()
    assert resolve_device("auto", cpu_default="cpu") == "cpu"
    assert resolve_device("auto", cpu_default=REFERENCE) == REFERENCE
    accelerators(mps=True)
    assert resolve_device("auto", cpu_default=REFERENCE) == "mps"
    assert resolve_device("reference", cpu_default="cpu") == REFERENCE


def test_unavailable_or_unknown_devices_are_user_errors(accelerators):
    accelerators()
    with pytest.raises(MedcadError, match="CUDA is not available"):
        resolve_device("cuda:1", cpu_default="cpu")
    with pytest.raises(MedcadError, match="MPS is not available"):
        resolve_device("mps", cpu_default="cpu")
    with pytest.raises(MedcadError, match="unknown device 'gpu'"):
        resolve_device("gpu", cpu_default="cpu")
    accelerators(cuda=True)
    assert resolve_device("CUDA:1", cpu_default="cpu") == "cuda:1"


def test_without_torch_everything_runs_on_the_reference_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    assert select_device() == "cpu"
    assert resolve_device("auto", cpu_default="cpu") == REFERENCE
    with pytest.raises(MedcadError, match="needs PyTorch"):
        resolve_device("cpu", cpu_default="cpu")


def test_steps_run_on_the_selected_accelerator(accelerators, monkeypatch):
    """With CUDA reported, "auto" hands Gaussian smoothing and linear resampling to torch on it."""
    accelerators(cuda=True)
    used = []

    def recording(name, result_of):
        def run(blocks, *args, **kwargs):
            used.append((name, args[-1] if args else kwargs.get("device", args)))
            return result_of(blocks, *args, **kwargs)

        return run

    monkeypatch.setattr(filters, "gaussian_torch",
                        recording("gaussian", lambda b, s, t, d: np.zeros(b.shape, np.float32)))
    monkeypatch.setattr(resampling, "interpolate_linear_torch",
                        recording("resample", lambda b, d, **k: np.zeros((1, 4, 5, 6), np.float32)))
    image = MedicalImage(np.zeros((4, 5, 6), np.float32), Geometry.identity(3))
    gaussian(image)
    resample(image, 1.0)
    assert used == [("gaussian", "cuda"), ("resample", "cuda")]
