"""Which device runs a model, and at what precision.

``auto`` takes CUDA, then Apple MPS, then the CPU.  Mixed precision is used on CUDA only
(bf16 where the GPU supports it, else fp16); MPS and CPU run in fp32, where autocast is
slower or unsupported for 3D convolutions.
"""

from __future__ import annotations

import contextlib

from ..errors import MedcadError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: str = "auto"):
    """A torch.device for ``requested`` (auto | cpu | cuda | cuda:N | mps)."""
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if cuda_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not cuda_available():
            raise MedcadError("CUDA was requested but no CUDA GPU is available (use --device auto or cpu)")
        return torch.device(requested)
    if requested == "mps":
        if not mps_available():
            raise MedcadError("Apple MPS was requested but is not available (use --device auto or cpu)")
        return torch.device("mps")
    raise MedcadError(f"unknown device '{requested}' (choose from {', '.join(DEVICE_CHOICES)})")


def autocast_dtype(device):
    """The reduced precision used on ``device``, or None for full fp32."""
    import torch

    if device.type != "cuda":
        return None
    is_bf16 = getattr(torch.cuda, "is_bf16_supported", lambda: False)
    return torch.bfloat16 if is_bf16() else torch.float16


def precision_context(device):
    """``torch.autocast`` on CUDA, a no-op elsewhere."""
    import torch

    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures, however torch reports them."""
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, (RuntimeError, MemoryError)) and "out of memory" in str(err).lower()
