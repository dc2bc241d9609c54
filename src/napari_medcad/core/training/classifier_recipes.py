"""The four built-in classifiers' cards and recipes, apart from their training code (``training.classifiers``).

``training.builtin`` lists every built-in recipe when the package is imported; keeping these dicts
here lets ``python -m napari_medcad.core.training.classifiers`` run that module without it having
been imported already (runpy's warning, and two copies of the module), as ``gnn_recipe`` does for
the graph rescorer.
"""

from __future__ import annotations

from typing import Any

from .classifier_data import DATA_RECIPE, ROI_ZYX, SPACING_XYZ, preprocessing

_DISCLAIMER = "Trained only on napari-medcad's synthetic chest CT phantoms. Research use; not a medical device."


def _classifier_card(name: str, dims: int, family: str, architecture: dict, description: str,
                     explain: dict) -> dict[str, Any]:
    roi = {"roi_size_yx": ROI_ZYX[1:]} if dims == 2 else {"roi_size_zyx": list(ROI_ZYX)}
    return {
        "name": name,
        "task": "classification",
        "dims": dims,
        "version": "0.1.0",
        "description": f"{description} {_DISCLAIMER}",
        "modality": "CT",
        "family": family,
        "format": "state_dict",
        "architecture": architecture,
        "weights": "weights.pt",
        "spacing_xyz": SPACING_XYZ[:dims],
        "preprocessing": preprocessing(dims),
        "classes": ["no nodule", "nodule"],
        "output": {"activation": "softmax", "channels": 2},
        "decoding": {"threshold": 0.5},
        # trained on crops inside the lungs: windows without lung are not explained (core.explain)
        "inference": {**roi, "overlap": 0.5, "mask": "lung", "explain": explain},
        "license": "BSD-3-Clause",
    }


CLASSIFIER_CARDS: dict[str, dict[str, Any]] = {
    "nodule-cnn2d": _classifier_card(
        "nodule-cnn2d", 2, "cnn",
        {"name": "plain_cnn2d", "params": {"input_size": 64, "features": [32, 64, 128], "pools": [2, 2, 4],
                                           "dense": 256, "num_classes": 2}},
        "Is there a lung nodule in this 64 x 64 mm CT slice window (1 mm pixels, lung window)? The plain "
        "2-D CNN of the method description: conv 32-64-128 with max pooling, dense 256, softmax. Training also "
        "rewarded its Grad-CAM for peaking inside the nodule (the phantoms' nodule masks).",
        {"method": "gradcam", "target_layer": "features.act3"},
    ),
    "nodule-lstm3d": _classifier_card(
        "nodule-lstm3d", 3, "rnn",
        {"name": "slice_lstm", "params": {"features": [16, 32, 64], "hidden": 32, "num_classes": 2,
                                          "readout": "max"}},
        "Is there a lung nodule in this 16-slice CT sub-volume (1 x 1 x 2.5 mm, 64 x 64 x 40 mm)? A 2-D CNN "
        "embeds every slice; a bidirectional LSTM reads the slice sequence, and the maximum of its outputs over "
        "the slices gives the scan probability. Slice encoder: starts as the CNN stem of nodule-attention2d "
        "(trained on the key slices of the same samples) and is trained on with the LSTM; training also rewarded "
        "its Grad-CAM for peaking inside the nodule (the phantoms' nodule masks).",
        {"method": "gradcam", "target_layer": "encoder.act4"},
    ),
    "nodule-attention2d": _classifier_card(
        "nodule-attention2d", 2, "attention",
        {"name": "attention2d", "params": {"input_size": 64, "features": [16, 32, 64], "num_layers": 1,
                                           "num_heads": 4, "mlp_dim": 128, "num_classes": 2}},
        "Is there a lung nodule in this 64 x 64 mm CT slice window? A CNN stem makes 16 x 16 tokens; a "
        "self-attention block (MONAI TransformerBlock) with a class token decides; the class token's "
        "attention over the tokens is the location heatmap. Training also rewarded the share of that attention "
        "inside the nodule (the phantoms' nodule masks).",
        {"method": "attention"},
    ),
    "nodule-mil3d": _classifier_card(
        "nodule-mil3d", 3, "attention",
        {"name": "attention_mil3d", "params": {"features": [16, 32, 64], "attention_dim": 32, "num_classes": 2}},
        "Is there a lung nodule in this CT sub-volume? Attention-based multiple-instance learning (gated "
        "attention, Ilse et al. 2018) over the 4 x 4 mm patches of every slice; the attention weights are "
        "the heatmap. Instance encoder: the CNN stem of nodule-attention2d (trained on the key slices of the "
        "same samples), frozen; the attention and the head are trained on its outputs for the sub-volumes, the "
        "attention also rewarded for its share inside the nodule.",
        {"method": "attention"},
    ),
}

_TRAINING_COMMON: dict[str, Any] = {
    **{k: (list(v) if isinstance(v, list) else v) for k, v in DATA_RECIPE.items()},
    "steps_per_epoch": 0,  # 0: one pass over the training samples
    "localisation_weight": 0.0,  # training.localisation: the heatmap's share inside the nodule, rewarded
    "threads": 1,
}

CLASSIFIER_TRAINING: dict[str, dict[str, Any]] = {
    # nine crops per training nodule (three per nodule elsewhere): Grad-CAM peak in the nodule 27 -> 41 of the
    # benchmark's 57 positives, AUC 0.943 -> 0.952 (fifteen crops: validation 10/27 against nine's 16/27)
    # localisation_weight 1 (training.localisation, Grad-CAM in the graph): Grad-CAM peak in the nodule 41 -> 55
    # of the benchmark's 57 positives, AUC 0.952 -> 0.950
    "nodule-cnn2d": {**_TRAINING_COMMON, "epochs": 40, "batch_size": 32, "learning_rate": 2e-3,
                     "train_crops_per_nodule": 9, "localisation_weight": 1.0},
    # nine crops as well: AUC 0.689 -> 0.721, Grad-CAM 14 -> 23 of 57 (the MIL gained AUC, 0.848 -> 0.890, but
    # its attention peaked in the nodule less often, 45 -> 37 of 57: it keeps three)
    # end to end since localisation_weight 3 (Grad-CAM of its slice encoder, in the graph), from the
    # localisation-trained attention stem, 10 epochs (8 min): Grad-CAM 23 -> 49 of 57, AUC 0.721 -> 0.916.
    # Frozen, the same weight reached 42 of 57 (AUC 0.80): only the per-slice channel weights could move
    # 20 epochs at a learning rate of 1e-3 instead of 10 at 3e-3 (its loss and validation AUC jumped about; 15
    # min): tests' phantoms AUC 0.866 -> 0.948, Grad-CAM 36 -> 39 of 46; benchmark AUC 0.916 -> 0.926, 49 -> 51 of 57
    # (15 epochs at 3e-3 with weight 4: 0.869, 40/46; 0.925, 52/57; its best validation AUC an isolated spike)
    "nodule-lstm3d": {**_TRAINING_COMMON, "epochs": 20, "batch_size": 16, "learning_rate": 1e-3,
                      "encoder_from": "nodule-attention2d", "freeze_encoder": False, "train_crops_per_nodule": 9,
                      "localisation_weight": 3.0},
    # localisation_weight 1 (its own attention, in the graph): attention peak in the nodule 38 -> 56 of 57,
    # AUC 0.913 -> 0.962; its stem, which the LSTM and the MIL start from, got better for them too
    "nodule-attention2d": {**_TRAINING_COMMON, "epochs": 15, "batch_size": 32, "learning_rate": 2e-3,
                           "localisation_weight": 1.0},
    # on the localisation-trained stem: 45 -> 50 of 57, AUC 0.848 -> 0.946 (without the weight: 50, 0.901)
    "nodule-mil3d": {**_TRAINING_COMMON, "epochs": 30, "batch_size": 16, "learning_rate": 3e-3,
                     "encoder_from": "nodule-attention2d", "freeze_encoder": True, "localisation_weight": 1.0},
}

#: name -> (card template, recipe), in the form of ``builtin.BUILTIN_RECIPES``
CLASSIFIER_RECIPES = {name: (CLASSIFIER_CARDS[name], CLASSIFIER_TRAINING[name]) for name in CLASSIFIER_CARDS}
