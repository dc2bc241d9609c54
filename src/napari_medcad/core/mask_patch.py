"""The voxels one mask edit changed, kept small enough to save with every review action.

A reader's stroke in the masks layer touches a few hundred voxels of a volume of millions; the
review file must hold every stroke (reopening puts the masks back as the reader left them) and
is rewritten after every action, so a stroke is stored as the bounding box of the voxels it
changed, which of them changed, and their values before and after, compressed.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .errors import MedcadError


def _pack(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw, 6)).decode("ascii")


def _unpack(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))


@dataclass(frozen=True, eq=False)
class MaskPatch:
    """Voxels of the findings' label map that one action changed, compactly.

    ``start``: the corner of the changed voxels' bounding box; ``changed``: which voxels of the box
    changed (bool, the box's shape); ``before`` / ``after``: their values, in C order.  Saved as
    the box, the packed change mask and the two value lists, each zlib-compressed and base64'd:
    a painted nodule of a few hundred voxels takes a few hundred bytes of the review file."""

    start: tuple[int, ...]
    changed: np.ndarray
    before: np.ndarray
    after: np.ndarray

    @classmethod
    def of(cls, changes: Iterable[tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]]) -> "MaskPatch | None":
        """The patch of a sequence of writes ``(voxel indices, values before, values after)``, in
        the order they were made: a voxel written twice keeps its first value before and its last
        after; voxels that end as they began are left out.  None when nothing changed."""
        changes = [(tuple(np.asarray(i, np.int64).reshape(-1) for i in indices), np.asarray(old).reshape(-1),
                    np.broadcast_to(np.asarray(new), np.shape(np.asarray(old).reshape(-1))))
                   for indices, old, new in changes]
        changes = [change for change in changes if len(change[1])]
        if not changes:
            return None
        ndim, dtype = len(changes[0][0]), changes[0][1].dtype
        low = np.array([min(int(c[0][d].min()) for c in changes) for d in range(ndim)])
        high = np.array([max(int(c[0][d].max()) for c in changes) for d in range(ndim)]) + 1
        touched = np.zeros(tuple(high - low), bool)
        before, after = np.zeros(touched.shape, dtype), np.zeros(touched.shape, dtype)
        local = [tuple(i - l for i, l in zip(indices, low)) for indices, _, _ in changes]
        for where, (_, _, new) in zip(local, changes):
            after[where] = new
            touched[where] = True
        for where, (_, old, _) in zip(reversed(local), reversed(changes)):
            before[where] = old
        changed = touched & (before != after)
        if not changed.any():
            return None
        corner = [int(a.min()) for a in np.nonzero(changed)]
        box = tuple(slice(c, int(a.max()) + 1) for c, a in zip(corner, np.nonzero(changed)))
        changed = changed[box]
        return cls(tuple(int(v) for v in low + corner), changed, before[box][changed], after[box][changed])

    @property
    def box(self) -> tuple[slice, ...]:
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.changed.shape))

    def values(self) -> set[int]:
        """The label values the patch took voxels from or gave voxels to."""
        return {int(v) for v in np.unique(np.concatenate([self.before, self.after]))}

    def apply(self, array, undoing: bool = False) -> None:
        """Write the patch into ``array`` (``undoing``: put the values before back).  Only voxels
        that still hold what the other direction left are written, so a later edit elsewhere in
        the same mask is kept."""
        if len(self.start) != np.ndim(array) or any(
                s < 0 or s + n > size for s, n, size in zip(self.start, self.changed.shape, np.shape(array))):
            raise MedcadError(f"mask edits of the review (at {list(self.start)}, {list(self.changed.shape)} voxels) "
                              f"do not fit the masks layer ({list(np.shape(array))})")
        source, target = (self.after, self.before) if undoing else (self.before, self.after)
        region = np.array(array[self.box])
        values = region[self.changed]
        here = values == source
        values[here] = target[here]
        region[self.changed] = values
        array[self.box] = region

    def to_dict(self) -> dict[str, Any]:
        dtype = self.before.dtype.newbyteorder("<")
        return {"start": list(self.start), "shape": list(self.changed.shape), "dtype": dtype.str,
                "changed": _pack(np.packbits(self.changed, axis=None).tobytes()),
                "before": _pack(self.before.astype(dtype).tobytes()), "after": _pack(self.after.astype(dtype).tobytes())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MaskPatch":
        """A patch read back; ValueError or TypeError if it is damaged."""
        if not isinstance(data, dict):
            raise TypeError("mask voxels are not an object")
        try:
            dtype = np.dtype(str(data["dtype"]))
            start, shape = [int(v) for v in data["start"]], [int(v) for v in data["shape"]]
            bits = np.frombuffer(_unpack(data["changed"]), np.uint8)
            before = np.frombuffer(_unpack(data["before"]), dtype)
            after = np.frombuffer(_unpack(data["after"]), dtype)
        except (KeyError, zlib.error, base64.binascii.Error, UnicodeError, AttributeError) as err:
            raise ValueError(f"mask voxels damaged ({type(err).__name__})") from None
        size = math.prod(shape)
        if dtype.kind not in "iub" or len(start) != len(shape) or min(shape, default=0) < 1 or len(bits) * 8 < size:
            raise ValueError("mask voxels damaged (box)")
        changed = np.unpackbits(bits, count=size).astype(bool).reshape(shape)
        if not (int(changed.sum()) == len(before) == len(after)):
            raise ValueError("mask voxels damaged (counts)")
        return cls(tuple(start), changed, before.astype(dtype.newbyteorder("=")), after.astype(dtype.newbyteorder("=")))
