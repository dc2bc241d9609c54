"""npe2 writers: Labels and Image layers to NIfTI, NRRD or MetaImage with their geometry.

The geometry written is the layer's own transform (what napari shows), so a label map drawn on
an image of this plugin lands on the same patient positions in SimpleITK, nibabel or 3D Slicer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import MedcadError
from ..core.image import MedicalImage
from ..core.io import write_image
from .layers import META_KEY, geometry_from_layer_state


def _spatial_ndim(data: np.ndarray, rgb: bool) -> int:
    ndim = data.ndim - (1 if rgb else 0)
    if ndim not in (2, 3):
        raise MedcadError(f"only 2-D and 3-D layers can be saved in medical formats (this one is {ndim}-D)")
    return ndim


def _smallest_label_dtype(data: np.ndarray) -> np.ndarray:
    high = int(data.max()) if data.size else 0
    if int(data.min() if data.size else 0) < 0:
        return data.astype(np.int32)
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return data.astype(dtype, copy=False)
    return data


def _write(path: str, data: Any, meta: dict, rgb: bool) -> list[str]:
    data = np.asarray(data[0] if isinstance(data, list) else data)
    ndim = _spatial_ndim(data, rgb)
    info = meta.get("metadata", {}).get(META_KEY, {}) if isinstance(meta.get("metadata"), dict) else {}
    image = MedicalImage(
        array=data,
        geometry=geometry_from_layer_state(meta, ndim),
        modality=info.get("modality", "OT"),
        name=meta.get("name", "layer"),
        rgb=rgb,
    )
    return [str(write_image(image, path))]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    return _write(path, _smallest_label_dtype(np.asarray(data)), meta, rgb=False)


def write_image_layer(path: str, data: Any, meta: dict) -> list[str]:
    array = np.asarray(data[0] if isinstance(data, list) else data)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    return _write(path, array, meta, rgb=bool(meta.get("rgb", False)))
