"""One padded crop for every patch the models see, so training and inference cut them alike."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def padded_crop(array: np.ndarray, start, size: Sequence[int], fill) -> np.ndarray:
    """The ``size`` block of ``array`` whose first voxel is ``start`` (may lie outside), with
    ``fill`` where the block leaves the array (MONAI's sliding window pads with 0 the same way)."""
    start = np.asarray(start, int)
    out = np.full(tuple(int(k) for k in size), fill, dtype=array.dtype)
    source = tuple(slice(max(0, s), min(n, s + int(k))) for s, k, n in zip(start, size, array.shape))
    if any(s.start >= s.stop for s in source):
        return out
    out[tuple(slice(a.start - s, a.stop - s) for a, s in zip(source, start))] = array[source]
    return out


def centred_crop(array: np.ndarray, centre, size: Sequence[int], fill) -> np.ndarray:
    """The ``size`` block around the voxel nearest ``centre`` (its centre voxel: ``size // 2``)."""
    return padded_crop(array, np.round(np.asarray(centre, float)).astype(int) - np.asarray(size, int) // 2, size, fill)
