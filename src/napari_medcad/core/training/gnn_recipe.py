"""The graph rescorer's card and recipe, apart from its training code (``training.gnn``).

``training.builtin`` lists every built-in recipe when the package is imported; keeping these two
dicts here lets ``python -m napari_medcad.core.training.gnn`` run that module without it having
been imported already (runpy's warning, and two copies of the module).
"""

from __future__ import annotations

from typing import Any

from ..phantom.config import PLACEMENT_BEFORE_2026_11_25

GNN_CARD: dict[str, Any] = {
    "name": "lung-nodule-gnn",
    "task": "classification",
    "dims": 3,
    "version": "0.1.0",
    "description": (
        "Candidate-graph false-positive reduction for lung-nodule-ct: each CNN candidate is a node "
        "(CNN score, size, shape, a Hessian blob measure, HU statistics, surroundings, distance to the lung "
        "wall), joined to its "
        "k nearest candidates in world mm; a small graph attention network (torch_geometric TransformerConv) "
        "rescores every candidate, so vessel cross-sections in chains score low and isolated round "
        "nodules stay high. Trained only on synthetic phantoms. Research use; not a medical device."
    ),
    "modality": "CT",
    "family": "gnn",
    "format": "state_dict",
    "architecture": {
        "name": "medcad:CandidateGraphAttention",
        "params": {"in_features": 0, "hidden": 16, "edge_features": 4, "heads": 2, "layers": 2, "dropout": 0.2},
    },
    "weights": "weights.pt",
    "classes": ["other", "nodule"],
    "output": {"activation": "sigmoid", "channels": 1},
    "decoding": {"threshold": 0.5},
    "inference": {"stage": "rescore", "detector": "lung-nodule-ct", "candidate_threshold": 0.2,
                  "max_candidates": 100, "k_neighbours": 4},
    "license": "BSD-3-Clause",
}

GNN_TRAINING: dict[str, Any] = {
    "seed": 20240501,
    # 60 phantoms (84 nodule candidates) instead of 20 (25): held-out CNN + GNN sens@1FP 0.59 -> 0.67
    "train_cases": 60,
    "val_cases": 4,
    "val_seed": 20240502,
    "epochs": 200,
    "steps_per_epoch": 1,  # full batch: one step per epoch
    "batch_size": 1,  # (unused: all training graphs form one batch)
    "learning_rate": 3e-3,
    "weight_decay": 1e-2,
    "feature_noise": 0.2,  # Gaussian noise on the features, in units of their standard deviation
    "detector": "lung-nodule-ct",
    "candidate_threshold": 0.2,
    "max_candidates": 100,
    "k_neighbours": 4,
    # the detector's own features at each candidate as 8 more node features ("the CNN's embedding"):
    # off.  With {"layer": "upcat_1", "channels": 8, "patch_zyx": [16, 16, 16]} (BasicUNet's last decoder
    # block on a 32 x 24 x 24 mm patch) CPM went 0.717 -> 0.735 on the benchmark's phantoms but
    # 0.635 -> 0.603 on the second held-out set, the real CT's false positives above the threshold
    # 0 -> 3, and the stage's time 0.47 -> 0.74 s per scan (README, "the CNN's embedding")
    "cnn_embedding": None,
    **PLACEMENT_BEFORE_2026_11_25,  # phantom.config: keeps the shipped weights reproducible
    "val_fp_per_scan": 1.0,
    "min_class_nodes": 20,  # fewer true or false candidates than this: refuse to train (nothing to learn)
    "threads": 1,
}
