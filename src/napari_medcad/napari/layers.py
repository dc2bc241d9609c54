"""MedicalImage <-> napari layers: the one adapter between the core and napari.

napari's world is patient space: LPS millimetres in (z, y, x) order.  Image-grid layers
(Image, Labels, heatmaps, Shapes boxes) carry their image's scale/translate (and an affine when
the direction matrix is not the identity); the truth about where a layer lies is always its
own transform, so a layer the user moved or made by hand is saved where napari shows it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..core.errors import MedcadError
from ..core.image import Geometry, MedicalImage

#: key of this plugin's entry in a layer's ``metadata``
META_KEY = "medcad"

#: (level, width) used when a CT carries no window of its own: the lung window
DEFAULT_CT_WINDOW = (-600.0, 1500.0)


def affine_from_transform(
    ndim: int,
    scale=None,
    translate=None,
    rotate=None,
    shear=None,
    affine=None,
) -> np.ndarray:
    """napari's data->world matrix for a layer's transform settings (as in ``_get_state``)."""
    from napari.utils.transforms import Affine, CompositeAffine

    inner = CompositeAffine(
        scale=scale if scale is not None else np.ones(ndim),
        translate=translate if translate is not None else np.zeros(ndim),
        rotate=rotate if rotate is not None else np.eye(ndim),
        shear=shear if shear is not None else np.zeros(ndim * (ndim - 1) // 2),
        ndim=ndim,
    )
    outer = Affine(affine_matrix=np.asarray(affine)) if affine is not None else Affine(ndim=ndim)
    return outer.compose(inner).affine_matrix


def geometry_from_layer_state(state: Mapping[str, Any], ndim: int) -> Geometry:
    """The ITK geometry of a layer from its state dict (a writer's ``meta``, or ``_get_state``)."""
    matrix = affine_from_transform(
        ndim,
        scale=state.get("scale"),
        translate=state.get("translate"),
        rotate=state.get("rotate"),
        shear=state.get("shear"),
        affine=state.get("affine"),
    )
    if matrix.shape != (ndim + 1, ndim + 1):
        raise MedcadError(f"the layer has {matrix.shape[0] - 1} dimensions; 2-D or 3-D expected")
    return Geometry.from_affine_zyx(matrix)


def geometry_from_layer(layer) -> Geometry:
    """Where napari shows ``layer``, as ITK geometry (spatial dims of an RGB image only)."""
    ndim = layer.ndim
    if ndim not in (2, 3):
        raise MedcadError(f"layer '{layer.name}' has {ndim} dimensions; 2-D and 3-D images are supported")
    return geometry_from_layer_state(
        {
            "scale": layer.scale,
            "translate": layer.translate,
            "rotate": layer.rotate,
            "shear": layer.shear,
            "affine": layer.affine.affine_matrix,
        },
        ndim,
    )


def image_from_layer(layer) -> MedicalImage:
    """A MedicalImage view of an Image or Labels layer (no copy of the voxels)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, Mapping) else {}
    return MedicalImage(
        array=np.asarray(data),
        geometry=geometry_from_layer(layer),
        modality=info.get("modality", "OT"),
        name=layer.name,
        rgb=bool(getattr(layer, "rgb", False)),
        metadata=dict(info.get("metadata", {})),
    )


def layer_metadata(image: MedicalImage, **extra) -> dict[str, Any]:
    """What our layers keep in ``layer.metadata``: modality and safe header fields."""
    return {
        META_KEY: {
            "modality": image.modality,
            "geometry": image.geometry.to_dict(),
            "metadata": dict(image.metadata),
            **extra,
        }
    }


def looks_like_labels(image: MedicalImage) -> bool:
    """Integer images with a handful of non-negative values are label maps (masks, segmentations)."""
    array = image.array
    if image.rgb or not np.issubdtype(array.dtype, np.integer) or image.modality == "CT":
        return False
    sample = array[:: max(1, array.shape[0] // 32)] if array.ndim == 3 else array
    if sample.size and sample.min() < 0:
        return False
    values = np.unique(sample)
    return len(values) <= 16


def display_range(image: MedicalImage) -> tuple[float, float]:
    """Initial contrast limits: the file's window, a lung window for CT, else robust percentiles."""
    meta = image.metadata
    if "window_center" in meta and "window_width" in meta and meta["window_width"] > 0:
        level, width = meta["window_center"], meta["window_width"]
    elif image.modality == "CT":
        level, width = DEFAULT_CT_WINDOW
    else:
        array = image.array
        sample = array[:: max(1, array.shape[0] // 32)] if array.ndim == 3 else array
        low, high = np.percentile(sample, (0.5, 99.5)) if sample.size else (0.0, 1.0)
        if high <= low:
            high = low + 1
        return float(low), float(high)
    return float(level - width / 2), float(level + width / 2)


def image_layer_data(image: MedicalImage, **overrides) -> tuple[np.ndarray, dict, str]:
    """A LayerDataTuple that places ``image`` in patient space (Image or Labels layer)."""
    kwargs: dict[str, Any] = {
        "name": image.name,
        "metadata": layer_metadata(image),
        **image.geometry.napari_transform(),
    }
    if looks_like_labels(image):
        kwargs.update(overrides)
        return image.array, kwargs, "labels"
    kwargs["rgb"] = image.rgb
    if not image.rgb:
        kwargs["colormap"] = "gray"
        kwargs["contrast_limits"] = display_range(image)
    kwargs.update(overrides)
    return image.array, kwargs, "image"


def labels_layer_data(array: np.ndarray, image_layer_or_image, name: str, **overrides) -> tuple[np.ndarray, dict, str]:
    """A Labels LayerDataTuple on exactly the grid of an image layer (or MedicalImage)."""
    source = (
        image_layer_or_image
        if isinstance(image_layer_or_image, MedicalImage)
        else image_from_layer(image_layer_or_image)
    )
    if tuple(array.shape) != source.spatial_shape:
        raise MedcadError(
            f"labels of shape {tuple(array.shape)} do not fit the image grid {source.spatial_shape}"
        )
    kwargs = {
        "name": name,
        "metadata": layer_metadata(source, source_layer=source.name),
        **source.geometry.napari_transform(),
    }
    kwargs.update(overrides)
    return array, kwargs, "labels"

