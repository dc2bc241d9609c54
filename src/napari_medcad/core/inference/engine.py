"""Tiled inference: MONAI's sliding window with Gaussian blending, mask skipping and fallbacks.

The image is cut into overlapping windows (MONAI ``sliding_window_inference``); windows go
through the network in batches; outputs are blended with MONAI's Gaussian importance map.

With a mask (the lungs, on chest CT) only the mask and a margin around it are searched:

* the mask's bounding box is split recursively wherever two boxes need fewer windows than
  one (the two lungs, the narrow apex and base), so each part of the mask gets its own tight
  box (:func:`plan_regions`); each box is grown, for free, to the extent its windows cover
  anyway, which gives the windows at its edges more context;
* MONAI tiles each box; a window holding no voxel of its box's share of the mask is not run;
* the boxes' outputs are blended as one sliding window would blend the windows that ran:
  a coverage channel and MONAI's own importance map give each voxel the Gaussian-weighted mean
  over exactly the windows that ran (a skipped window neither adds 0 nor dilutes its
  neighbours).  Voxels no window ran on get 0.

On an out-of-memory error the batch is halved, then the work moves to the CPU, and the report
says so.
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

#: MONAI's default width of the Gaussian blending window (sigma = 0.125 x window size)
SIGMA_SCALE = 0.125

Box = tuple[slice, ...]


@dataclass
class TileSettings:
    """How to tile: window size (z, y, x), overlap fraction, windows per batch, blending.

    ``mask_margin_zyx``: voxels of context kept around the mask (default: 1/12 of a window,
    4 x 8 x 8 voxels = 8 x 12 x 12 mm for the built-in CT detector; its boxes then grow further,
    for free, to their windows' extent).
    """

    roi_size_zyx: tuple[int, ...]
    overlap: float = 0.25
    batch_size: int = 4
    blend: str = "gaussian"
    mask_margin_zyx: tuple[int, ...] | None = None

    @classmethod
    def from_card(cls, inference: dict[str, Any]) -> "TileSettings":
        margin = inference.get("mask_margin_zyx")
        return cls(
            roi_size_zyx=tuple(int(v) for v in inference.get("roi_size_zyx", (64, 128, 128))),
            overlap=float(inference.get("overlap", 0.25)),
            batch_size=int(inference.get("batch_size", 4)),
            blend=str(inference.get("blend", "gaussian")),
            mask_margin_zyx=None if margin is None else tuple(int(v) for v in margin),
        )

    @property
    def margin(self) -> tuple[int, ...]:
        if self.mask_margin_zyx is not None:
            if len(self.mask_margin_zyx) != len(self.roi_size_zyx) or min(self.mask_margin_zyx) < 0:
                raise MedcadError(f"mask margin {self.mask_margin_zyx} does not fit windows of {self.roi_size_zyx}")
            return tuple(self.mask_margin_zyx)
        return tuple(max(1, r // 12) for r in self.roi_size_zyx)


@dataclass
class EngineReport:
    """What happened during inference: device, boxes, windows run and skipped, fallbacks, time.

    ``windows_plain`` is what one sliding window over the whole image would have run.
    """

    device: str = "cpu"
    precision: str = "fp32"
    regions: int = 0
    windows_plain: int = 0
    windows_total: int = 0
    windows_run: int = 0
    windows_skipped: int = 0
    batch_size: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _interval(size: int, roi: int, overlap: float) -> int:
    """MONAI's scan interval along one axis (``_get_scan_interval``)."""
    return roi if size <= roi else max(int(roi * (1 - overlap)), 1)


def _windows_along(size: int, roi: int, overlap: float) -> int:
    if size <= roi:
        return 1
    return int(math.ceil((size - roi) / _interval(size, roi, overlap))) + 1


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for this image size."""
    return math.prod(_windows_along(int(s), int(r), overlap) for s, r in zip(image_size, roi_size))


def mask_bounding_box(mask: np.ndarray, margin: Sequence[int]) -> Box | None:
    """Slices of the mask's bounding box grown by ``margin`` voxels; None for an empty mask."""
    coords = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
              for axis in range(mask.ndim)]
    if any(len(c) == 0 for c in coords):
        return None
    return tuple(
        slice(max(0, int(c[0]) - m), min(n, int(c[-1]) + 1 + m))
        for c, m, n in zip(coords, margin, mask.shape)
    )


def _grown(core: Box, margin: Sequence[int], shape: Sequence[int]) -> Box:
    return tuple(slice(max(0, s.start - m), min(n, s.stop + m)) for s, m, n in zip(core, margin, shape))


def _box_windows(core: Box, settings: TileSettings, shape: Sequence[int]) -> int:
    box = _grown(core, settings.margin, shape)
    return count_windows([s.stop - s.start for s in box], settings.roi_size_zyx, settings.overlap)


def _best_split(mask: np.ndarray, core: Box, settings: TileSettings, shape) -> tuple[int, list[Box]] | None:
    """The cut of ``core`` into two tight boxes that needs the fewest windows, or None."""
    sub = mask[core]
    ndim = sub.ndim
    offset = np.array([s.start for s in core])
    best_cost, best = _box_windows(core, settings, shape), None
    big = np.iinfo(np.int64).max // 4
    for axis in range(ndim):
        n = sub.shape[axis]
        if n < 2:
            continue
        # per slice along ``axis``: the first and last mask voxel along every axis
        first = np.full((n, ndim), big, np.int64)
        last = np.full((n, ndim), -1, np.int64)
        has = np.any(sub, axis=tuple(a for a in range(ndim) if a != axis))
        first[has, axis] = np.flatnonzero(has)
        last[has, axis] = np.flatnonzero(has)
        for other in range(ndim):
            if other == axis:
                continue
            rest = tuple(a for a in range(ndim) if a not in (axis, other))
            plane = np.any(sub, axis=rest) if rest else sub
            if other < axis:
                plane = plane.T  # rows along ``axis``
            rows = plane.any(axis=1)
            first[rows, other] = plane[rows].argmax(axis=1)
            last[rows, other] = plane.shape[1] - 1 - plane[rows, ::-1].argmax(axis=1)
        low_first = np.minimum.accumulate(first, axis=0)
        low_last = np.maximum.accumulate(last, axis=0)
        high_first = np.minimum.accumulate(first[::-1], axis=0)[::-1]
        high_last = np.maximum.accumulate(last[::-1], axis=0)[::-1]
        for cut in range(1, n):
            if low_last[cut - 1, axis] < 0 or high_last[cut, axis] < 0:
                continue  # one side holds no mask: cutting there only trims the box
            parts = [
                tuple(slice(int(o + a), int(o + b + 1)) for o, a, b in zip(offset, lo, hi))
                for lo, hi in ((low_first[cut - 1], low_last[cut - 1]), (high_first[cut], high_last[cut]))
            ]
            cost = sum(_box_windows(p, settings, shape) for p in parts)
            if cost < best_cost:
                best_cost, best = cost, parts
    return None if best is None else (best_cost, best)


def _region_of(core: Box, settings: TileSettings, shape: Sequence[int]) -> Box:
    """``core`` plus the margin, grown (centred) to the extent its windows cover anyway."""
    region = []
    for s, m, n, roi in zip(core, settings.margin, shape, settings.roi_size_zyx):
        start, stop = max(0, s.start - m), min(n, s.stop + m)
        size = stop - start
        count = _windows_along(size, roi, settings.overlap)
        extent = min(n, roi + (count - 1) * _interval(size, roi, settings.overlap) if size > roi else roi)
        begin = int(round((start + stop - extent) / 2))
        begin = min(max(0, begin), n - extent)
        region.append(slice(begin, begin + extent))
    return tuple(region)


def plan_regions(mask: np.ndarray, settings: TileSettings) -> list[tuple[Box, Box]]:
    """(core, region) boxes that cover ``mask``: cores are disjoint and hold every mask voxel;
    each region (core + margin, grown to its windows' extent) is what MONAI tiles."""
    whole = mask_bounding_box(mask, [0] * mask.ndim)
    if whole is None:
        return []
    cores, todo = [], [whole]
    while todo:
        core = todo.pop()
        split = _best_split(mask, core, settings, mask.shape)
        if split is None:
            cores.append(core)
        else:
            todo.extend(split[1])
    cores.sort(key=lambda c: tuple(s.start for s in c))
    return [(core, _region_of(core, settings, mask.shape)) for core in cores]


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

    With ``mask`` only the mask and its margin are searched (see the module's docstring); the
    output elsewhere is 0.  Returns an array (K, *spatial) of float32 probabilities and an
    :class:`EngineReport`.
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
    summary = EngineReport(windows_plain=count_windows([max(s, r) for s, r in zip(spatial_shape, settings.roi_size_zyx)],
                                                       settings.roi_size_zyx, settings.overlap))

    if mask is not None:
        if mask.shape != spatial_shape:
            raise MedcadError(f"mask shape {mask.shape} does not match the image {spatial_shape}")
        mask = np.asarray(mask, dtype=bool)
        regions = plan_regions(mask, settings)
        if not regions:
            summary.notes.append("the mask is empty: nothing to search")
            summary.seconds = time.perf_counter() - started
            return np.zeros((out_channels,) + spatial_shape, dtype=np.float32), summary
    else:
        whole = tuple(slice(0, n) for n in spatial_shape)
        regions = [(whole, whole)]
    summary.regions = len(regions)
    total = sum(count_windows([max(s.stop - s.start, r) for s, r in zip(region, settings.roi_size_zyx)],
                              settings.roi_size_zyx, settings.overlap) for _, region in regions)
    summary.windows_total = total

    torch_device = select_device(device)
    batch_size = max(1, int(settings.batch_size))
    while True:
        state = {"done": 0, "run": 0, "skipped": 0}
        try:
            probabilities = _sliding_window(
                network, volume, settings, torch_device, batch_size, regions, mask, activation, out_channels,
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

    summary.device = str(torch_device)
    summary.precision = _precision_name(torch_device)
    summary.windows_run, summary.windows_skipped = state["run"], state["skipped"]
    summary.batch_size = batch_size
    summary.seconds = time.perf_counter() - started
    return probabilities, summary


def _precision_name(device) -> str:
    dtype = autocast_dtype(device)
    return "fp32" if dtype is None else str(dtype).removeprefix("torch.")


def _run_network(network, batch, device, out_channels: int):
    """The network's float logits on one batch of windows, or a one-line MedcadError when the
    network does not fit its card (it fails on the card's input, or answers in another shape)
    or answers NaN.  Out-of-memory errors pass through: the caller retries them."""
    import torch

    try:
        with precision_context(device):
            logits = network(batch)
    except Exception as err:  # noqa: BLE001 - a user's network can raise anything
        if is_out_of_memory(err):
            raise
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        # TorchScript's interpreter puts its own traceback first and the error last
        reason = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
        raise MedcadError(f"the network failed on a batch of windows of shape {tuple(batch.shape)} "
                          f"(does its card match it?): {reason[:200]}") from None
    if isinstance(logits, (tuple, list)) and logits:
        logits = logits[0]
    if not isinstance(logits, torch.Tensor):
        raise MedcadError(f"the network returned {type(logits).__name__}, not a tensor of per-voxel scores")
    logits = logits.float()
    expected = (batch.shape[0], out_channels) + tuple(batch.shape[2:])
    if logits.ndim >= 2 and logits.shape[0] == batch.shape[0] and logits.shape[1] != out_channels:
        raise MedcadError(f"the network gives {logits.shape[1]} output channels; its card says {out_channels}")
    if tuple(logits.shape) != expected:
        raise MedcadError(f"the network answers windows {tuple(batch.shape)} with {tuple(logits.shape)}, "
                          f"not per-voxel scores {expected}: a segmentation network must keep the window's size")
    if bool(torch.isnan(logits).any()):  # +-inf is a saturated score, NaN is no answer
        raise MedcadError("the network gave NaN scores")
    return logits


def _sliding_window(network, volume, settings, device, batch_size, regions, mask, activation, out_channels, state,
                    total, progress):
    """MONAI's sliding window over each region; the regions' outputs blended into one array."""
    import torch
    from monai.data.utils import compute_importance_map
    from monai.inferers import sliding_window_inference

    network = network.to(device)
    roi = tuple(int(r) for r in settings.roi_size_zyx)
    spatial_shape = volume.shape[1:]
    # sum over the windows that ran of importance x probability, and of importance
    weighted = np.zeros((out_channels,) + spatial_shape, dtype=np.float32)
    weights = np.zeros(spatial_shape, dtype=np.float32)
    importance = compute_importance_map(roi, mode=settings.blend, sigma_scale=SIGMA_SCALE, device="cpu").numpy()

    for core, region in regions:
        block, valid = _pad_to(np.ascontiguousarray(volume[(slice(None),) + region], dtype=np.float32), roi)
        own = None
        if mask is not None:  # this region's share of the mask: the mask inside its core
            own = np.zeros(block.shape[1:], dtype=bool)
            inside = tuple(slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region))
            own[inside] = mask[core]
        windows_seen: list[tuple[slice, ...]] = []

        def predictor(windows: "torch.Tensor", coordinates: list) -> "torch.Tensor":
            spatial = [tuple(c[2:]) for c in coordinates]
            windows_seen.extend(spatial)
            keep = [i for i, where in enumerate(spatial) if own is None or bool(own[where].any())]
            # channels: the probabilities, then 1 where the window ran (its coverage)
            out = torch.zeros((windows.shape[0], out_channels + 1) + tuple(windows.shape[2:]),
                              dtype=torch.float32, device=device)
            if keep:
                logits = _run_network(network, windows[keep].to(device), device, out_channels)
                out[keep, :out_channels] = torch.softmax(logits, dim=1) if activation == "softmax" else torch.sigmoid(logits)
                out[keep, out_channels] = 1.0
            state["run"] += len(keep)
            state["skipped"] += len(coordinates) - len(keep)
            state["done"] += len(coordinates)
            report(progress, state["done"], total, f"windows ({state['skipped']} skipped outside the mask)")
            return out

        with torch.inference_mode():
            blended = sliding_window_inference(
                torch.from_numpy(block)[None],
                roi_size=roi,
                sw_batch_size=batch_size,
                predictor=predictor,
                overlap=settings.overlap,
                mode=settings.blend,
                sigma_scale=SIGMA_SCALE,
                sw_device=device,
                device=torch.device("cpu"),
                with_coord=True,
            )[0].numpy()
        # MONAI divided by the importance summed over all its windows; undo that, so windows
        # that did not run weigh nothing and the regions add up like one sliding window
        normaliser = np.zeros(block.shape[1:], dtype=np.float32)
        for where in windows_seen:
            normaliser[where] += importance
        target = (slice(None),) + region
        weighted[target] += (blended[:out_channels] * normaliser)[(slice(None),) + valid]
        weights[region] += (blended[out_channels] * normaliser)[valid]
        del blended, normaliser

    ran = weights > 0
    np.divide(weighted, weights, out=weighted, where=ran)
    weighted[:, ~ran] = 0.0
    np.clip(weighted, 0.0, 1.0, out=weighted)
    return weighted
