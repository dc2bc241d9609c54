"""Image-level "nodule present" classifiers: training on the phantom samples of
:mod:`.classifier_data`, the four built-in cards and their recipes.

The plain CNN, the LSTM slice aggregator, the attention model and the attention-MIL model train
on the same samples with the same loop (:func:`train_classifier`): augmentation (in-plane flips
and quarter turns, intensity and noise), optional localisation supervision of each model's own
heatmap (:mod:`.localisation`), and an optional frozen slice encoder taken from another
built-in's weights.  The card records the validation AUC and the training provenance.
"""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import MedcadError, first_line
from ..progress import ProgressFn, report, scaled
from .classifier_data import ClassifierSamples, build_samples, model_inputs
from .classifier_recipes import CLASSIFIER_RECIPES
from .evaluation import roc_auc


def _augment(batch: np.ndarray, rng: np.random.Generator, masks: np.ndarray | None = None):
    """In-plane flips and quarter turns, intensity scale/shift and noise, per sample.  ``masks``
    (one per sample, without the channel axis) get the same flips and turns: (batch, masks)."""
    out, moved = [], []
    for number, item in enumerate(batch):
        mask = masks[number] if masks is not None else None
        if rng.random() < 0.5:
            item, mask = np.flip(item, -1), (None if mask is None else np.flip(mask, -1))
        if rng.random() < 0.5:
            item, mask = np.flip(item, -2), (None if mask is None else np.flip(mask, -2))
        turns = int(rng.integers(4))
        item = np.rot90(item, turns, axes=(-2, -1))
        if mask is not None:
            moved.append(np.ascontiguousarray(np.rot90(mask, turns, axes=(-2, -1)), np.float32))
        item = item * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-0.05, 0.05))
        if rng.random() < 0.5:
            item = item + rng.normal(0.0, rng.uniform(0.0, 0.03), item.shape).astype(np.float32)
        out.append(np.ascontiguousarray(item, np.float32))
    return np.stack(out) if masks is None else (np.stack(out), np.stack(moved))


def predict_probabilities(network, samples: ClassifierSamples, dims: int, batch_size: int = 16) -> np.ndarray:
    """The network's probability of class 1 for every sample (eval mode, no gradients)."""
    import torch

    network.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            indices = np.arange(start, min(len(samples), start + batch_size))
            logits = network(torch.from_numpy(model_inputs(samples, indices, dims)))
            out.append(torch.softmax(logits, dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _encoded(network, samples: ClassifierSamples, dims: int, batch_size: int = 8, maps: bool = False):
    """``network.encode`` (or with ``maps``, ``network.encode_maps``) of every sample (float16, no
    gradients): the frozen encoder's outputs."""
    import torch

    encode = network.encode_maps if maps else network.encode
    parts = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            indices = np.arange(start, min(len(samples), start + batch_size))
            parts.append(encode(torch.from_numpy(model_inputs(samples, indices, dims))).half())
    return torch.cat(parts)


def _initialise_encoder(network, recipe: dict[str, Any]) -> dict[str, Any]:
    """Copy the CNN stem of another built-in classifier (``recipe["encoder_from"]``, trained on the
    key slices of the same samples) into ``network.encoder``; freeze it if the recipe says so."""
    from ..models.loading import safe_load_weights
    from ..models.registry import find_model

    source = find_model(str(recipe["encoder_from"]))
    state = safe_load_weights(source.weights_path)
    stem = {k.removeprefix("stem."): v for k, v in state.items() if k.startswith("stem.")}
    try:
        network.encoder.load_state_dict(stem, strict=True)
    except (RuntimeError, AttributeError) as err:
        raise MedcadError(f"cannot take the encoder of '{source.name}' ({first_line(err, 120)})") from None
    frozen = bool(recipe.get("freeze_encoder", False))
    for parameter in network.encoder.parameters():
        parameter.requires_grad = not frozen
    digest = hashlib.sha256(source.weights_path.read_bytes()).hexdigest()[:16]
    return {"from": source.name, "weights_sha256": digest, "frozen": frozen,
            "source_seed": source.provenance.get("seed")}


def train_classifier(card_data: dict, recipe: dict, out_dir: Path, progress: ProgressFn | None = None,
                     cache_dir=None) -> Path:
    """Train the card's network on the phantom samples; the weights of the epoch with the best
    validation AUC are kept.  With the recipe's ``localisation_weight``, the loss also rewards the
    model's own heatmap for lying inside the nodule (``training.localisation``).  Writes the
    weights and ``card.yaml`` into ``out_dir``."""
    import torch

    from ..models.card import ModelCard
    from ..models.networks import build
    from .localisation import gradcam_of_maps, localisation_loss, logits_and_heat, nodule_masks
    from .loop import _versions, save_weights

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(recipe["threads"])))
    try:
        seed = int(recipe["seed"])
        card = ModelCard.from_dict(card_data)
        epochs = int(recipe["epochs"])
        # more crops per nodule for training only (the same cases; validation and benchmarks cut theirs as usual)
        train_recipe = {**recipe,
                        "crops_per_nodule": int(recipe.get("train_crops_per_nodule", recipe["crops_per_nodule"]))}
        train = build_samples(seed, int(recipe["train_cases"]) if epochs else 0, train_recipe, cache_dir,
                              scaled(progress, 0.0, 0.3)) if epochs else None
        val = build_samples(int(recipe["val_seed"]), int(recipe["val_cases"]), recipe, cache_dir,
                            scaled(progress, 0.3, 0.4)) if epochs and int(recipe["val_cases"]) else None
        data_seconds = time.perf_counter() - started
        if train is not None and (len(train) == 0 or train.labels.min() == train.labels.max()):
            raise MedcadError(f"{card.name}: the training phantoms gave no samples of one class "
                              f"({len(train)} samples); use more or larger cases")
        torch.manual_seed(seed)
        rng = np.random.default_rng([seed, 11])
        network = build(card.architecture)
        encoder_source = _initialise_encoder(network, recipe) if recipe.get("encoder_from") else None
        dims = card.dims
        batch_size = int(recipe["batch_size"])
        history: list[dict[str, float]] = []
        best_state, best_auc = None, -1.0
        if epochs:
            steps = int(recipe["steps_per_epoch"]) or int(np.ceil(len(train) / batch_size))
            trainable = [p for p in network.parameters() if p.requires_grad]
            optimiser = torch.optim.AdamW(trainable, lr=float(recipe["learning_rate"]), weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=float(recipe["learning_rate"]),
                                                           total_steps=epochs * steps, pct_start=0.15)
            loss_fn = torch.nn.CrossEntropyLoss()
            step_progress = scaled(progress, 0.4, 1.0)
            frozen = bool(encoder_source and encoder_source["frozen"])
            localise = float(recipe.get("localisation_weight", 0.0))
            # a frozen encoder's Grad-CAM is trained through the aggregator, from the encoder's maps
            gradcam_from_maps = bool(localise and frozen and card.family != "attention")
            if gradcam_from_maps and not hasattr(network, "embed"):
                raise MedcadError(f"{card.name}: localisation supervision of a frozen encoder needs attention "
                                  "pooling or a network that embeds the encoder's maps (embed)")
            if frozen:  # the encoder's outputs are computed once; the rest trains on them (no augmentation)
                network.eval()
                train_features = _encoded(network, train, dims, maps=gradcam_from_maps)
                val_features = _encoded(network, val, dims) if val is not None else None
            for epoch in range(epochs):
                network.train()
                if frozen:
                    network.encoder.eval()  # frozen: batch-norm statistics stay those of the source
                order = rng.permutation(len(train))
                losses = []
                for step in range(steps):
                    indices = order[(np.arange(batch_size) + step * batch_size) % len(train)]
                    targets = torch.from_numpy(train.labels[indices].astype(np.int64))
                    heat = masks = None
                    heat_scores = False
                    if frozen:
                        features = train_features[torch.from_numpy(indices)].float()
                        if gradcam_from_maps:
                            (logits, heat), heat_scores = gradcam_of_maps(network, features), True
                        elif localise:
                            logits, heat = network.pool(features, return_attention=True)
                        else:
                            logits = network.pool(features)
                        masks = nodule_masks(train, indices, dims) if localise else None
                    elif localise:
                        inputs, masks = _augment(model_inputs(train, indices, dims), rng,
                                                 nodule_masks(train, indices, dims))
                        logits, heat, heat_scores = logits_and_heat(network, card, torch.from_numpy(inputs))
                    else:
                        logits = network(torch.from_numpy(_augment(model_inputs(train, indices, dims), rng)))
                    loss = loss_fn(logits, targets)
                    if localise:
                        loss = loss + localise * localisation_loss(heat, torch.from_numpy(masks), heat_scores)
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    losses.append(float(loss.detach()))
                    report(step_progress, epoch * steps + step + 1, epochs * steps,
                           f"epoch {epoch + 1}/{epochs}, loss {np.mean(losses):.4f}")
                entry = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5)}
                if val is not None:
                    if frozen:
                        network.eval()
                        with torch.no_grad():
                            scores = torch.softmax(network.pool(val_features.float()), dim=1)[:, 1].numpy()
                    else:
                        scores = predict_probabilities(network, val, dims)
                    entry["val_auc"] = round(roc_auc(val.labels, scores), 4)
                    if entry["val_auc"] > best_auc:
                        best_auc = entry["val_auc"]
                        best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                history.append(entry)
        if best_state is not None:
            network.load_state_dict(best_state)
        train_seconds = time.perf_counter() - started - data_seconds
        network.eval()
        weights_path = out_dir / card.weights
        save_weights(network, weights_path)
        card_path = out_dir / "card.yaml"
        card.provenance = {
            "trained_with": f"napari-medcad train-builtin {card.name}",
            "seed": seed,
            "data": {
                "source": "napari-medcad synthetic chest CT phantom (generate_chest_ct), sub-volumes by "
                          "core.training.classifier_data.case_samples",
                "train_case_seeds": {"seed": seed, "count": int(recipe["train_cases"]),
                                     "rule": "phantom.cases.case_seed(seed, i)"},
                "validation_case_seeds": {"seed": int(recipe["val_seed"]), "count": int(recipe["val_cases"])},
                "train_samples": {"total": len(train) if train else 0,
                                  "positive": int(train.labels.sum()) if train else 0},
                "validation_samples": {"total": len(val) if val else 0,
                                       "positive": int(val.labels.sum()) if val else 0},
            },
            "recipe": copy.deepcopy(recipe),
            "epochs": epochs,
            "instance_encoder": encoder_source or "trained from scratch",
            "loss": "cross-entropy (2 classes)" + (
                f" + {float(recipe['localisation_weight']):g} x localisation (training.localisation: -log of the "
                "heatmap's share inside the nodule)" if float(recipe.get("localisation_weight", 0.0)) else ""),
            "history": history,
            "selected_epoch": (max(history, key=lambda e: e.get("val_auc", -1))["epoch"] if history and val else epochs),
            "seconds": {"data": round(data_seconds, 1), "training": round(train_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "threads": torch.get_num_threads(),
            "versions": _versions(),
            "untrained": epochs == 0,
        }
        card.save(card_path)
        report(progress, 1, 1, "saved " + card.name)
        return card_path
    finally:
        torch.set_num_threads(previous_threads)


def train_classifier_builtin(name: str, out_dir=None, progress: ProgressFn | None = None, cache_dir=None,
                             **overrides) -> Path:
    """Retrain built-in classifier ``name`` (default output: the package's built-in folder)."""
    if name not in CLASSIFIER_RECIPES:
        raise MedcadError(f"unknown built-in classifier '{name}' (known: {', '.join(CLASSIFIER_RECIPES)})")
    card_template, recipe = CLASSIFIER_RECIPES[name]
    recipe = copy.deepcopy(recipe)
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise MedcadError(f"unknown training settings: {', '.join(sorted(unknown))}")
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    from ..models.registry import BUILTIN_DIR

    out_dir = Path(out_dir) if out_dir is not None else BUILTIN_DIR / name
    out_dir.mkdir(parents=True, exist_ok=True)
    return train_classifier(copy.deepcopy(card_template), recipe, out_dir, progress, cache_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_medcad.core.training.classifiers NAME [--out DIR] [--cache DIR] [--epochs N]``"""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m napari_medcad.core.training.classifiers")
    parser.add_argument("name", choices=sorted(CLASSIFIER_RECIPES))
    parser.add_argument("--out", default=None)
    parser.add_argument("--cache", default=None, help="folder to keep the generated samples in")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    def progress(item) -> None:
        print(f"\r{int(item.fraction * 100):3d}% {item.message[:70]:<70}", end="", file=sys.stderr, flush=True)

    path = train_classifier_builtin(args.name, args.out, progress, args.cache, epochs=args.epochs, seed=args.seed)
    print(file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
