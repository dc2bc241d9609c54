"""Reproducible training of the built-in models from the seeded phantom generator (CPU)."""

from .builtin import BUILTIN_RECIPES, train_builtin

__all__ = ["BUILTIN_RECIPES", "train_builtin"]
