"""Explanation heatmaps (Grad-CAM, attention maps from ``core.explain``) as napari Image layers.

The heatmap is a MedicalImage on its source image's grid, so the layer gets exactly the source
layer's scale/translate/affine from :func:`layers.image_layer_data` and lies over it voxel for
voxel.  It is drawn with a colormap (``inferno``), additive blending and an adjustable opacity,
and carries its role, source layer and the explanation's details (method, model, probability)
in ``metadata["medcad"]``.  One explanation layer per source layer and model: adding it again
replaces the old one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import MedcadError
from ..core.image import MedicalImage
from .layers import META_KEY, geometry_from_layer, image_layer_data, layer_metadata

ROLE_EXPLANATION = "explanation"
EXPLANATION_COLORMAP = "inferno"
DEFAULT_OPACITY = 0.6


def explanation_layer_data(heatmap: MedicalImage, source_layer=None, *, opacity: float = DEFAULT_OPACITY,
                           colormap: str = EXPLANATION_COLORMAP, **overrides) -> tuple[np.ndarray, dict, str]:
    """An Image LayerDataTuple for ``heatmap`` (from ``core.explain.explain``) over its source.

    With ``source_layer`` the heatmap must lie on that layer's grid (same shape and geometry),
    which is what ``explain`` returns for the layer's image.
    """
    if heatmap.rgb or heatmap.array.ndim != heatmap.ndim:
        raise MedcadError("an explanation heatmap is a single-channel image")
    if not 0.0 <= float(opacity) <= 1.0:
        raise MedcadError(f"opacity must lie between 0 and 1, got {opacity}")
    source_name = heatmap.metadata.get("source_image", "")
    if source_layer is not None:
        source_name = source_layer.name
        geometry = geometry_from_layer(source_layer)
        shape = tuple(np.shape(source_layer.data)[: geometry.ndim])
        same = (
            shape == heatmap.spatial_shape
            and np.allclose(geometry.affine_zyx, heatmap.geometry.affine_zyx, atol=1e-6)
        )
        if not same:
            raise MedcadError(f"the explanation does not lie on the grid of layer '{source_layer.name}'")
    details = {k: v for k, v in heatmap.metadata.items() if isinstance(v, (str, int, float, bool, list, dict))}
    kwargs: dict[str, Any] = {
        "name": heatmap.name,
        "colormap": colormap,
        "blending": "additive",
        "opacity": float(opacity),
        "contrast_limits": (0.0, 1.0),
        "metadata": layer_metadata(heatmap, role=ROLE_EXPLANATION, source_layer=source_name, explanation=details),
    }
    kwargs.update(overrides)
    array, layer_kwargs, kind = image_layer_data(heatmap, **kwargs)
    if kind != "image":
        raise MedcadError("an explanation heatmap must become an Image layer")
    return np.asarray(array, np.float32), layer_kwargs, kind


def is_explanation(layer) -> bool:
    info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
    return info.get("role") == ROLE_EXPLANATION


def explanation_layers_of(layers, source_name: str) -> list:
    """The explanation layers made for the layer called ``source_name``."""
    return [layer for layer in layers if is_explanation(layer)
            and layer.metadata[META_KEY].get("source_layer") == source_name]


def add_explanation_layer(viewer, heatmap: MedicalImage, source_layer, *, opacity: float = DEFAULT_OPACITY,
                          colormap: str = EXPLANATION_COLORMAP):
    """Add (or replace) the explanation of ``source_layer`` by the heatmap's model, directly above it.

    A model's new explanation replaces its old one but keeps how the reader set it up (opacity,
    colormap, visibility); a 2-D model explains one slice at a time, so the slices it explained
    before are kept, and the new ones replace theirs."""
    data, kwargs, _ = explanation_layer_data(heatmap, source_layer, opacity=opacity, colormap=colormap)
    model = heatmap.metadata.get("model")
    for old in explanation_layers_of(viewer.layers, source_layer.name):
        if old.metadata[META_KEY].get("explanation", {}).get("model") != model:
            continue
        kwargs.update(opacity=old.opacity, colormap=old.colormap, visible=old.visible)
        before, now = old.metadata[META_KEY]["explanation"].get("slices"), heatmap.metadata.get("slices")
        if isinstance(before, list) and isinstance(now, list) and np.shape(old.data) == np.shape(data):
            merged = np.array(old.data, copy=True)
            merged[now] = data[now]
            data = merged
            kwargs["metadata"][META_KEY]["explanation"]["slices"] = sorted(set(before) | set(now))
        viewer.layers.remove(old)
    layer = viewer.add_image(data, **kwargs)
    position = viewer.layers.index(source_layer) + 1
    viewer.layers.move(viewer.layers.index(layer), position)
    return layer


def show_explanations(viewer, source_name: str, visible: bool) -> int:
    """Show or hide the explanation layers of a source layer; returns how many there are."""
    layers = explanation_layers_of(viewer.layers, source_name)
    for layer in layers:
        layer.visible = bool(visible)
    return len(layers)
