"""Recipes of the built-in models and ``train_builtin``: seeded phantoms in, card and weights out.

Everything that decides the weights is in the recipe (and so in the card's provenance): seeds
of the training and validation phantoms, the phantom augmentation, patch sampling, epochs,
optimiser.  Same recipe, same thread count, same bits.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..errors import MedcadError
from ..phantom.config import PLACEMENT_BEFORE_2026_11_25
from ..progress import ProgressFn

#: what is built, how it is fed and how it is run: becomes the card (plus provenance)
LUNG_NODULE_CT_CARD: dict[str, Any] = {
    "name": "lung-nodule-ct",
    "task": "detection",
    "dims": 3,
    "version": "0.1.0",
    "description": (
        "Lung nodule detector for chest CT: a small 3-D U-Net (MONAI BasicUNet) segments nodules "
        "at 1.5 x 1.5 x 2 mm; each connected region is a candidate, and the graph network "
        "lung-nodule-gnn rescores the candidates with their neighbours (can be switched off). Trained only "
        "on napari-medcad's synthetic chest CT phantoms. Research use; not a medical device."
    ),
    "modality": "CT",
    "family": "cnn",
    "format": "state_dict",
    "architecture": {
        "name": "monai:BasicUNet",
        "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                   "features": [8, 16, 32, 64, 64, 8], "norm": ["batch", {}]},
    },
    "weights": "weights.pt",
    "spacing_xyz": [1.5, 1.5, 2.0],
    "preprocessing": [
        {"op": "resample", "params": {"spacing_xyz": [1.5, 1.5, 2.0], "interpolation": "linear"}},
        {"op": "window", "params": {"preset": "lung", "output": "unit"}},
    ],
    "classes": ["background", "nodule"],
    "output": {"activation": "sigmoid", "channels": 1},
    # within_closing_mm: a juxtapleural nodule bites a dent into the threshold lung mask; a 26 mm one
    # on the held-out phantoms lay 34% inside it and was dropped (1 of 49 nodules; +0.1 FP/scan)
    "decoding": {"threshold": 0.5, "mask_threshold": 0.5, "min_diameter_mm": 2.5, "max_findings": 50,
                 "within_mask": True, "within_closing_mm": 15.0},
    # windows of the training patch's size (the trainer enforces it): at 48 x 96 x 96 the same
    # weights gave a 14 mm nodule p 0.03 that a 32 x 48 x 48 window gives p 0.999
    "inference": {"roi_size_zyx": [32, 48, 48], "overlap": 0.25, "batch_size": 4, "blend": "gaussian",
                  "mask": "lung", "rescorer": "lung-nodule-gnn",
                  # the CNN's ~84 candidates per held-out scan hold 75% of the nodules, but false
                  # positives (on vessels) score ~1.0 too: its graph rescorer ranks them (CPM 0.27 -> 0.72)
                  "rescore_by_default": True},
    "license": "BSD-3-Clause",
}

LUNG_NODULE_CT_TRAINING: dict[str, Any] = {
    "seed": 20240401,
    "train_cases": 64,
    "val_cases": 4,
    "val_seed": 20240402,
    "epochs": 45,
    "steps_per_epoch": 50,
    "batch_size": 4,
    "patch_zyx": [32, 48, 48],  # also the card's inference window
    "positive_fraction": 0.4,
    "positive_jitter": 0.35,  # a positive patch's centre: the nodule's, moved by up to this share of the patch
    "vessel_fraction": 0.5,  # of the other patches: centred on a pulmonary vessel
    "reference_nodule_voxels": 400,  # nodule loss weights: sqrt(400 / voxels), 1..8
    "hard_nodule_weight": 1.0,  # positive patches: nodule drawn with weight 1 + this x hard traits
    # one soft Dice per nodule-holding patch (loop.detector_loss): with one over the batch (a 20 mm
    # nodule outweighs a 5 mm one by its voxels) the detector scored training nodules under 6 mm
    # 0.000; one per patch, empty patches included, fired nowhere with hard sampling. Held-out
    # phantoms, candidates above 0.5: 41% (per patch, previous recipe), 47% (batch), 67% (per
    # nodule patch) of the nodules
    "dice_over": "positive",
    "learning_rate": 4e-3,
    "max_in_plane": 384,  # 0.5-1 mm pixels: fields of view of 192-384 mm
    "pixel_mm": [0.5, 1.0],  # in-plane pixel sizes of the training phantoms
    "max_slices": 96,
    "n_nodules": None,  # nodules per training phantom (a [low, high] range); None: 1 to 2..6, drawn per case
    **PLACEMENT_BEFORE_2026_11_25,  # phantom.config: keeps the shipped weights reproducible
    "val_fp_per_scan": 1.0,
    "threads": 1,  # one thread: bit-reproducible, and robust when the cores are shared
}

from .gnn_recipe import GNN_CARD, GNN_TRAINING  # noqa: E402  (the graph rescorer's recipe)

from .classifier_recipes import CLASSIFIER_RECIPES  # noqa: E402  (the four image-level classifiers)

BUILTIN_RECIPES = {"lung-nodule-ct": (LUNG_NODULE_CT_CARD, LUNG_NODULE_CT_TRAINING),
                   "lung-nodule-gnn": (GNN_CARD, GNN_TRAINING), **CLASSIFIER_RECIPES}


def _builtin_dir(name: str) -> Path:
    from ..models.registry import BUILTIN_DIR

    return BUILTIN_DIR / name


def train_builtin(name: str, out_dir: str | os.PathLike | None = None, progress: ProgressFn | None = None,
                  **overrides) -> Path:
    """Retrain built-in model ``name`` from its recipe (``overrides`` change recipe entries).

    Writes ``card.yaml`` and the weights into ``out_dir`` (default: the package's built-in
    folder) and returns the card's path.  ``epochs=0`` writes the untrained network.
    """
    if name not in BUILTIN_RECIPES:
        raise MedcadError(f"unknown built-in model '{name}' (known: {', '.join(BUILTIN_RECIPES)})")
    card_template, recipe = BUILTIN_RECIPES[name]
    recipe = dict(recipe)
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise MedcadError(f"unknown training settings: {', '.join(sorted(unknown))} (known: {', '.join(recipe)})")
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("epochs", "steps_per_epoch", "train_cases", "val_cases", "batch_size"):
        if int(recipe[key]) < 0 or (key in ("batch_size",) and int(recipe[key]) < 1):
            raise MedcadError(f"training setting {key} must be a positive whole number, got {recipe[key]}")
    if "dice_over" in recipe:  # checked before minutes of phantom preparation, not at the first step
        from .loop import DICE_MODES

        if recipe["dice_over"] not in DICE_MODES:
            raise MedcadError(f"training setting dice_over must be one of {', '.join(DICE_MODES)}, "
                              f"got {recipe['dice_over']!r}")
    out_dir = Path(out_dir) if out_dir is not None else _builtin_dir(name)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MedcadError(f"cannot create the output folder ({err.strerror or err})", out_dir) from None
    if card_template.get("family") == "gnn":  # the graph rescorer: CNN candidates in, GNN out
        from .gnn import train_gnn

        return train_gnn(copy.deepcopy(card_template), recipe, out_dir, progress)
    if card_template.get("task") == "classification":  # CNN / LSTM / attention / MIL on phantom patches
        from .classifiers import train_classifier

        return train_classifier(copy.deepcopy(card_template), recipe, out_dir, progress)
    from .loop import train_segmentation_detector

    return train_segmentation_detector(copy.deepcopy(card_template), recipe, out_dir, progress)

