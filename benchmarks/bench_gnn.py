"""Graph rescoring benchmark (issue 5): the CNN alone against CNN + GNN on the same candidates.

The CNN (``lung-nodule-ct``) runs ONCE per case at the GNN card's low candidate threshold; its
candidates are scored twice: by the CNN's own probability and by the GNN (``lung-nodule-gnn``).
Prints one table:

* FROC (LUNA16 rates 1/8..8 FP/scan) and CPM on held-out phantoms (the detection benchmark's
  cases: seed 7777, the generator's default chest CT), a hit being a candidate whose centre lies
  within the true nodule's radius (``evaluation.match_case``);
* false positives per scan at equal sensitivity (0.90, or the highest both reach);
* each model at its card's threshold;
* the real CT (../shared/data/real/lung1_image.nrrd with lung1_label.nrrd): the expert nodule's
  scores and rank, false positives above each threshold and at the nodule's score;
* time: the GNN stage (features, graph, network) against run_model, per case and on a
  300 x 512 x 512 CT; and on that CT ``napari-medcad predict`` end to end in fresh processes with
  and without the rescorer.

    .venv/bin/python benchmarks/bench_gnn.py [--cases 20] [--seed 7777] [--cache /tmp/gnn_cache] [--skip-big]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_detection import BENCH_SEED, REAL, print_table  # noqa: E402  (the same held-out cases and real CT)

TARGET_SENSITIVITY = 0.90


def curve(matches) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, FP per scan) at every threshold (each distinct score), highest threshold first."""
    tp = np.array([p for m in matches for p in m.tp_probs], float)
    fp = np.array([p for m in matches for p in m.fp_probs], float)
    n_nodules = max(1, sum(m.n_nodules for m in matches))
    thresholds = np.unique(np.concatenate([tp, fp]))[::-1]
    sensitivity = np.array([(tp >= t).sum() / n_nodules for t in thresholds])
    fp_per_scan = np.array([(fp >= t).sum() / max(1, len(matches)) for t in thresholds])
    return sensitivity, fp_per_scan


def fp_at_sensitivity(matches, sensitivity: float) -> float:
    """The fewest false positives per scan of any threshold reaching ``sensitivity``."""
    sens, fps = curve(matches)
    reached = sens >= sensitivity - 1e-12
    return float(fps[reached].min()) if reached.any() else float("nan")


def match(case, scores):
    from napari_medcad.core.training.evaluation import match_case

    centres = np.array([f.centre_world_mm for f in case.findings], float).reshape(-1, 3)
    return match_case(centres, list(scores), case.nodule_centres_mm, case.nodule_diameters_mm)


_DETECTORS: dict = {}


def rescored(case, card):
    """The CNN's and the GNN's scores of the case's candidates, and the GNN stage's seconds as in
    run_model: the detector's embedding of the candidates (its input already prepared, its network
    loaded, as run_model has them), features, graph and network."""
    from napari_medcad.core.graph import rescore_with_graph
    from napari_medcad.core.graph.rescore import embedding_spec

    prepared = network = None
    if embedding_spec(card) is not None:
        from napari_medcad.core.inference.run import _split_pipeline
        from napari_medcad.core.models.loading import load_network
        from napari_medcad.core.models.registry import find_model

        name = str(card.inference["detector"])
        if name not in _DETECTORS:
            detector = find_model(name)
            _DETECTORS[name] = (detector, load_network(detector))
        detector, network = _DETECTORS[name]
        prepared = _split_pipeline(detector)[0].run(case.image, device="cpu")
    started = time.perf_counter()
    findings, graph = rescore_with_graph(case.findings, case.image, case.probability, case.lung_mask, case.labels,
                                         model=card, prepared=prepared, detector_network=network)
    seconds = time.perf_counter() - started
    return np.array([f.scores.get("cnn", 0.0) for f in findings]), graph.scores["gnn"], seconds


def phantoms(cnn, gnn_card, n_cases: int, seed: int, cache) -> dict:
    from napari_medcad.core.phantom import PhantomConfig
    from napari_medcad.core.phantom.cases import case_seed
    from napari_medcad.core.training import gnn
    from napari_medcad.core.training.evaluation import froc

    recipe = {"candidate_threshold": gnn_card.inference["candidate_threshold"],
              "max_candidates": gnn_card.inference["max_candidates"]}
    digest = gnn.weights_digest(cnn)
    cnn_matches, gnn_matches, cnn_seconds, gnn_seconds, candidates = [], [], [], [], []
    for index in range(n_cases):
        case = gnn.phantom_candidates(case_seed(seed, index), PhantomConfig(), cnn, recipe, cache, digest)
        cnn_scores, gnn_scores, seconds = rescored(case, gnn_card)
        cnn_matches.append(match(case, cnn_scores))
        gnn_matches.append(match(case, gnn_scores))
        cnn_seconds.append(case.cnn_seconds)
        gnn_seconds.append(seconds)
        candidates.append(len(case.findings))
        print(f"  case {index + 1}/{n_cases}: {len(case.nodule_centres_mm)} nodules, {len(case.findings)} candidates, "
              f"{len(cnn_matches[-1].tp_probs)} found; CNN {case.cnn_seconds:.1f} s, GNN {seconds:.2f} s", file=sys.stderr)
    highest = min(max(curve(cnn_matches)[0], default=0.0), max(curve(gnn_matches)[0], default=0.0))
    target = min(TARGET_SENSITIVITY, highest)

    def at_threshold(matches, threshold):
        n = max(1, sum(m.n_nodules for m in matches))
        return (sum(sum(p >= threshold for p in m.tp_probs) for m in matches) / n,
                sum(sum(p >= threshold for p in m.fp_probs) for m in matches) / max(1, len(matches)))

    return {
        "cnn": froc(cnn_matches), "gnn": froc(gnn_matches), "target_sensitivity": target,
        "fp_at_levels": [(level, fp_at_sensitivity(cnn_matches, level), fp_at_sensitivity(gnn_matches, level))
                         for level in sorted({*(v for v in (0.2, 0.3, 0.4) if v < target), target})],
        "cnn_at_card": at_threshold(cnn_matches, cnn.threshold), "gnn_at_card": at_threshold(gnn_matches, gnn_card.threshold),
        "cnn_seconds": float(np.mean(cnn_seconds)), "gnn_seconds": float(np.mean(gnn_seconds)),
        "candidates": float(np.mean(candidates)), "n_scans": n_cases,
        "n_nodules": sum(m.n_nodules for m in cnn_matches),
    }


def real_ct(cnn, gnn_card, cache) -> dict:
    from napari_medcad.core.io import read_image
    from napari_medcad.core.training import gnn

    image = read_image(REAL / "lung1_image.nrrd")
    label = read_image(REAL / "lung1_label.nrrd")
    truth = label.array > 0
    centre = label.index_to_world(np.argwhere(truth).mean(axis=0))
    diameter = (6.0 * truth.sum() * np.prod(label.geometry.spacing_xyz) / np.pi) ** (1 / 3)
    key = f"real-lung1-{gnn.weights_digest(cnn)}-t{gnn_card.inference['candidate_threshold']}"
    case = gnn.cached_candidates(key, lambda: gnn.run_candidates(
        image, cnn, gnn_card.inference["candidate_threshold"], gnn_card.inference["max_candidates"],
        (np.reshape(centre, (1, 3)), np.array([diameter]))), cache)
    cnn_scores, gnn_scores, seconds = rescored(case, gnn_card)
    out = {"candidates": len(case.findings), "diameter_mm": float(diameter), "cnn_seconds": case.cnn_seconds,
           "gnn_seconds": seconds}
    for name, scores, threshold in (("cnn", cnn_scores, cnn.threshold), ("gnn", gnn_scores, gnn_card.threshold)):
        m = match(case, scores)
        best = m.tp_probs[0] if m.tp_probs else None
        out[name] = {
            "nodule_score": best, "threshold": threshold,
            "found_at_threshold": bool(best is not None and best >= threshold),
            "fp_above_threshold": int(sum(p >= threshold for p in m.fp_probs)),
            "fp_at_nodule_score": None if best is None else int(sum(p >= best for p in m.fp_probs)),
            "fp_total": len(m.fp_probs),
        }
    return out


def big_ct(cnn, gnn_card) -> dict:
    """run_model at the candidate threshold and the GNN stage on a 300 x 512 x 512 phantom CT."""
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct
    from napari_medcad.core.training import gnn

    config = PhantomConfig(shape_zyx=(300, 512, 512), spacing_xyz=(0.7, 0.7, 1.0), first_slice_z_mm=-330.0)
    case = generate_chest_ct(BENCH_SEED, config)
    candidates = gnn.run_candidates(case.image, cnn, gnn_card.inference["candidate_threshold"],
                                    gnn_card.inference["max_candidates"])
    _, _, seconds = rescored(candidates, gnn_card)
    return {"cnn_seconds": candidates.cnn_seconds, "gnn_seconds": seconds, "candidates": len(candidates.findings)}


def predict_with_and_without(repeats: int = 2) -> dict:
    """Wall time of ``napari-medcad predict`` on a 300 x 512 x 512 phantom CT (NIfTI), each run a
    fresh process, with the rescorer and with ``--no-rescore``, alternating: what the GNN stage
    adds end to end, importing torch_geometric included (the stage times above are taken with it imported)."""
    import subprocess
    import tempfile

    from napari_medcad.core.io import write_image
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct

    config = PhantomConfig(shape_zyx=(300, 512, 512), spacing_xyz=(0.7, 0.7, 1.0), first_slice_z_mm=-330.0)
    times: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as folder:
        path = write_image(generate_chest_ct(BENCH_SEED, config).image, Path(folder) / "big.nii.gz")
        for index in range(repeats):
            for name in (("with", "without") if index % 2 == 0 else ("without", "with")):
                command = [sys.executable, "-c", "import sys; from napari_medcad.cli import main; sys.exit(main())",
                           "predict", str(path), "--out", str(Path(folder) / name), "--device", "cpu",
                           "--rescore" if name == "with" else "--no-rescore"]
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                times[name].append(time.perf_counter() - started)
    return {name: min(values) for name, values in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--model", default="lung-nodule-gnn")
    parser.add_argument("--cache", default=None, help="folder keeping the CNN's candidates per case (keyed by its weights)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from napari_medcad.core.graph import gnn_card as read_gnn_card
    from napari_medcad.core.models.registry import find_model
    from napari_medcad.core.training.evaluation import FROC_FP_RATES

    torch.set_num_threads(args.threads)
    # the stage times below are with torch_geometric imported (as in the GUI, which imports it when the
    # Inference widget opens); a fresh process's import is in the end-to-end `predict` row
    from napari_medcad.core.inference.run import warm_up

    warm_up()
    gnn_card = read_gnn_card(args.model)
    cnn = find_model(gnn_card.inference["detector"])
    rows = [("models", f"{cnn.name} {cnn.version} (threshold {cnn.threshold:g}) + {gnn_card.name} {gnn_card.version} "
                       f"(threshold {gnn_card.threshold:g})", ""),
            ("candidates", f"CNN regions above {gnn_card.inference['candidate_threshold']}, "
                           f"k = {gnn_card.inference['k_neighbours']} nearest in world mm", "")]
    if args.cases:
        p = phantoms(cnn, gnn_card, args.cases, args.seed, args.cache)
        rows.append((f"phantoms (seed {args.seed}, default config)",
                     f"{p['n_scans']} scans, {p['n_nodules']} nodules, {p['candidates']:.1f} candidates/scan", ""))
        for rate in FROC_FP_RATES:
            rows.append((f"sensitivity @ {rate:g} FP/scan", f"CNN {p['cnn']['sensitivity'][rate]:.3f}   "
                         f"CNN+GNN {p['gnn']['sensitivity'][rate]:.3f}", ""))
        rows.append(("CPM", f"CNN {p['cnn']['cpm']:.3f}   CNN+GNN {p['gnn']['cpm']:.3f}", "GNN higher"))
        rows.append(("max sensitivity (all candidates)", f"{p['cnn']['max_sensitivity']:.3f} (same candidates)", ""))
        for level, cnn_fp, gnn_fp in p["fp_at_levels"]:
            fewer = (1 - gnn_fp / cnn_fp) if cnn_fp else float("nan")
            target = ">= 30% fewer at 0.90" if level == p["target_sensitivity"] else ""
            name = "highest both reach" if level == p["target_sensitivity"] < TARGET_SENSITIVITY else "equal sensitivity"
            rows.append((f"FP/scan at sensitivity {level:.3f} ({name})",
                         f"CNN {cnn_fp:.2f}   CNN+GNN {gnn_fp:.2f}   ({fewer:.0%} fewer with the GNN)", target))
        rows.append(("at the cards' thresholds", f"CNN sens {p['cnn_at_card'][0]:.3f}, {p['cnn_at_card'][1]:.2f} FP/scan   "
                     f"CNN+GNN sens {p['gnn_at_card'][0]:.3f}, {p['gnn_at_card'][1]:.2f} FP/scan", ""))
        rows.append(("time per scan", f"run_model {p['cnn_seconds']:.1f} s, GNN stage {p['gnn_seconds']:.2f} s "
                     f"({p['gnn_seconds'] / p['cnn_seconds']:.1%})", "<= 10%"))
    if REAL.exists() and not args.skip_real:
        r = real_ct(cnn, gnn_card, args.cache)
        for name, label in (("cnn", "CNN"), ("gnn", "CNN+GNN")):
            s = r[name]
            score = "missed" if s["nodule_score"] is None else f"{s['nodule_score']:.3f}"
            rows.append((f"real CT lung1 ({r['candidates']} candidates): {label}",
                         f"nodule score {score}, found at threshold {s['found_at_threshold']}, "
                         f"FP above threshold {s['fp_above_threshold']}, FP scoring >= the nodule {s['fp_at_nodule_score']}",
                         ""))
        rows.append(("real CT lung1: time", f"run_model {r['cnn_seconds']:.1f} s, GNN stage {r['gnn_seconds']:.2f} s", ""))
    if not args.skip_big:
        b = big_ct(cnn, gnn_card)
        rows.append(("300x512x512 CT: time", f"run_model {b['cnn_seconds']:.1f} s, GNN stage {b['gnn_seconds']:.2f} s "
                     f"({b['gnn_seconds'] / b['cnn_seconds']:.1%}, {b['candidates']} candidates)", "<= 10%"))
        e = predict_with_and_without()
        rows.append(("300x512x512 CT: `predict` end to end, fresh process (best of 2)",
                     f"{e['without']:.1f} s without the GNN, {e['with']:.1f} s with it "
                     f"(+{e['with'] / e['without'] - 1:.1%}, importing torch_geometric included)", "<= 10%"))
    print_table(rows, "bench_gnn.py", argv)
    print(f"torch threads: {torch.get_num_threads()}; CNN weights {cnn.provenance.get('seconds', {})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
