"""Why a classifier said "nodule": heatmaps on the source image's own grid.

* CNN and RNN families: Grad-CAM (MONAI's ``monai.visualize.GradCAM``) of the "nodule" class at
  the card's target layer (``inference.explain.target_layer``).  For the LSTM slice aggregator
  the target layer is its per-slice encoder, so every slice gets its own map, weighted by the
  gradients of the scan-level score.
* Attention family: the attention weights the model returns itself
  (``forward(x, return_attention=True)``): the class token's attention over image tokens, or the
  gated MIL attention over slice patches.  Nothing is estimated after the fact.

How a heatmap is made: the image goes through the card's preprocessing (resampling to the card's
grid, then its intensity steps unless ``preprocess=False`` says the image already has them);
windows of the card's input size (``inference.roi_size_yx`` / ``roi_size_zyx``, overlapping by
``inference.overlap``) are explained; each window's map is scaled to a maximum of 1 and then
multiplied by that window's probability, and overlapping windows keep the larger value.  The map
is then resampled (linear, world positions kept) onto the source image's geometry, so napari
shows it with the image's own scale/translate/affine.  ``metadata["probability"]`` is the
largest window probability.

Windows whose middle half (on every axis) holds no voxel of the lungs are skipped when the card
asks for it (``inference.mask: lung``): the built-in classifiers learnt from crops centred in the
lungs, and elsewhere they fired on air, streak artefacts and the chest wall (lung1: 61-95% of the
heat lay outside the lungs).  The lung mask is made on the image in Hounsfield units; a user's ``mask``
replaces it; an image that cannot give one (not a CT in HU, or ``preprocess=False``) is explained
whole, and ``metadata["mask"]`` says which happened.

A 2-D model on a 3-D image explains the chosen ``slices`` (default: all), each as a 2-D image
with the in-plane geometry of the volume; other slices stay 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..errors import MedcadError
from ..image import Geometry, MedicalImage
from ..models.card import ModelCard
from ..preprocess.common import check_ct
from ..progress import ProgressFn, report, scaled

METHODS = ("gradcam", "attention")


def explanation_method(card: ModelCard) -> str:
    """``gradcam`` or ``attention``: the card's ``inference.explain.method`` or its family's default."""
    settings = card.inference.get("explain", {}) or {}
    method = settings.get("method")
    if method is None:
        if card.family in ("cnn", "rnn"):
            method = "gradcam"
        elif card.family == "attention":
            method = "attention"
        elif card.family == "gnn":
            raise MedcadError(f"model '{card.name}' is a graph model: it is explained by its graph view, not a heatmap")
        else:
            raise MedcadError(f"model '{card.name}': no explanation for family '{card.family}'")
    if method not in METHODS:
        raise MedcadError(f"model '{card.name}': unknown explanation method '{method}' (known: {', '.join(METHODS)})")
    if card.task != "classification":
        raise MedcadError(f"model '{card.name}' is a {card.task} model; heatmap explanations are for classifiers")
    return method


def _roi(card: ModelCard) -> tuple[int, ...]:
    key = "roi_size_yx" if card.dims == 2 else "roi_size_zyx"
    roi = card.inference.get(key)
    if not roi or len(roi) != card.dims:
        raise MedcadError(f"model card '{card.name}' lacks inference.{key}")
    return tuple(int(v) for v in roi)


def _starts(length: int, size: int, overlap: float) -> list[int]:
    if length <= size:
        return [0]
    stride = max(1, int(round(size * (1.0 - overlap))))
    count = math.ceil((length - size) / stride) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - size, count)})


def slice_maps_as_volumes(maps, batch_shape):
    """A slice encoder's Grad-CAM, one map per slice ((B*D, [1,] h, w)), as (B, D, h, w) for a batch
    of volumes of ``batch_shape`` (B, C, D, H, W): the 3-D models' encoders see each slice alone."""
    return maps.reshape(batch_shape[0], batch_shape[2], *maps.shape[-2:])


def _window_maps(network, method: str, card: ModelCard, batch: np.ndarray):
    """(probabilities (B,), maps (B, *roi)) for one batch of windows (B, 1, *roi)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(batch, np.float32))
    roi = tuple(batch.shape[2:])
    if method == "attention":
        with torch.no_grad():
            logits, attention = network(x, return_attention=True)
        maps = attention[:, None].float()
    else:
        from monai.visualize import GradCAM

        layer = (card.inference.get("explain", {}) or {}).get("target_layer")
        if not layer or layer not in dict(network.named_modules()):
            raise MedcadError(f"model card '{card.name}': Grad-CAM needs inference.explain.target_layer naming a layer")
        cam = GradCAM(nn_module=network, target_layers=layer, postprocessing=lambda m: m)
        with torch.enable_grad():
            raw = cam.compute_map(x.clone().requires_grad_(True), class_idx=1)  # ReLU(sum_c w_c A_c) at the layer
        with torch.no_grad():
            logits = network(x)
        maps = raw.detach().float()
        if card.dims == 3:
            maps = slice_maps_as_volumes(maps, x.shape)[:, None]
    probabilities = torch.softmax(logits.detach(), dim=1)[:, 1].numpy()
    mode = "bilinear" if card.dims == 2 else "trilinear"
    maps = F.interpolate(maps, size=roi, mode=mode, align_corners=False)[:, 0].numpy()
    return probabilities.astype(np.float64), maps


def _explain_grid(array: np.ndarray, network, method: str, card: ModelCard, progress: ProgressFn | None,
                  keep: np.ndarray | None = None, batch_size: int = 8):
    """Heatmap on the card's grid for a prepared array, the largest window probability, the number of
    windows explained and skipped.  ``keep`` (the array's shape): windows holding none of it are skipped."""
    roi = _roi(card)
    overlap = float(card.inference.get("overlap", 0.5))
    padded_shape = tuple(max(n, r) for n, r in zip(array.shape, roi))
    padded = np.zeros(padded_shape, np.float32)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    heat = np.zeros(padded_shape, np.float32)
    starts = [s.ravel() for s in np.meshgrid(*[_starts(n, r, overlap) for n, r in zip(padded_shape, roi)],
                                            indexing="ij")]
    corners = np.stack(starts, axis=1)
    total = len(corners)
    if keep is not None:
        padded_keep = np.zeros(padded_shape, bool)
        padded_keep[tuple(slice(0, n) for n in keep.shape)] = keep
        # the window's middle half on every axis: training crops were centred in the lungs (at 0.5
        # overlap the middle halves tile the image, so no lung voxel goes unexplained)
        held = [bool(padded_keep[tuple(slice(c + r // 4, c + r - r // 4) for c, r in zip(corner, roi))].any())
                for corner in corners]
        corners = corners[np.asarray(held, bool)]
    best = 0.0
    for first in range(0, len(corners), batch_size):
        report(progress, first, len(corners), f"explaining window {first + 1}/{len(corners)}")
        chunk = corners[first:first + batch_size]
        windows = np.stack([padded[tuple(slice(c, c + r) for c, r in zip(corner, roi))] for corner in chunk])[:, None]
        probabilities, maps = _window_maps(network, method, card, windows)
        for corner, probability, window_map in zip(chunk, probabilities, maps):
            peak = float(window_map.max())
            scaled_map = window_map / peak * probability if peak > 0 else np.zeros_like(window_map)
            region = tuple(slice(c, c + r) for c, r in zip(corner, roi))
            np.maximum(heat[region], scaled_map.astype(np.float32), out=heat[region])
            best = max(best, float(probability))
    report(progress, len(corners), len(corners), "explained")
    return heat[tuple(slice(0, n) for n in array.shape)], best, len(corners), total - len(corners)


def _plane(image: MedicalImage, index: int) -> MedicalImage:
    """Slice ``index`` of a 3-D image as a 2-D image with the volume's in-plane geometry."""
    matrix = image.geometry.direction_matrix
    if not (np.allclose(matrix[:2, 2], 0, atol=1e-6) and np.allclose(matrix[2, :2], 0, atol=1e-6)):
        raise MedcadError("a 2-D model can explain the slices of a volume only when its slices are axial planes "
                          "(the slice axis is not mixed with the in-plane axes)")
    corner = image.index_to_world([index, 0, 0])
    geometry = Geometry(image.geometry.spacing_xyz[:2], tuple(corner[:2]), tuple(matrix[:2, :2].ravel()))
    return MedicalImage(np.asarray(image.array[index]), geometry, modality=image.modality, name=image.name,
                        metadata=dict(image.metadata))


def _explain_image(image: MedicalImage, network, method: str, card: ModelCard, preprocess: bool,
                   progress: ProgressFn | None, mask: MedicalImage | None = None):
    """Heatmap (on ``image``'s grid, float32), probability, windows explained and skipped, for an
    image of the card's dims; ``mask`` (``image``'s grid) limits the windows."""
    from ..inference.run import _check_mask_grid, _mask_on_grid, _split_pipeline, _to_source, model_input

    pipeline, geometry_steps, _ = _split_pipeline(card)
    # the image run_model would prepare (a CT's field-of-view padding raised to -1024 HU)
    prepared = pipeline.run(model_input(image, card)[0], device="cpu") if preprocess else \
        geometry_steps.run(image, device="cpu")
    keep = None if mask is None else _mask_on_grid(mask, geometry_steps)
    _check_mask_grid(keep, prepared)
    heat, probability, windows, skipped = _explain_grid(np.asarray(prepared.array, np.float32), network, method,
                                                        card, progress, keep)
    on_source = _to_source(prepared.with_array(heat), image, "linear", np.float32)
    return np.asarray(on_source.array, np.float32), probability, windows, skipped


def _window_mask(image: MedicalImage, card: ModelCard, mask: MedicalImage | None, preprocess: bool,
                 progress: ProgressFn | None) -> tuple[MedicalImage | None, str, ProgressFn | None]:
    """The mask that limits the windows (``image``'s grid), where it came from, and the progress
    left for the rest: making a lung mask takes the first tenth, whether or not one is found."""
    from ..inference.run import _card_mask, _check_mask_shape

    _check_mask_shape(mask, image)
    if mask is not None:
        return mask, "given", progress
    if not _card_mask(card):
        return None, "none", progress
    if not preprocess:
        return (None, "none: the image is not in Hounsfield units (preprocess=False), so every window was explained",
                progress)
    rest = scaled(progress, 0.1, 1.0)
    try:
        lungs = _coarse_lung_mask(image, scaled(progress, 0.0, 0.1))
    except MedcadError as err:
        return None, f"none: no lung mask ({err}), so every window was explained", rest
    amount = float(np.count_nonzero(lungs.array)) * float(np.prod(lungs.geometry.spacing_xyz))
    if amount < MIN_LUNG_MM[min(image.ndim, 3)]:
        return None, "none: no lungs found, so every window was explained", rest
    return lungs, "lung_mask", rest


#: less "lung" than this (mm2 on a 2-D image, mm3 on a volume) is not lungs: a crop inside the lung
#: has no body outline, and its lung mask is a few stray voxels
MIN_LUNG_MM = {2: 500.0, 3: 20000.0}


#: the lung mask that picks windows is made on voxels at least this large (mm), then put back on
#: the image's grid: a window's middle half needs no finer outline, and on a 288 x 512 x 512 CT the
#: full-resolution mask took 14 s, too long to explain the one slice the reader looks at
WINDOW_MASK_SPACING_MM = 2.0


def _coarse_lung_mask(image: MedicalImage, progress: ProgressFn | None) -> MedicalImage:
    """The lung mask on ``image``'s grid, computed on voxels of at least WINDOW_MASK_SPACING_MM."""
    from ..inference.run import _to_source
    from ..preprocess import Pipeline, lung_mask

    spacing = [float(v) for v in image.geometry.spacing_xyz]
    coarse = [max(v, WINDOW_MASK_SPACING_MM) for v in spacing]
    if coarse == spacing:
        return lung_mask(image, progress=progress)
    step = {"op": "resample", "params": {"spacing_xyz": coarse, "interpolation": "nearest"}}
    lungs = lung_mask(Pipeline.from_dict([step]).run(image, device="cpu"), progress=progress)
    return _to_source(lungs, image, "nearest", np.uint8)


def explain(
    image: MedicalImage,
    model_card: ModelCard | str,
    *,
    slices: Sequence[int] | None = None,
    preprocess: bool = True,
    mask: MedicalImage | None = None,
    progress: ProgressFn | None = None,
) -> MedicalImage:
    """A heatmap (float32, 0..1) of why ``model_card`` finds a nodule in ``image``, on ``image``'s grid.

    ``preprocess=False``: the image already went through the card's intensity steps (e.g. the
    lung window to [0, 1]); only its resampling is done.  ``slices``: which slices of a 3-D image
    a 2-D model explains.  ``mask`` (``image``'s grid) replaces the lung mask a card with
    ``inference.mask: lung`` makes: windows holding none of it are skipped.
    """
    from ..inference.run import _card_of
    from ..models.loading import load_network

    card = _card_of(model_card)
    method = explanation_method(card)
    if image.rgb:
        raise MedcadError("explanations need a single-channel image")
    if image.ndim < card.dims:
        raise MedcadError(f"model '{card.name}' needs a {card.dims}-D image; '{image.name}' is {image.ndim}-D")
    if card.format != "state_dict":
        raise MedcadError(f"model '{card.name}': explanations need one of this package's networks (a state_dict card)")
    if preprocess and (card.modality or "").upper() == "CT":
        check_ct(image, f"model '{card.name}'")  # on the file's own values, before any resampling
    network = load_network(card)
    details: dict[str, Any] = {}
    chosen = None
    if card.dims != image.ndim:
        chosen = list(range(image.spatial_shape[0])) if slices is None else [int(k) for k in slices]
        if any(not 0 <= k < image.spatial_shape[0] for k in chosen):
            raise MedcadError(f"slice out of range for '{image.name}' ({image.spatial_shape[0]} slices)")
    window_mask, details["mask"], progress = _window_mask(image, card, mask, preprocess, progress)
    if chosen is None:
        heat, probability, windows, skipped = _explain_image(image, network, method, card, preprocess, progress,
                                                             window_mask)
        details["windows"] = windows
    else:
        heat = np.zeros(image.spatial_shape, np.float32)
        probabilities = {}
        windows = skipped = 0
        for number, k in enumerate(chosen):
            plane_mask = None if window_mask is None else _plane(window_mask, k)
            plane_heat, plane_probability, plane_windows, plane_skipped = _explain_image(
                _plane(image, k), network, method, card, preprocess,
                scaled(progress, number / len(chosen), (number + 1) / len(chosen)), plane_mask)
            heat[k] = plane_heat
            windows, skipped = windows + plane_windows, skipped + plane_skipped
            if plane_windows:
                probabilities[k] = round(plane_probability, 4)
        probability = max(probabilities.values()) if probabilities else 0.0
        details["windows"] = windows
        details["slices"] = chosen if len(chosen) <= 16 else f"{len(chosen)} slices"
        details["slice_probabilities"] = probabilities if len(probabilities) <= 16 else {}
    details["windows_skipped"] = skipped
    metadata = {
        "explanation": method,
        "model": card.name,
        "model_family": card.family,
        "probability": round(float(probability), 4),
        "source_image": image.name,
        "values": "0..1: the map scaled to 1 in each window, times that window's probability",
        **details,
    }
    return image.with_array(heat, modality="OT", name=f"{image.name} {method} ({card.name})", rgb=False,
                            metadata=metadata)


def heatmap_peak_mm(heatmap: MedicalImage) -> np.ndarray:
    """World position (LPS mm; x, y[, z]) of the heatmap's largest value."""
    index = np.unravel_index(int(np.argmax(heatmap.array)), heatmap.spatial_shape)
    return heatmap.index_to_world(np.asarray(index, float))
