"""The seeded recipe of the graph rescorer ``lung-nodule-gnn``: CNN candidates on phantoms in,
GNN card and weights out.

1. Candidates: the CNN detector (``lung-nodule-ct``, whatever weights it has now) runs with a
   LOW threshold (``candidate_threshold``) on seeded phantom cases; every connected region is a
   candidate.  A candidate is positive when its centre lies within a true nodule's radius (the
   rule of :func:`evaluation.match_case`), negative otherwise (mostly vessel cross-sections).
2. Features per candidate (``core.graph.features``) and a k-nearest-neighbour graph in world mm
   per case (``core.graph.construction``).
3. A small graph attention network (``networks.gnn``, torch_geometric TransformerConv) is trained full-batch on those graphs; its
   operating threshold is chosen on separate validation phantoms like the CNN's.

The card records the seeds, the CNN's weights digest, epochs and timings.  Same recipe, same
CNN weights and same thread count, same bits.  Re-run with one command::

    python -m napari_medcad.core.training.gnn [--out DIR] [--cache DIR]

``--cache`` keeps each case's CNN outputs (keyed by the CNN weights' digest), so a rerun with
other GNN settings skips the CNN; a changed CNN invalidates it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MedcadError
from ..progress import ProgressFn, report, scaled
from .gnn_recipe import GNN_CARD, GNN_TRAINING  # noqa: F401  (re-exported)


# --- CNN candidates, cached per case ------------------------------------------------------------

@dataclasses.dataclass
class CandidateCase:
    """What the CNN stage leaves for the GNN stage on one case, plus the truth when known."""

    findings: Any  # Findings on the image's grid
    image: Any  # MedicalImage, HU
    probability: Any  # MedicalImage, the CNN's probability on the image's grid
    labels: Any  # MedicalImage, candidate masks (value = finding.mask_value)
    lung_mask: Any  # MedicalImage on the model's grid (as run_model makes it)
    nodule_centres_mm: np.ndarray  # (M, 3)
    nodule_diameters_mm: np.ndarray  # (M,)
    cnn_seconds: float = 0.0

    def targets(self) -> np.ndarray:
        """1 for a candidate whose centre lies within a true nodule's radius, else 0."""
        centres = np.array([f.centre_world_mm for f in self.findings], float).reshape(-1, 3)
        if len(self.nodule_centres_mm) == 0:
            return np.zeros(len(centres), np.float32)
        distance = np.linalg.norm(centres[:, None, :] - self.nodule_centres_mm[None], axis=2)
        return (distance <= 0.5 * self.nodule_diameters_mm[None]).any(axis=1).astype(np.float32)


def weights_digest(card) -> str:
    """A short digest of a model's weights file: CNN outputs cached under it are still valid."""
    digest = hashlib.sha256()
    with open(card.weights_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def low_threshold_card(cnn_card, candidate_threshold: float, max_candidates: int):
    """The detector's card decoding every region above ``candidate_threshold`` (at most ``max_candidates``)."""
    return dataclasses.replace(cnn_card, decoding={**cnn_card.decoding, "threshold": float(candidate_threshold),
                                                   "max_findings": int(max_candidates)})


def model_grid_lung_mask(image, cnn_card):
    """The lung mask run_model makes for ``cnn_card`` (on the model's grid, from HU)."""
    from ..inference.run import _split_pipeline
    from ..preprocess import lung_mask

    _, geometry_steps, _ = _split_pipeline(cnn_card)
    return lung_mask(geometry_steps.run(image, device="cpu"))


def run_candidates(image, cnn_card, candidate_threshold: float, max_candidates: int, truth=None) -> CandidateCase:
    """The CNN at a low threshold on ``image``: its candidates, maps and the lung mask."""
    from ..inference.run import run_model

    started = time.perf_counter()
    result = run_model(image, low_threshold_card(cnn_card, candidate_threshold, max_candidates), device="cpu",
                       rescore=False)
    seconds = time.perf_counter() - started
    lungs = model_grid_lung_mask(image, cnn_card)
    centres, diameters = truth if truth is not None else (np.zeros((0, 3)), np.zeros(0))
    return CandidateCase(result.findings, image, result.probability, result.labels, lungs,
                         np.asarray(centres, float).reshape(-1, 3), np.asarray(diameters, float), seconds)


def _save_case(case: CandidateCase, path: Path) -> None:
    payload = {
        "image": np.asarray(case.image.array), "probability": np.asarray(case.probability.array, np.float16),
        "labels": np.asarray(case.labels.array), "lung": np.asarray(case.lung_mask.array, np.uint8),
        "centres": case.nodule_centres_mm, "diameters": case.nodule_diameters_mm,
        "meta": np.array(json.dumps({
            "geometry": case.image.geometry.to_dict(), "lung_geometry": case.lung_mask.geometry.to_dict(),
            "findings": case.findings.to_dict(), "name": case.image.name, "modality": case.image.modality,
            "cnn_seconds": case.cnn_seconds,
        })),
    }
    temporary = path.with_name(f".{path.name}.partial.npz")
    np.savez_compressed(temporary, **payload)
    os.replace(temporary, path)


def _load_case(path: Path) -> CandidateCase:
    from ..findings import Findings
    from ..image import Geometry, MedicalImage

    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        geometry = Geometry.from_dict(meta["geometry"])
        image = MedicalImage(data["image"], geometry, modality=meta["modality"], name=meta["name"])
        probability = image.with_array(data["probability"].astype(np.float32), modality="OT", metadata={})
        labels = image.with_array(data["labels"], modality="SEG", metadata={})
        lungs = MedicalImage(data["lung"], Geometry.from_dict(meta["lung_geometry"]), modality="SEG")
        return CandidateCase(Findings.from_dict(meta["findings"]), image, probability, labels, lungs,
                             data["centres"], data["diameters"], float(meta["cnn_seconds"]))


def cached_candidates(key: str, make, cache_dir: str | os.PathLike | None) -> CandidateCase:
    """``make()``'s CandidateCase, read from ``cache_dir/key.npz`` when it is there."""
    if cache_dir is None:
        return make()
    path = Path(cache_dir) / f"{key}.npz"
    if path.is_file():
        try:
            return _load_case(path)
        except (OSError, ValueError, KeyError):
            pass
    case = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_case(case, path)
    return case


def phantom_config(seed: int, recipe: dict[str, Any]):
    """The CNN recipe's phantom augmentation (noise, blur, HU calibration, contrast, nodule mix,
    slice thickness; >= 1 nodule) on the default whole-chest box (358 mm field, 288 mm long).
    Cropped, targeted fields of view leave almost no lung mask (the lungs touch the edge), which
    would teach the GNN a lung-wall distance it never sees on a whole chest; a fixed box also
    keeps the CNN's cost per case that of the benchmark's cases."""
    from ..phantom import PhantomConfig
    from ..phantom.config import recipe_placement

    config = PhantomConfig.random_for_training(seed)
    box = PhantomConfig()
    length_mm = box.shape_zyx[0] * box.spacing_xyz[2]
    slice_mm = config.spacing_xyz[2]
    return dataclasses.replace(
        config, shape_zyx=(max(8, round(length_mm / slice_mm)), *box.shape_zyx[1:]),
        spacing_xyz=(*box.spacing_xyz[:2], slice_mm), first_slice_z_mm=box.first_slice_z_mm,
        n_nodules=(1, max(2, config.n_nodules[1])),
        **recipe_placement(recipe),
    )


def phantom_candidates(seed: int, config, cnn_card, recipe: dict[str, Any], cache_dir=None,
                       digest: str = "") -> CandidateCase:
    """The CNN's candidates on the phantom of ``seed`` and ``config``, with its true nodules."""
    from ..phantom import generate_chest_ct

    digest = digest or weights_digest(cnn_card)

    def make():
        case = generate_chest_ct(seed, config)
        truth = (np.array([n.centre_world_mm for n in case.nodules], float).reshape(-1, 3),
                 np.array([n.diameter_mm for n in case.nodules], float))
        candidates = run_candidates(case.image, cnn_card, float(recipe["candidate_threshold"]),
                                    int(recipe["max_candidates"]), truth)
        if weights_digest(cnn_card) != digest:  # retrained meanwhile: these came from other weights
            raise MedcadError(f"the weights of '{cnn_card.name}' changed during the run; start again")
        return candidates

    config_key = hashlib.sha256(repr(config).encode()).hexdigest()[:10]
    # the candidates depend on how the detector is run too (windows, masks, decoding), not only its weights
    running = json.dumps([cnn_card.preprocessing, cnn_card.inference, cnn_card.decoding], sort_keys=True, default=str)
    run_key = hashlib.sha256(running.encode()).hexdigest()[:8]
    key = f"{cnn_card.name}-{digest}-r{run_key}-t{recipe['candidate_threshold']}-m{recipe['max_candidates']}-s{seed}-c{config_key}"
    return cached_candidates(key, make, cache_dir)


def case_graph(case: CandidateCase, k: int, card=None, detector_network=None):
    """The candidate graph of one case and its node targets (1: a true nodule).  With a rescorer
    ``card`` that reads the detector's embedding, it is computed (``detector_network``: loaded once)."""
    from ..graph import candidate_graph
    from ..graph.rescore import detector_embeddings, embedding_spec

    embeddings = None
    if card is not None and embedding_spec(card) is not None:
        embeddings = detector_embeddings(case.findings, case.image, card, network=detector_network)
    graph = candidate_graph(case.findings, case.image, case.probability, case.lung_mask, case.labels, k=k,
                            embeddings=embeddings)
    return graph, case.targets()


def _to_data(graph, targets=None):
    import torch

    from ..graph.pyg import load

    Data = load().data.Data

    data = Data(x=torch.from_numpy(graph.features.astype(np.float32)),
                edge_index=torch.from_numpy(graph.edge_index.astype(np.int64)),
                edge_attr=torch.from_numpy(graph.edge_attr.astype(np.float32)))
    if targets is not None:
        data.y = torch.from_numpy(np.asarray(targets, np.float32))
    return data


def evaluate(cases: list[CandidateCase], gnn_scores: list[np.ndarray], fp_per_scan: float) -> dict:
    """FROC/CPM of the detector's scores and of the GNN's on the same candidates, and the GNN
    threshold that keeps ``fp_per_scan`` false positives per scan."""
    from .evaluation import froc, match_case, threshold_for_fp_rate

    out: dict[str, Any] = {"cases": len(cases), "nodules": int(sum(len(c.nodule_centres_mm) for c in cases))}
    for name in ("cnn", "gnn"):
        matches = []
        for case, scores in zip(cases, gnn_scores):
            centres = np.array([f.centre_world_mm for f in case.findings], float).reshape(-1, 3)
            probs = [f.scores.get("cnn", f.probability) for f in case.findings] if name == "cnn" else list(scores)
            matches.append(match_case(centres, probs, case.nodule_centres_mm, case.nodule_diameters_mm))
        result = froc(matches)
        out[name] = {"froc": {str(k): round(v, 4) for k, v in result["sensitivity"].items()},
                     "cpm": round(result["cpm"], 4), "max_sensitivity": round(result["max_sensitivity"], 4)}
        if name == "gnn":
            out["threshold"] = round(float(np.clip(threshold_for_fp_rate(matches, fp_per_scan), 0.05, 0.95)), 4)
    return out


def train_gnn(card_data: dict, recipe: dict, out_dir: str | os.PathLike, progress: ProgressFn | None = None,
              cache_dir: str | os.PathLike | None = None) -> Path:
    """Collect candidates, train the rescorer, choose its threshold; write card.yaml and weights."""
    import torch

    from ..graph.pyg import load

    Batch = load().data.Batch

    from ..graph import EDGE_FEATURE_NAMES
    from ..graph.rescore import embedding_spec, node_feature_names, score_graph
    from ..inference.embedding import EmbeddingSpec
    from ..models.card import ModelCard
    from ..models.loading import load_network
    from ..models.networks import build
    from ..models.registry import find_model
    from ..phantom.cases import case_seed
    from .loop import _versions, save_weights

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(recipe["threads"])))
    try:
        seed = int(recipe["seed"])
        k = int(recipe["k_neighbours"])
        card_data = copy.deepcopy(card_data)
        inference = {key: value for key, value in card_data["inference"].items() if key != "cnn_embedding"}
        inference.update(detector=recipe["detector"], candidate_threshold=float(recipe["candidate_threshold"]),
                         max_candidates=int(recipe["max_candidates"]), k_neighbours=k,
                         edge_features=list(EDGE_FEATURE_NAMES))
        if recipe.get("cnn_embedding"):
            inference["cnn_embedding"] = EmbeddingSpec.from_card(recipe).to_dict()
        card_data["inference"] = inference
        card = ModelCard.from_dict(card_data)
        names = node_feature_names(card)
        card.inference["features"] = list(names)
        card.architecture["params"]["in_features"] = len(names)
        card.architecture["params"]["edge_features"] = len(EDGE_FEATURE_NAMES)
        detector = find_model(str(recipe["detector"]))
        digest = weights_digest(detector)
        detector_network = load_network(detector) if embedding_spec(card) is not None else None

        n_train, n_val = int(recipe["train_cases"]), int(recipe["val_cases"])
        plan = [(case_seed(seed, i), "train") for i in range(n_train)]
        plan += [(case_seed(int(recipe["val_seed"]), i), "val") for i in range(n_val)]
        train_cases, val_cases = [], []
        data_progress = scaled(progress, 0.0, 0.85)
        for index, (case_index_seed, role) in enumerate(plan):
            report(data_progress, index, len(plan), f"CNN candidates on phantom {index + 1}/{len(plan)}")
            case = phantom_candidates(case_index_seed, phantom_config(case_index_seed, recipe), detector, recipe,
                                      cache_dir, digest)
            (train_cases if role == "train" else val_cases).append(case)
        data_seconds = time.perf_counter() - started

        clock = time.perf_counter()
        graphs = [case_graph(case, k, card, detector_network) for case in train_cases]
        feature_seconds = time.perf_counter() - clock
        features = np.concatenate([g.features for g, _ in graphs]) if graphs else np.zeros((0, len(names)))
        targets = np.concatenate([t for _, t in graphs]) if graphs else np.zeros(0)
        n_positive = int(targets.sum())
        if len(targets) and n_positive == 0:
            raise MedcadError("the detector found no true nodule among the training candidates; nothing to learn")
        least = int(recipe.get("min_class_nodes", 0))
        if int(recipe["epochs"]) and min(n_positive, len(targets) - n_positive) < least:
            raise MedcadError(
                f"the detector's candidates on {len(train_cases)} training phantoms are {n_positive} true nodules "
                f"and {len(targets) - n_positive} false positives; a rescorer needs at least {least} of each "
                "(a detector this specific leaves it nothing to learn)")

        torch.manual_seed(seed)
        network = build(card.architecture)
        if len(features):
            network.set_normalisation(torch.from_numpy(features.mean(axis=0)).float(),
                                      torch.from_numpy(features.std(axis=0)).float())
        epochs = int(recipe["epochs"])
        losses: list[float] = []
        clock = time.perf_counter()
        if epochs and len(targets):
            batch = Batch.from_data_list([_to_data(g, t) for g, t in graphs])
            positive_weight = torch.tensor(min(20.0, (len(targets) - n_positive) / max(n_positive, 1)))
            loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=positive_weight)
            optimiser = torch.optim.AdamW(network.parameters(), lr=float(recipe["learning_rate"]),
                                          weight_decay=float(recipe["weight_decay"]))
            noise_scale = network.feature_std * float(recipe["feature_noise"])
            generator = torch.Generator().manual_seed(seed)
            network.train()
            train_progress = scaled(progress, 0.85, 0.95)
            for epoch in range(epochs):
                noisy = batch.x + torch.randn(batch.x.shape, generator=generator) * noise_scale
                loss = loss_fn(network(noisy, batch.edge_index, batch.edge_attr), batch.y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
                if epoch % 25 == 0 or epoch == epochs - 1:
                    report(train_progress, epoch + 1, epochs, f"epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
        train_seconds = time.perf_counter() - clock
        network.eval()
        weights_path = out_dir / card.weights
        save_weights(network, weights_path)

        report(progress, 95, 100, "validation")
        validation: dict[str, Any] = {}
        if val_cases:
            val_scores = [score_graph(case_graph(case, k, card, detector_network)[0], network) for case in val_cases]
            validation = evaluate(val_cases, val_scores, float(recipe["val_fp_per_scan"]))
            card.decoding["threshold"] = validation["threshold"]
        train_scores = np.concatenate([score_graph(g, network) for g, _ in graphs]) if graphs else np.zeros(0)
        card.provenance = {
            "trained_with": "python -m napari_medcad.core.training.gnn",
            "seed": seed,
            "detector": {"name": detector.name, "version": detector.version, "weights_sha256_16": digest},
            "data": {
                "source": "candidates of the detector at candidate_threshold on napari-medcad synthetic chest CT "
                          "phantoms (generate_chest_ct)",
                "train_case_seeds": {"seed": seed, "count": n_train, "rule": "phantom.cases.case_seed(seed, i)"},
                "validation_case_seeds": {"seed": int(recipe["val_seed"]), "count": n_val},
                "phantom_config": "training.gnn.phantom_config: PhantomConfig.random_for_training(case_seed)'s "
                                  "acquisition and nodule mix on the default 358 x 358 x 288 mm chest box, "
                                  "n_nodules >= 1",
                "target": "1 when the candidate's centre lies within a true nodule's radius (evaluation.match_case)",
                "train_nodes": int(len(targets)), "train_positive_nodes": n_positive,
                "train_edges": int(sum(g.n_edges for g, _ in graphs)),
            },
            "recipe": dict(recipe),
            "epochs": epochs,
            "loss": "BCEWithLogits(pos_weight = negatives/positives, at most 20), full batch, AdamW",
            "losses_every_50_epochs": [round(v, 5) for v in losses[::50]] + ([round(losses[-1], 5)] if losses else []),
            "train_auc": _auc(targets, train_scores),
            "validation": validation,
            "seconds": {"cnn_candidates": round(data_seconds, 1),
                        "detector_run_model_when_made": round(sum(c.cnn_seconds for c in train_cases + val_cases), 1),
                        "features": round(feature_seconds, 1),
                        "training": round(train_seconds, 1), "total": round(time.perf_counter() - started, 1),
                        "cnn_outputs_cached": bool(cache_dir)},
            "threads": torch.get_num_threads(),
            "versions": {**_versions(), "torch_geometric": _version("torch_geometric")},
            "untrained": epochs == 0,
        }
        card_path = card.save(out_dir / "card.yaml")
        report(progress, 1, 1, "saved " + card.name)
        return card_path
    finally:
        torch.set_num_threads(previous_threads)


def _auc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney), None without both classes."""
    targets = np.asarray(targets) > 0.5
    if targets.all() or not targets.any():
        return None
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(targets.sum()), int((~targets).sum())
    return round(float((ranks[targets].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)), 4)


def _version(package: str) -> str:
    import importlib.metadata as metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv=None) -> int:
    """``python -m napari_medcad.core.training.gnn``: retrain lung-nodule-gnn from its recipe."""
    import argparse
    import sys

    from ..models.registry import BUILTIN_DIR

    parser = argparse.ArgumentParser(description="retrain the built-in graph rescorer lung-nodule-gnn (CPU)")
    parser.add_argument("--out", default=str(BUILTIN_DIR / GNN_CARD["name"]),
                        help="folder for card.yaml and weights.pt (default: the built-in model in the package)")
    parser.add_argument("--cache", default=None, help="folder keeping the CNN's candidates per case (optional)")
    for key in ("seed", "train_cases", "val_cases", "epochs", "threads"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = parser.parse_args(argv)
    recipe = dict(GNN_TRAINING)
    recipe.update({key: getattr(args, key) for key in ("seed", "train_cases", "val_cases", "epochs", "threads")
                   if getattr(args, key) is not None})

    def progress(item) -> None:
        print(f"\r{int(item.fraction * 100):3d}% {item.message[:70]:<70}", end="", file=sys.stderr, flush=True)

    path = train_gnn(GNN_CARD, recipe, args.out, progress, cache_dir=args.cache)
    print(file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
