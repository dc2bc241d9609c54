"""Detection benchmark of the built-in lung-nodule-ct model (issue 4's targets).

Prints one table:
* FROC on phantom cases from a seed never used in training (LUNA16 rates 1/8..8 FP/scan, CPM);
  a hit is a finding whose centre lies within the true nodule's radius;
* the real CT (../shared/data/real/lung1_*.nrrd): is the annotated nodule found above the
  card's threshold, and how many false positives are above it;
* speed: run_model end to end on a 300 x 512 x 512 phantom CT (read from NIfTI, in a fresh
  process so its peak memory is measured alone), and the ratio of the engine's tiled inference
  with mask skipping (lung mask included) to MONAI's plain sliding_window_inference over the
  whole volume, best of --repeats alternating runs, with the findings of both compared.

    .venv/bin/python benchmarks/bench_detection.py [--cases 20] [--seed 7777] [--skip-speed] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
#: never used by training (training: 20240401, validation: 20240402)
BENCH_SEED = 7777


def froc_on_phantoms(card, n_cases: int, seed: int, config_kind: str) -> dict:
    from napari_medcad.core.inference.run import run_model
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct
    from napari_medcad.core.phantom.cases import case_seed
    from napari_medcad.core.training.evaluation import froc, match_case

    # every candidate the card's masks can give (its mask level), so sweeping the threshold
    # reproduces exactly the findings the card gives at each operating point
    floor = float(card.decoding.get("mask_threshold", 0.05))
    low = dataclasses.replace(card, decoding={**card.decoding, "threshold": floor})
    matches, at_threshold, missed, seconds = [], [], [], []
    for index in range(n_cases):
        case_index_seed = case_seed(seed, index)
        config = (PhantomConfig.random_for_training(case_index_seed, max_in_plane=512, max_slices=200)
                  if config_kind == "training" else PhantomConfig())
        case = generate_chest_ct(case_index_seed, config)
        started = time.perf_counter()
        result = run_model(case.image, low, device="cpu", rescore=False)  # the CNN (bench_gnn: + GNN)
        seconds.append(time.perf_counter() - started)
        centres = np.array([f.centre_world_mm for f in result.findings], float).reshape(-1, 3)
        probs = [f.probability for f in result.findings]
        truth = np.array([n.centre_world_mm for n in case.nodules], float).reshape(-1, 3)
        diameters = [n.diameter_mm for n in case.nodules]
        match = match_case(centres, probs, truth, diameters)
        matches.append(match)
        keep = [i for i, p in enumerate(probs) if p >= card.threshold]
        at_threshold.append(match_case(centres[keep], [probs[i] for i in keep], truth, diameters))
        for i in at_threshold[-1].missed:
            n = case.nodules[i]
            missed.append(f"{n.diameter_mm:.1f} mm {n.kind}{' ' + n.attached if n.attached else ''}")
        print(f"  case {index + 1}/{n_cases}: {len(case.nodules)} nodules, {len(match.tp_probs)} found, "
              f"{len(at_threshold[-1].fp_probs)} FP above threshold, {seconds[-1]:.1f} s", file=sys.stderr)
    scores = froc(matches)
    n_nodules = sum(m.n_nodules for m in at_threshold)
    scores["at_card_threshold"] = {
        "sensitivity": sum(len(m.tp_probs) for m in at_threshold) / max(1, n_nodules),
        "fp_per_scan": sum(len(m.fp_probs) for m in at_threshold) / max(1, n_cases),
    }
    scores["missed_at_threshold"] = missed
    scores["seconds_per_case"] = float(np.mean(seconds)) if seconds else 0.0
    return scores


def real_ct(card) -> dict:
    from napari_medcad.core.inference.run import run_model
    from napari_medcad.core.io import read_image

    image = read_image(REAL / "lung1_image.nrrd")
    label = read_image(REAL / "lung1_label.nrrd")
    started = time.perf_counter()
    result = run_model(image, card, device="cpu", rescore=False)
    seconds = time.perf_counter() - started
    truth = label.array > 0
    voxels = np.argwhere(truth)
    centre = label.index_to_world(voxels.mean(axis=0))
    radius = 0.5 * (6.0 * truth.sum() * np.prod(label.geometry.spacing_xyz) / np.pi) ** (1 / 3)
    above = result.findings.above(card.threshold)
    hits, false_positives = [], []
    for finding in above:
        near = np.linalg.norm(np.asarray(finding.centre_world_mm) - centre) <= radius
        (hits if near else false_positives).append(finding)
    best = max((f.probability for f in result.findings
                if np.linalg.norm(np.asarray(f.centre_world_mm) - centre) <= radius), default=0.0)
    return {"found": bool(hits), "probability": float(best), "false_positives": len(false_positives),
            "fp_probabilities": [round(f.probability, 3) for f in false_positives], "seconds": seconds,
            "nodule_diameter_mm": 2 * radius}


SPEED_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from napari_medcad.core.io import read_image
from napari_medcad.core.inference.run import run_model
image = read_image(sys.argv[1])
t1 = time.perf_counter()
result = run_model(image, "lung-nodule-ct", device="cpu")
t2 = time.perf_counter()
print(json.dumps({"read_s": t1 - t0, "run_model_s": t2 - t1, "end_to_end_s": t2 - t0,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                  "findings": len(result.findings), "timings": result.report["timings_s"],
                  "engine": result.report["engine"]}))
"""


def _matched(a: list, b: list, within_mm: float) -> int:
    """How many findings of ``a`` have a finding of ``b`` within ``within_mm`` (centres)."""
    if not a or not b:
        return 0
    centres_b = np.array([f.centre_world_mm for f in b], float)
    return int(sum(np.linalg.norm(centres_b - np.asarray(f.centre_world_mm), axis=1).min() <= within_mm for f in a))


def speed(card, repeats: int = 2) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from napari_medcad.core.inference.decode import decode_components
    from napari_medcad.core.inference.engine import TileSettings, infer_probabilities
    from napari_medcad.core.inference.run import _split_pipeline
    from napari_medcad.core.io import write_image
    from napari_medcad.core.models.loading import load_network
    from napari_medcad.core.phantom import PhantomConfig, generate_chest_ct
    from napari_medcad.core.preprocess import lung_mask

    torch.set_num_threads(2)
    config = PhantomConfig(shape_zyx=(300, 512, 512), spacing_xyz=(0.7, 0.7, 1.0), first_slice_z_mm=-330.0)
    case = generate_chest_ct(BENCH_SEED, config)
    with tempfile.TemporaryDirectory() as folder:
        path = write_image(case.image, Path(folder) / "big.nii.gz")
        child = subprocess.run([sys.executable, "-c", SPEED_CHILD, str(path)], capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(child.stderr[-2000:])
        end_to_end = json.loads(child.stdout.strip().splitlines()[-1])

    # tiled with mask skipping (the lung mask's time included) vs MONAI's plain sliding window
    # over the whole volume: same model, window, overlap, batch and blending.  Runs alternate
    # (plain, tiled, tiled, plain, ...) so load from other processes falls on both alike.
    _, geometry_steps, intensity_steps = _split_pipeline(card)
    gridded = geometry_steps.run(case.image, device="cpu")
    prepared_image = intensity_steps.run(gridded, device="cpu")
    prepared = np.asarray(prepared_image.array, np.float32)
    network = load_network(card)
    settings = TileSettings.from_card(card.inference)

    def tiled_run():
        mask = lung_mask(gridded).array > 0
        return infer_probabilities(network, prepared, settings, mask=mask, device="cpu")

    def plain_run():
        with torch.inference_mode():
            logits = sliding_window_inference(torch.from_numpy(prepared)[None, None], settings.roi_size_zyx,
                                              settings.batch_size, network, overlap=settings.overlap,
                                              mode=settings.blend)
        return torch.sigmoid(logits)[0].numpy()

    times = {"tiled": [], "plain": []}
    outputs = {}
    for index in range(repeats):
        for name in (("plain", "tiled") if index % 2 == 0 else ("tiled", "plain")):
            started = time.perf_counter()
            outputs[name] = tiled_run() if name == "tiled" else plain_run()
            times[name].append(time.perf_counter() - started)
            print(f"  {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    tiled_probabilities, engine_report = outputs["tiled"]
    plain_probabilities = outputs["plain"]

    # are the findings the same?  (tiling differently changes a CNN's output a little anyway)
    mask = lung_mask(gridded).array > 0
    difference = np.abs(tiled_probabilities[0] - plain_probabilities[0])[mask]
    comparison = {"max_abs_diff_in_mask": float(difference.max()), "mean_abs_diff_in_mask": float(difference.mean())}
    for label, threshold in (("card threshold", card.threshold), ("0.5", 0.5)):
        decoding = {**card.decoding, "threshold": threshold}
        found = {}
        for name, probabilities in (("plain", plain_probabilities), ("tiled", tiled_probabilities)):
            grid = prepared_image.with_array(probabilities[0], modality="OT", metadata={})
            found[name], _ = decode_components(grid, gridded, decoding)
        comparison[label] = (f"plain {len(found['plain'])}, tiled {len(found['tiled'])}, "
                             f"{_matched(list(found['plain']), list(found['tiled']), 5.0)} of plain's within 5 mm of a tiled one")
    tiled, plain = min(times["tiled"]), min(times["plain"])
    return {"end_to_end": end_to_end, "tiled_masked_s": tiled, "plain_s": plain, "ratio": tiled / plain,
            "paired_ratios": [round(t / p, 2) for t, p in zip(times["tiled"], times["plain"])],
            "windows": f"{engine_report.windows_run} run, {engine_report.windows_skipped} skipped, in "
                       f"{engine_report.regions} boxes; plain {engine_report.windows_plain}",
            "model_grid": list(prepared.shape), "findings": comparison}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=BENCH_SEED)
    parser.add_argument("--config", choices=("default", "training"), default="default",
                        help="phantom config: the generator's default chest CT, or the training augmentation")
    parser.add_argument("--model", default="lung-nodule-ct")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of tiled and of plain (minimum reported)")
    parser.add_argument("--skip-froc", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from napari_medcad.core.models.registry import find_model

    torch.set_num_threads(2)
    card = find_model(args.model)
    rows = [("model", f"{card.name} {card.version}, threshold {card.threshold:g}", "")]
    if not args.skip_froc:
        scores = froc_on_phantoms(card, args.cases, args.seed, args.config)
        for rate, value in scores["sensitivity"].items():
            rows.append((f"sensitivity @ {rate:g} FP/scan", f"{value:.3f}", ">= 0.90 at 1" if rate == 1.0 else ""))
        rows.append(("CPM (mean of the seven)", f"{scores['cpm']:.3f}", ""))
        rows.append(("max sensitivity (all candidates)", f"{scores['max_sensitivity']:.3f}", ""))
        at = scores["at_card_threshold"]
        rows.append(("at card threshold", f"sens {at['sensitivity']:.3f}, {at['fp_per_scan']:.2f} FP/scan", ""))
        rows.append((f"phantoms ({args.config} config, seed {args.seed})",
                     f"{scores['n_scans']} scans, {scores['n_nodules']} nodules, {scores['seconds_per_case']:.1f} s/scan", ""))
        rows.append(("missed at threshold", "; ".join(scores["missed_at_threshold"]) or "none", ""))
    if REAL.exists() and not args.skip_real:
        real = real_ct(card)
        rows.append(("real CT lung1: nodule found above threshold", f"{real['found']} (p = {real['probability']:.3f}, "
                     f"{real['nodule_diameter_mm']:.1f} mm)", "yes"))
        rows.append(("real CT lung1: false positives above threshold", f"{real['false_positives']} {real['fp_probabilities']}", "<= 4"))
        rows.append(("real CT lung1: run_model time", f"{real['seconds']:.1f} s", ""))
    if not args.skip_speed:
        result = speed(card, args.repeats)
        e2e = result["end_to_end"]
        rows.append(("300x512x512 CT: read + run_model", f"{e2e['end_to_end_s']:.1f} s (run_model {e2e['run_model_s']:.1f} s)", "<= 60 s"))
        rows.append(("300x512x512 CT: stage times", json.dumps(e2e["timings"]), ""))
        rows.append(("300x512x512 CT: peak memory (RSS)", f"{e2e['peak_rss_gb']:.2f} GB", "<= 2.5 GB"))
        rows.append(("tiled+mask / plain sliding window", f"{result['tiled_masked_s']:.1f} s / {result['plain_s']:.1f} s "
                     f"= {result['ratio']:.2f} (best of {args.repeats}; paired {result['paired_ratios']}; "
                     f"{result['windows']} windows, grid {result['model_grid']})", "<= 0.6"))
        compared = result["findings"]
        rows.append(("tiled+mask vs plain: probability in the lungs", f"max |diff| {compared['max_abs_diff_in_mask']:.3f}, "
                     f"mean {compared['mean_abs_diff_in_mask']:.4f}", ""))
        for label in ("card threshold", "0.5"):
            rows.append((f"tiled+mask vs plain: findings at {label}", compared[label], ""))
    print_table(rows, "bench_detection.py", argv)
    print(f"torch threads: {torch.get_num_threads()}")
    return 0


def print_table(rows, script: str, argv=None) -> None:
    """(figure, value, target) rows as an aligned table, then the command that made them."""
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}} | value | target")
    print(f"{'-' * width}-|-------|-------")
    for name, value, target in rows:
        print(f"{name:<{width}} | {value} | {target}")
    print(f"\ncommand: {shlex.join([Path(sys.executable).name, 'benchmarks/' + script, *(argv or sys.argv[1:])])}")


if __name__ == "__main__":
    raise SystemExit(main())
