"""Image-level classification benchmark of the four built-in classifier families (issue 5).

On held-out phantom samples (cases from a seed never used in training or validation, cut by
``core.training.classifiers`` exactly as the training samples are: positives around a nodule,
paired negatives from the same scan drawn without nodules, random lung negatives):

* ROC AUC of the plain 2-D CNN, the LSTM slice aggregator, the self-attention model and the
  attention-MIL model side by side (2-D models see the key slice, 3-D ones the sub-volume);
* for the positive samples: the fraction whose explanation heatmap (Grad-CAM for CNN/LSTM,
  the model's own attention for the attention models) peaks inside the true nodule (within its
  equivalent-sphere radius, on the key slice for 2-D models), from ``core.explain.explain``,
  i.e. mapped onto the sample's world geometry;
* mean time per sample (probability / explanation), one thread.

    .venv/bin/python benchmarks/bench_classifiers.py [--cases 20] [--seed 7777] [--cache DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

MODELS = ("nodule-cnn2d", "nodule-lstm3d", "nodule-attention2d", "nodule-mil3d")
BENCH_SEED = 7777


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--cache", default=None, help="keep/reuse the prepared phantom cases here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from napari_medcad.core.explain import explain
    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.models.registry import find_model
    from napari_medcad.core.training.classifier_data import build_samples, heatmap_hit, sample_image
    from napari_medcad.core.training.classifiers import predict_probabilities
    from napari_medcad.core.training.evaluation import roc_auc

    cards = [find_model(name) for name in MODELS]
    used = {int(card.provenance.get("seed", -1)) for card in cards}
    used |= {int(card.provenance.get("recipe", {}).get("val_seed", -1)) for card in cards}
    if args.seed in used:
        raise SystemExit(f"seed {args.seed} was used in training or validation ({sorted(used)})")

    started = time.perf_counter()
    samples = build_samples(args.seed, args.cases, cards[0].provenance.get("recipe"), args.cache)
    data_seconds = time.perf_counter() - started
    positives = np.flatnonzero(samples.labels == 1)
    print(f"held-out phantoms: {args.cases} cases (seed {args.seed}), {len(samples)} samples, "
          f"{len(positives)} positive, {len(samples) - len(positives)} negative "
          f"({int(np.sum(np.isnan(samples.nodules[:, 0, 0]) & (samples.labels == 0)))} nodule-free); "
          f"data {data_seconds:.0f} s", flush=True)

    rows = []
    for card in cards:
        network = load_network(card)
        t0 = time.perf_counter()
        probabilities = predict_probabilities(network, samples, card.dims)
        predict_ms = (time.perf_counter() - t0) / len(samples) * 1000
        auc = roc_auc(samples.labels, probabilities)
        accuracy = float(np.mean((probabilities >= card.threshold) == (samples.labels == 1)))
        t0 = time.perf_counter()
        hits = [heatmap_hit(explain(sample_image(samples, int(i), card.dims), card, preprocess=False), samples, int(i))
                for i in positives]
        explain_ms = (time.perf_counter() - t0) / max(1, len(positives)) * 1000
        seconds = card.provenance.get("seconds", {})
        rows.append((card.name, card.family, card.dims, auc, accuracy, int(np.sum(hits)), len(hits), predict_ms,
                     explain_ms, seconds.get("training", float("nan")), card.weights_path.stat().st_size / 1e6))
        print(f"  {card.name}: AUC {auc:.3f}, heatmap hits {int(np.sum(hits))}/{len(hits)}", flush=True)

    print()
    print("| model | family | input | ROC AUC | accuracy at 0.5 | heatmap peak in nodule | explanation | "
          "ms/sample (prob, map) | training (s) | weights (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, family, dims, auc, accuracy, hit, total, predict_ms, explain_ms, train_s, size in rows:
        method = "Grad-CAM" if family in ("cnn", "rnn") else "own attention"
        shape = "64 x 64 slice" if dims == 2 else "16 x 64 x 64 sub-volume"
        print(f"| {name} | {family} | {shape} | **{auc:.3f}** | {accuracy:.3f} | {hit}/{total} = {hit / max(1, total):.2f} | "
              f"{method} | {predict_ms:.1f}, {explain_ms:.0f} | {train_s} | {size:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
