"""Localisation supervision: a classifier's own heatmap is taught where the nodule is.

Trained on "nodule / no nodule" alone, the built-in classifiers were often right for the wrong
pixels: their heatmaps peaked inside the nodule in 40-79% of held-out positives.  The phantoms
know where every nodule is, so training can add a term that rewards the share of the model's own
heatmap inside the nodule: ``-log(share)`` over the positive samples, times the recipe's
``localisation_weight``.  The heatmap is the one the user is shown, computed inside the graph so
that it can be trained: the attention weights the attention models return, or Grad-CAM at the
card's target layer (built with ``create_graph=True``: the idea of GAIN, Li et al., CVPR 2018).
What ``core.explain`` shows is unchanged: still the model's attention or MONAI's Grad-CAM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MedcadError

if TYPE_CHECKING:  # pragma: no cover
    from .classifier_data import ClassifierSamples


def nodule_masks(samples: "ClassifierSamples", indices, dims: int) -> np.ndarray:
    """Float32 masks of what the models see: 1 inside a nodule's equivalent sphere (3-D, shaped
    like the sub-volumes) or inside its cross-section on the key slice (2-D).  The same rule as
    ``heatmap_hit``."""
    indices = np.asarray(indices, int)
    depth, height, width = samples.volumes.shape[1:]
    sx, sy, sz = samples.spacing_xyz
    masks = np.zeros((len(indices), height, width) if dims == 2 else (len(indices), depth, height, width),
                     np.float32)
    for row, index in enumerate(indices):
        x0, y0, z0 = samples.origin_xyz[index]
        xs = x0 + sx * np.arange(width)
        ys = y0 + sy * np.arange(height)
        if dims == 2:
            for x, y, radius in samples.slice_nodules(index):
                inside = (xs[None, :] - x) ** 2 + (ys[:, None] - y) ** 2 <= radius ** 2
                masks[row][inside] = 1.0
            continue
        zs = z0 + sz * np.arange(depth)
        for x, y, z, diameter in samples.true_nodules(index):
            inside = ((xs[None, None, :] - x) ** 2 + (ys[None, :, None] - y) ** 2
                      + (zs[:, None, None] - z) ** 2) <= (0.5 * diameter) ** 2
            masks[row][inside] = 1.0
    return masks


def localisation_loss(heat, masks, scores: bool = False):
    """Mean ``-log`` of the heatmap's share inside the nodule, over the samples that hold one.

    ``heat``: (B, *cells) maps on the model's grid: non-negative weights (attention), or with
    ``scores=True`` unbounded scores (Grad-CAM before its ReLU), standardised per sample, whose
    softmax over the cells is used: a ReLU'd map that is 0 everywhere has no gradient left to
    learn from, and without the standardisation the loss rewarded a larger map more than a better
    placed one (a 16 x 16 x 16 map's softmax is nearly flat at first).  ``masks``: (B,
    *pixels) from :func:`nodule_masks`, averaged onto the cells (a cell's weight is how much of it
    is nodule).
    """
    import torch
    import torch.nn.functional as F

    pool = F.adaptive_avg_pool2d if heat.ndim == 3 else F.adaptive_avg_pool3d
    fractions = pool(masks[:, None], tuple(heat.shape[1:]))[:, 0]
    holding = fractions.flatten(1).sum(1) > 0
    if not bool(holding.any()):
        return heat.sum() * 0.0
    heat, fractions = heat[holding].flatten(1), fractions[holding].flatten(1)
    if scores:  # standardised first: where the peak lies counts, not how large the map is
        heat = (heat - heat.mean(1, keepdim=True)) / (heat.std(1, keepdim=True) + 1e-6)
        return -torch.log((torch.softmax(heat, dim=1) * fractions).sum(1) + 1e-6).mean()
    share = (heat * fractions).sum(1) / (heat.sum(1) + 1e-6)
    return -torch.log(share + 1e-4).mean()


def gradcam_in_graph(network, layer: str, x):
    """(logits, Grad-CAM of class 1 at ``layer`` before its ReLU), differentiable: MONAI's formula
    (the activations weighted by their spatially averaged gradients; MONAI then applies the ReLU),
    with the gradients kept in the graph."""
    import torch

    modules = dict(network.named_modules())
    if layer not in modules:
        raise MedcadError(f"Grad-CAM supervision: the network has no layer '{layer}'")
    captured = []
    handle = modules[layer].register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        logits = network(x)
    finally:
        handle.remove()
    activations = captured[-1]
    gradients, = torch.autograd.grad(logits[:, 1].sum(), activations, create_graph=True)
    weights = gradients.mean(dim=tuple(range(2, gradients.ndim)), keepdim=True)
    return logits, (weights * activations).sum(dim=1)


def gradcam_of_maps(network, maps):
    """(logits, Grad-CAM before its ReLU) of a slice aggregator whose frozen encoder's maps
    (B, D, C, h, w) are given: the encoder's output is the Grad-CAM layer, so the map per slice is
    the maps weighted by the spatially averaged gradients of class 1 (as ``core.explain`` computes
    it), differentiable in the aggregator's weights.  ``network`` has ``embed`` and ``pool``."""
    import torch

    maps = maps.detach().requires_grad_(True)
    logits = network.pool(network.embed(maps))
    gradients, = torch.autograd.grad(logits[:, 1].sum(), maps, create_graph=True)
    return logits, (gradients.mean(dim=(3, 4), keepdim=True) * maps).sum(dim=2)


def logits_and_heat(network, card, x):
    """The network's logits, the heatmap ``core.explain`` would show for the batch ``x`` (Grad-CAM:
    before its ReLU), in the graph, and whether that map holds scores (see :func:`localisation_loss`)."""
    from ..explain.maps import explanation_method, slice_maps_as_volumes

    if explanation_method(card) == "attention":
        return (*network(x, return_attention=True), False)
    layer = (card.inference.get("explain", {}) or {}).get("target_layer")
    logits, heat = gradcam_in_graph(network, str(layer), x)
    if card.dims == 3:
        heat = slice_maps_as_volumes(heat, x.shape)
    return logits, heat, True
