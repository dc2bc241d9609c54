"""The seeded training loop of the segmentation-style detector, on phantom patches, on the CPU.

Data: phantom cases drawn with ``PhantomConfig.random_for_training`` (in-plane 0.5-1 mm, slices
1-5 mm, noise, blur, HU calibration, contrast, nodule kinds, juxta-vascular/pleural), put
through exactly the card's preprocessing so the network sees what inference will give it.
Patches: a share centred (with jitter) on nodules; of the rest, a share centred on the pulmonary
vessels (the classic false positive: a vessel in cross-section or a bifurcation), the others
anywhere in the lungs or the volume.  Augmentation on patches: flips, intensity scale/shift,
extra noise.  Positive patches can favour hard nodules (``hard_nodule_weight``: ground-glass or
part-solid, attached, < 8 mm).  Loss: voxel BCE in which small nodules' voxels weigh more (a 30
mm nodule has 1,000 times the voxels of a 3 mm one, and a plain loss learns only the big ones),
plus a soft Dice (``dice_over``: per patch, over the batch, or per nodule-holding patch; see
``detector_loss``).
After training, the card's threshold is chosen on separate validation phantoms: the lowest
one that keeps false positives at ``val_fp_per_scan``.
Inference windows are the training patch's size (the card's ``roi_size_zyx`` is set from the
recipe's ``patch_zyx``).  The U-Net's deepest features span the whole patch, so what it learnt
depends on the patch's extent: with windows twice as wide, the first shipped weights scored a
14 mm nodule 0.03 that a window of the training size scored 0.999.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..crop import centred_crop
from ..errors import Cancelled  # noqa: F401  (raised by progress callbacks, passes through)
from ..progress import ProgressFn, report, scaled


@dataclasses.dataclass
class TrainingCase:
    image: np.ndarray  # float32, prepared (card grid, intensity steps applied)
    target: np.ndarray  # uint8 nodule mask on the card grid
    weights: np.ndarray  # float32 loss weight of each voxel (nodules balanced by size)
    lungs: np.ndarray  # bool lung mask on the card grid
    vessel_voxels: np.ndarray  # (M, 3) a sample of vessel voxels (card-grid indices)
    nodule_voxels: np.ndarray  # (N, 3) nodule centres as card-grid indices
    nodule_difficulty: np.ndarray | None = None  # (N,) how many hard traits each nodule has (0..3)


def case_config(seed: int, recipe: dict[str, Any]):
    """The phantom config of one training case: the generator's wide augmentation, >= 1 nodule
    (the recipe's ``n_nodules`` range, if it has one)."""
    from ..phantom import PhantomConfig
    from ..phantom.config import recipe_placement

    config = PhantomConfig.random_for_training(seed, max_in_plane=int(recipe["max_in_plane"]),
                                               max_slices=int(recipe["max_slices"]),
                                               pixel_mm=tuple(recipe.get("pixel_mm", (0.5, 1.0))))
    # the recipe's range gives more nodules to learn from at the same cost; else 1 to 2..6
    n_nodules = tuple(int(n) for n in recipe["n_nodules"]) if recipe.get("n_nodules") else \
        (1, max(2, config.n_nodules[1]))
    return dataclasses.replace(config, n_nodules=n_nodules, **recipe_placement(recipe))


def prepare_case(seed: int, card, recipe: dict[str, Any]) -> TrainingCase:
    """One phantom, prepared by the card's pipeline; labels and lungs by nearest neighbour."""
    from ..inference.run import _split_pipeline
    from ..phantom import generate_chest_ct
    from ..preprocess import Pipeline, Step

    case = generate_chest_ct(seed, case_config(seed, recipe))
    pipeline, geometry_steps, _ = _split_pipeline(card)
    prepared = pipeline.run(case.image, device="cpu")
    nearest = Pipeline(tuple(
        Step(s.op, {**dict(s.params), **({"interpolation": "nearest"} if "interpolation" in s.params else {})})
        for s in geometry_steps
    ))
    instances = nearest.run(case.labels, device="cpu").array
    lungs = nearest.run(case.lung_mask, device="cpu").array > 0
    vessels = np.argwhere(nearest.run(case.vessel_mask, device="cpu").array > 0)
    if len(vessels) > 4000:  # a fixed-size sample keeps memory small; seeded by the case
        vessels = vessels[np.random.default_rng(seed).choice(len(vessels), 4000, replace=False)]
    centres = np.array([prepared.world_to_index(n.centre_world_mm) for n in case.nodules], float).reshape(-1, 3)
    return TrainingCase(np.asarray(prepared.array, np.float32), (instances > 0).astype(np.uint8),
                        nodule_weights(instances, float(recipe.get("reference_nodule_voxels", 400))),
                        lungs, vessels.astype(np.int32), centres, nodule_difficulty(case.nodules))


def nodule_difficulty(nodules) -> np.ndarray:
    """Hard traits of each nodule: not solid (ground-glass, part-solid), attached to a vessel or
    the pleura, smaller than 8 mm.  These are the nodules the detector missed on held-out
    phantoms (scored 0.000, so no threshold finds them); the sampler can show them more often."""
    return np.array([int(n.kind != "solid") + int(n.attached != "none") + int(n.diameter_mm < 8.0)
                     for n in nodules], np.float32)


def _nodule_sampling_weights(case: TrainingCase, hard_weight: float) -> np.ndarray | None:
    """Each nodule's weight for positive patches: 1 + hard_weight x its hard traits (None: the
    case does not know them, and its nodules are drawn uniformly)."""
    if case.nodule_difficulty is None:
        return None
    return 1.0 + hard_weight * np.asarray(case.nodule_difficulty, float)


def nodule_weights(instances: np.ndarray, reference_voxels: float) -> np.ndarray:
    """Voxel loss weights: 1 outside nodules; inside nodule k, sqrt(reference / size_k) clipped to 1..8.

    A 4 mm nodule (a dozen voxels at 1.5 x 1.5 x 2 mm) then pulls on the loss about 1/13 as much
    as a 20 mm one (~900 voxels) instead of 1/80, without letting single-voxel specks dominate."""
    weights = np.ones(instances.shape, np.float32)
    labels = np.unique(instances[instances > 0])
    if len(labels):
        sizes = np.bincount(instances.ravel().astype(np.int64))
        per_label = np.clip(np.sqrt(reference_voxels / np.maximum(sizes, 1)), 1.0, 8.0).astype(np.float32)
        inside = instances > 0
        weights[inside] = per_label[instances[inside].astype(np.int64)]
    return weights


def sample_batch(cases: list[TrainingCase], rng: np.random.Generator, recipe: dict[str, Any]):
    """Images and targets (B, 1, z, y, x) of one augmented batch."""
    size = np.asarray(recipe["patch_zyx"], int)
    hard_weight = float(recipe.get("hard_nodule_weight", 0.0))
    if hard_weight > 0:  # a case is drawn for a positive patch by its nodules' total weight
        positives = [c for c in cases if len(c.nodule_voxels)]
        nodule_weights_of = [_nodule_sampling_weights(c, hard_weight) for c in positives]
        case_weights = np.array([len(c.nodule_voxels) if w is None else w.sum()
                                 for c, w in zip(positives, nodule_weights_of)], float)
    images, targets, weights = [], [], []
    for _ in range(int(recipe["batch_size"])):
        case = cases[int(rng.integers(len(cases)))]
        # weighted: any case with nodules can give the positive patch; plain: the drawn case's own
        can_centre_on_nodule = bool(positives) if hard_weight > 0 else len(case.nodule_voxels) > 0
        if can_centre_on_nodule and rng.random() < float(recipe["positive_fraction"]):
            nodule_weights = None
            if hard_weight > 0:
                chosen = int(rng.choice(len(positives), p=case_weights / case_weights.sum()))
                case, nodule_weights = positives[chosen], nodule_weights_of[chosen]
            if nodule_weights is not None:
                picked = rng.choice(len(nodule_weights), p=nodule_weights / nodule_weights.sum())
            else:
                picked = rng.integers(len(case.nodule_voxels))
            centre = case.nodule_voxels[int(picked)]
            jitter = float(recipe.get("positive_jitter", 0.35))
            centre = centre + rng.uniform(-jitter, jitter, 3) * size
        elif len(case.vessel_voxels) and rng.random() < float(recipe.get("vessel_fraction", 0.0)):
            centre = case.vessel_voxels[int(rng.integers(len(case.vessel_voxels)))].astype(float)
            centre = centre + rng.uniform(-0.2, 0.2, 3) * size
        elif rng.random() < 0.8 and case.lungs.any():
            points = np.flatnonzero(case.lungs.ravel()[:: 97])
            centre = np.array(np.unravel_index(points[int(rng.integers(len(points)))] * 97, case.lungs.shape), float)
        else:
            centre = rng.uniform(0, 1, 3) * np.asarray(case.image.shape)
        image = centred_crop(case.image, centre, size, 0.0)
        target = centred_crop(case.target, centre, size, 0)
        weight = centred_crop(case.weights, centre, size, 1.0)
        for axis in (1, 2):  # left-right and front-back flips; z keeps head-feet order
            if rng.random() < 0.5:
                image, target, weight = np.flip(image, axis), np.flip(target, axis), np.flip(weight, axis)
        image = image * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.04, 0.04))
        if rng.random() < 0.5:
            image = image + rng.normal(0.0, rng.uniform(0.0, 0.03), image.shape).astype(np.float32)
        images.append(np.ascontiguousarray(image, np.float32))
        targets.append(np.ascontiguousarray(target, np.float32))
        weights.append(np.ascontiguousarray(weight, np.float32))
    return np.stack(images)[:, None], np.stack(targets)[:, None], np.stack(weights)[:, None]


#: ``dice_over`` modes of :func:`detector_loss`, and how the card's provenance names them
DICE_MODES = {"patch": "per patch", "batch": "over the batch", "positive": "per nodule-holding patch"}


def detector_loss(logits, targets, weights, dice_over: str = "patch"):
    """Size-balanced voxel BCE plus a soft Dice (MONAI's ``DiceLoss``).

    ``dice_over``: ``"patch"``, one Dice per patch, so a nodule-free patch costs ~1 for any firing
    at all; ``"batch"``, one Dice over the batch's voxels (nnU-Net's batch Dice), in which a large
    nodule outweighs a small one by its voxels; ``"positive"``, one Dice per patch that holds a
    nodule, averaged over those patches only: every nodule patch has the same say whatever the
    nodule's size, and nodule-free patches are left to the BCE."""
    import torch
    from monai.losses import DiceLoss

    if dice_over not in DICE_MODES:
        raise ValueError(f"dice_over must be one of {', '.join(DICE_MODES)}, got {dice_over!r}")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, weight=weights)
    if dice_over != "positive":
        dice = DiceLoss(sigmoid=True, batch=dice_over == "batch", smooth_nr=1.0, smooth_dr=1.0)(logits, targets)
        return bce + dice
    per_patch = DiceLoss(sigmoid=True, batch=False, smooth_nr=1.0, smooth_dr=1.0, reduction="none")(logits, targets)
    holds_nodule = targets.flatten(1).amax(dim=1) > 0
    if not bool(holds_nodule.any()):
        return bce
    return bce + per_patch.flatten(1).mean(dim=1)[holds_nodule].mean()


def save_weights(network, path: Path) -> None:
    """The network's state dict (plain CPU tensors, loadable with ``weights_only=True``), written
    to a temporary file and renamed: every built-in trainer saves its weights through here."""
    import torch

    state = {key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}
    temporary = path.with_name(f".{path.name}.partial")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _versions() -> dict[str, str]:
    from ..inference.run import _versions as versions

    return versions()


def train_segmentation_detector(card_data: dict, recipe: dict, out_dir: Path, progress: ProgressFn | None) -> Path:
    import torch

    from ..models.card import ModelCard
    from ..models.networks import build
    from ..phantom.cases import case_seed

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(recipe["threads"])))
    try:
        seed = int(recipe["seed"])
        card = ModelCard.from_dict(card_data)
        card.inference["roi_size_zyx"] = [int(v) for v in recipe["patch_zyx"]]  # see the module docstring
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        network = build(card.architecture)
        epochs, steps = int(recipe["epochs"]), int(recipe["steps_per_epoch"])
        total_steps = epochs * steps
        n_train = int(recipe["train_cases"]) if total_steps else 0
        train_seeds = [case_seed(seed, i) for i in range(n_train)]
        data_share = 0.15 if total_steps else 0.0
        cases = []
        for index, case_index_seed in enumerate(train_seeds):
            report(scaled(progress, 0.0, data_share), index, n_train, f"phantom {index + 1}/{n_train}")
            cases.append(prepare_case(case_index_seed, card, recipe))
        data_seconds = time.perf_counter() - started

        losses: list[float] = []
        train_share = 0.85 if int(recipe["val_cases"]) else 1.0
        if total_steps:
            optimiser = torch.optim.AdamW(network.parameters(), lr=float(recipe["learning_rate"]), weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=float(recipe["learning_rate"]),
                                                           total_steps=total_steps, pct_start=0.1)
            network.train()
            step_progress = scaled(progress, data_share, train_share)
            for epoch in range(epochs):
                epoch_losses = []
                for step in range(steps):
                    images, targets, weights = sample_batch(cases, rng, recipe)
                    logits = network(torch.from_numpy(images))
                    loss = detector_loss(logits, torch.from_numpy(targets), torch.from_numpy(weights),
                                         str(recipe.get("dice_over", "patch")))
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    epoch_losses.append(float(loss.detach()))
                    done = epoch * steps + step + 1
                    report(step_progress, done, total_steps, f"epoch {epoch + 1}/{epochs}, loss {np.mean(epoch_losses):.4f}")
                losses.append(round(float(np.mean(epoch_losses)), 5))
        del cases
        train_seconds = time.perf_counter() - started - data_seconds
        network.eval()
        weights_path = out_dir / card.weights
        save_weights(network, weights_path)
        card_path = out_dir / "card.yaml"
        card.path = card_path

        validation = {}
        if int(recipe["val_cases"]) and total_steps:
            validation = validate(card, recipe, scaled(progress, train_share, 1.0))
            card.decoding["threshold"] = validation["threshold"]
        card.provenance = {
            "default_for_modality": True,
            "trained_with": "napari-medcad train-builtin " + card.name,
            "seed": seed,
            "data": {
                "source": "napari-medcad synthetic chest CT phantom (generate_chest_ct)",
                "train_case_seeds": {"seed": seed, "count": n_train, "rule": "phantom.cases.case_seed(seed, i)"},
                "phantom_config": ("PhantomConfig.random_for_training(case_seed, max_in_plane, max_slices, pixel_mm) "
                                   "with n_nodules >= 1, or the recipe's n_nodules"),
                "validation_case_seeds": {"seed": int(recipe["val_seed"]), "count": int(recipe["val_cases"])},
            },
            "recipe": {k: (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items()},
            "epochs": epochs,
            "loss": "size-balanced BCE + soft Dice (monai DiceLoss) " + DICE_MODES[str(recipe.get("dice_over", "patch"))],
            "losses_per_epoch": losses,
            "validation": validation,
            "seconds": {"data": round(data_seconds, 1), "training": round(train_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "threads": torch.get_num_threads(),
            "versions": _versions(),
            "untrained": total_steps == 0,
        }
        card.save(card_path)
        report(progress, 1, 1, "saved " + card.name)
        return card_path
    finally:
        torch.set_num_threads(previous_threads)


def validate(card, recipe: dict, progress: ProgressFn | None) -> dict:
    """Run the saved model on validation phantoms; choose the threshold for the target FP rate."""
    from ..inference.run import run_model
    from ..phantom import generate_chest_ct
    from ..phantom.cases import case_seed
    from .evaluation import froc, match_case, threshold_for_fp_rate

    floor = float(card.decoding.get("mask_threshold", 0.1))  # every candidate the masks can give
    low = dataclasses.replace(card, decoding={**card.decoding, "threshold": floor})
    n_val = int(recipe["val_cases"])
    matches = []
    for index in range(n_val):
        report(progress, index, n_val, f"validation phantom {index + 1}/{n_val}")
        seed = case_seed(int(recipe["val_seed"]), index)
        case = generate_chest_ct(seed, case_config(seed, recipe))
        result = run_model(case.image, low, device="cpu", rescore=False)
        centres = np.array([f.centre_world_mm for f in result.findings], float).reshape(-1, 3)
        matches.append(match_case(centres, [f.probability for f in result.findings],
                                  np.array([n.centre_world_mm for n in case.nodules]).reshape(-1, 3),
                                  [n.diameter_mm for n in case.nodules]))
    threshold = threshold_for_fp_rate(matches, float(recipe["val_fp_per_scan"]))
    threshold = float(np.clip(threshold, floor, 0.999))
    scores = froc(matches)
    return {"cases": n_val, "threshold": round(threshold, 4), "fp_per_scan_target": float(recipe["val_fp_per_scan"]),
            "froc": {str(k): round(v, 4) for k, v in scores["sensitivity"].items()}, "cpm": round(scores["cpm"], 4),
            "nodules": scores["n_nodules"]}
