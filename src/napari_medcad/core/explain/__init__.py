"""Explanations of classifier outputs as heatmaps on the source image's geometry (no Qt, torch lazily)."""

from .maps import explain, explanation_method, heatmap_peak_mm

__all__ = ["explain", "explanation_method", "heatmap_peak_mm"]
