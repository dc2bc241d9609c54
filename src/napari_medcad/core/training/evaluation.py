"""Matching findings to true nodules and LUNA16-style FROC: shared by training (threshold choice)
and the benchmark, so both count hits the same way.

A hit is a finding whose centre lies within the true nodule's radius (world mm).  Each nodule
counts once (its most probable hit); further hits on a found nodule are neither true nor false
positives (LUNA16's rule); every other finding is a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import MedcadError

#: LUNA16's operating points (false positives per scan)
FROC_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class CaseMatch:
    """One scan: the score of every true positive and false positive, and nodule count."""

    tp_probs: list[float] = field(default_factory=list)
    fp_probs: list[float] = field(default_factory=list)
    n_nodules: int = 0
    missed: list[int] = field(default_factory=list)  # indices of nodules with no hit


def match_case(
    finding_centres_mm: np.ndarray,
    finding_probs: Sequence[float],
    nodule_centres_mm: np.ndarray,
    nodule_diameters_mm: Sequence[float],
) -> CaseMatch:
    centres = np.asarray(finding_centres_mm, float).reshape(-1, 3)
    probs = np.asarray(finding_probs, float)
    truth = np.asarray(nodule_centres_mm, float).reshape(-1, 3)
    radii = 0.5 * np.asarray(nodule_diameters_mm, float)
    best = np.full(len(truth), -1.0)
    result = CaseMatch(n_nodules=len(truth))
    for centre, prob in zip(centres, probs):
        inside = np.linalg.norm(truth - centre, axis=1) <= radii if len(truth) else np.zeros(0, bool)
        if inside.any():
            for index in np.flatnonzero(inside):
                best[index] = max(best[index], prob)
        else:
            result.fp_probs.append(float(prob))
    result.tp_probs = [float(p) for p in best if p >= 0]
    result.missed = [int(i) for i in np.flatnonzero(best < 0)]
    return result


def froc(cases: Iterable[CaseMatch], fp_rates: Sequence[float] = FROC_FP_RATES) -> dict:
    """Sensitivity at each FP rate and their mean (CPM), with MONAI's FROC helpers."""
    from monai.metrics import compute_froc_curve_data

    cases = list(cases)
    tp = np.array([p for c in cases for p in c.tp_probs], float)
    fp = np.array([p for c in cases for p in c.fp_probs], float)
    n_targets = sum(c.n_nodules for c in cases)
    n_images = len(cases)
    max_sensitivity = len(tp) / max(n_targets, 1)
    if n_targets == 0:
        return {"sensitivity": {r: float("nan") for r in fp_rates}, "cpm": float("nan"),
                "max_sensitivity": float("nan"), "n_nodules": 0, "n_scans": n_images}
    if len(fp) == 0:  # MONAI needs at least one FP: every rate reaches the maximum
        sensitivities = [max_sensitivity] * len(fp_rates)
    else:
        fps_per_image, total_sensitivity = compute_froc_curve_data(fp, tp, n_targets, n_images)
        sensitivities = list(_sensitivity_at(fps_per_image, total_sensitivity, fp_rates))
    return {
        "sensitivity": {float(r): float(s) for r, s in zip(fp_rates, sensitivities)},
        "cpm": float(np.mean(sensitivities)),
        "max_sensitivity": float(max_sensitivity),
        "n_nodules": int(n_targets),
        "n_scans": int(n_images),
    }


def _sensitivity_at(fps_per_image, total_sensitivity, fp_rates):
    """Sensitivity at the highest threshold whose FP rate does not exceed each target rate.

    (MONAI's compute_froc_score interpolates; this is the step-wise reading LUNA16's script
    uses, which never credits sensitivity a threshold cannot deliver.)"""
    fps = np.asarray(fps_per_image, float)
    sens = np.asarray(total_sensitivity, float)
    for rate in fp_rates:
        allowed = fps <= rate + 1e-12
        yield float(sens[allowed].max()) if allowed.any() else 0.0


def threshold_for_fp_rate(cases: Iterable[CaseMatch], fp_per_scan: float) -> float:
    """The lowest probability threshold that keeps false positives at most ``fp_per_scan`` per scan."""
    cases = list(cases)
    fp = np.sort(np.array([p for c in cases for p in c.fp_probs], float))[::-1]
    allowed = int(np.floor(fp_per_scan * len(cases)))
    if len(fp) <= allowed:
        return 0.0
    # the (allowed+1)-th highest FP must fall below the threshold
    return float(np.nextafter(fp[allowed], 1.0))


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (scikit-learn's when installed; else the Mann-Whitney rank statistic)."""
    labels = np.asarray(labels, int)
    scores = np.asarray(scores, float)
    if labels.min(initial=1) == labels.max(initial=0):
        raise MedcadError("ROC AUC needs both positive and negative samples")
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        from scipy.stats import rankdata

        ranks = rankdata(scores)
        positives = labels == 1
        n_pos, n_neg = positives.sum(), (~positives).sum()
        return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(roc_auc_score(labels, scores))
