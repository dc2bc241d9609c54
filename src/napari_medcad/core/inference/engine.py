"""Tiled inference: MONAI's sliding window with Gaussian blending, mask skipping and fallbacks.

The image is cut into overlapping windows (MONAI ``sliding_window_inference``); windows go
through the network in batches; outputs are blended with a Gaussian importance map.  Two
savings on chest CT: the volume is first cropped to the bounding box of the mask (lungs),
and windows with no mask voxel are not run at all (their output is 0).  On an out-of-memory
error the batch is halved, then the work moves to the CPU, and the report says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import MedcadError
from ..progress import ProgressFn, report
from .devices import autocast_dtype, is_out_of_memory, precision_context, select_device


@dataclass
class TileSettings:
    """How to tile: window size (z, y, x), overlap fraction, windows per batch, blending."""

    roi_size_zyx: tuple[int, ...]
    overlap: float = 0.25
    batch_size: int = 4
    blend: str = "gaussian"

    @classmethod
    def from_card(cls, inference: dict[str, Any]) -> "TileSettings":
        return cls(
            roi_size_zyx=tuple(int(v) for v in inference.get("roi_size_zyx", (64, 128, 128))),
            overlap=float(inference.get("overlap", 0.25)),
            batch_size=int(inference.get("batch_size", 4)),
            blend=str(inference.get("blend", "gaussian")),
        )


@dataclass
class EngineReport:
    """What happened during inference: device, windows run and skipped, fallbacks, time."""

    device: str = "cpu"
    precision: str = "fp32"
    windows_total: int = 0
    windows_run: int = 0
    windows_skipped: int = 0
    batch_size: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for this image size."""
    total = 1
    for size, roi in zip(image_size, roi_size):
        size = max(size, roi)
        interval = roi if size == roi else max(int(roi * (1 - overlap)), 1)
        total *= int(math.ceil((size - roi) / interval)) + 1 if size > roi else 1
    return total


def mask_bounding_box(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...] | None:
    """Slices of the mask's bounding box grown by ``margin`` voxels; None for an empty mask."""
    coords = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
              for axis in range(mask.ndim)]
    if any(len(c) == 0 for c in coords):
        return None
    return tuple(
        slice(max(0, int(c[0]) - m), min(n, int(c[-1]) + 1 + m))
        for c, m, n in zip(coords, margin, mask.shape)
    )


def _pad_to(array: np.ndarray, minimum: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the trailing spatial dims up to ``minimum``; return the slices of the original."""
    spatial = array.shape[-len(minimum):]
    pads = [(0, max(0, m - s)) for s, m in zip(spatial, minimum)]
    if not any(after for _, after in pads):
        return array, tuple(slice(None) for _ in spatial)
    full = [(0, 0)] * (array.ndim - len(minimum)) + pads
    padded = np.pad(array, full, mode="constant", constant_values=float(array.min()) if array.size else 0)
    return padded, tuple(slice(0, s) for s in spatial)


def infer_probabilities(
    network: Callable,
    volume: np.ndarray,
    settings: TileSettings,
    *,
    mask: np.ndarray | None = None,
    device: str = "auto",
    activation: str = "sigmoid",
    out_channels: int = 1,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, EngineReport]:
    """Per-voxel class probabilities of ``network`` on ``volume`` ((C,) z, y, x or (C,) y, x).

    Returns an array (K, *spatial) of float32 probabilities and an :class:`EngineReport`.
    """
    import torch

    spatial_dims = len(settings.roi_size_zyx)
    if volume.ndim == spatial_dims:
        volume = volume[None]
    if volume.ndim != spatial_dims + 1:
        raise MedcadError(f"the model expects {spatial_dims}-D input; the image has shape {volume.shape[1:]}")
    if not np.all(np.isfinite(volume)):
        raise MedcadError("the prepared image holds NaN or infinite values")
    spatial_shape = volume.shape[1:]
    started = time.perf_counter()
    summary = EngineReport()

    # crop to the mask's bounding box (plus half a window) so empty margins cost nothing
    region = tuple(slice(0, n) for n in spatial_shape)
    if mask is not None:
        if mask.shape != spatial_shape:
            raise MedcadError(f"mask shape {mask.shape} does not match the image {spatial_shape}")
        box = mask_bounding_box(mask, [r // 2 for r in settings.roi_size_zyx])
        if box is None:
            summary.notes.append("the mask is empty: nothing to search")
            summary.seconds = time.perf_counter() - started
            return np.zeros((out_channels,) + spatial_shape, dtype=np.float32), summary
        region = box
    cropped = np.ascontiguousarray(volume[(slice(None),) + region], dtype=np.float32)
    cropped, valid = _pad_to(cropped, settings.roi_size_zyx)
    crop_mask = None
    if mask is not None:
        crop_mask, _ = _pad_to(np.ascontiguousarray(mask[region]).astype(bool), settings.roi_size_zyx)
        crop_mask = torch.from_numpy(crop_mask)
    total = count_windows(cropped.shape[1:], settings.roi_size_zyx, settings.overlap)
    summary.windows_total = total

    torch_device = select_device(device)
    batch_size = max(1, int(settings.batch_size))
    while True:
        state = {"done": 0, "run": 0, "skipped": 0}
        try:
            probabilities = _sliding_window(
                network, cropped, settings, torch_device, batch_size, crop_mask, activation, out_channels,
                state, total, progress,
            )
            break
        except Exception as err:  # noqa: BLE001 - only out-of-memory errors are retried
            if not is_out_of_memory(err):
                raise
            if torch_device.type == "cuda":
                torch.cuda.empty_cache()
            if batch_size > 1:
                summary.notes.append(f"out of memory on {torch_device} with {batch_size} windows per batch; retrying with {batch_size // 2}")
                batch_size //= 2
            elif torch_device.type != "cpu":
                summary.notes.append(f"out of memory on {torch_device} even one window at a time; continuing on the CPU")
                torch_device = torch.device("cpu")
                batch_size = max(1, int(settings.batch_size))
            else:
                raise MedcadError("not enough memory to run the model on this image, even on the CPU") from None

    output = np.zeros((probabilities.shape[0],) + spatial_shape, dtype=np.float32)
    output[(slice(None),) + region] = probabilities[(slice(None),) + valid]
    summary.device = str(torch_device)
    summary.precision = _precision_name(torch_device)
    summary.windows_run, summary.windows_skipped = state["run"], state["skipped"]
    summary.batch_size = batch_size
    summary.seconds = time.perf_counter() - started
    return output, summary


def _precision_name(device) -> str:
    dtype = autocast_dtype(device)
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def _sliding_window(network, volume, settings, device, batch_size, mask, activation, out_channels, state, total, progress):
    import torch
    from monai.inferers import sliding_window_inference

    network = network.to(device)
    inputs = torch.from_numpy(volume)[None]  # (1, C, *spatial)

    def predictor(windows: "torch.Tensor", coordinates: list) -> "torch.Tensor":
        keep = [i for i, c in enumerate(coordinates) if mask is None or bool(mask[tuple(c[2:])].any())]
        out = torch.zeros((windows.shape[0], out_channels) + tuple(windows.shape[2:]), dtype=torch.float32, device=device)
        if keep:
            with precision_context(device):
                logits = network(windows[keep].to(device))
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            logits = logits.float()
            if logits.shape[1] != out_channels:
                raise MedcadError(f"the network gives {logits.shape[1]} output channels; its card says {out_channels}")
            out[keep] = torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)
        state["run"] += len(keep)
        state["skipped"] += len(coordinates) - len(keep)
        state["done"] += len(coordinates)
        report(progress, state["done"], total, f"windows ({state['skipped']} skipped outside the mask)")
        return out

    with torch.inference_mode():
        result = sliding_window_inference(
            inputs,
            roi_size=settings.roi_size_zyx,
            sw_batch_size=batch_size,
            predictor=predictor,
            overlap=settings.overlap,
            mode=settings.blend,
            sw_device=device,
            device=torch.device("cpu"),
            with_coord=True,
        )
    return result[0].cpu().numpy().astype(np.float32, copy=False)
