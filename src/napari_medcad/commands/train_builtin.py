"""`napari-medcad train-builtin NAME`: retrain a built-in model from its seeded recipe on the CPU."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import command
from ..core.errors import MedcadError


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="built-in model to retrain (e.g. lung-nodule-ct)")
    parser.add_argument("--out", default=None,
                        help="folder for card.yaml and weights (default: replace the built-in model in the package)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of training data and initialisation")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-cases", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--val-cases", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                        help="change one recipe setting, the value as JSON (e.g. --set positive_jitter=0.5 "
                             "--set n_nodules=[4,12]); repeatable; the card records the recipe it ran")


def recipe_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` items as recipe overrides: the value read as JSON, else kept as text."""
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise MedcadError(f"--set needs KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[key.strip()] = text
    return settings


@command("train-builtin", "retrain a built-in model from the seeded phantom generator (CPU)", arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.progress import Progress
    from ..core.training import train_builtin

    last = [-1]

    def progress(item: Progress) -> None:
        percent = int(item.fraction * 100)
        if percent != last[0]:
            last[0] = percent
            print(f"\r{percent:3d}% {item.message[:70]:<70}", end="", file=sys.stderr, flush=True)

    overrides = recipe_settings(args.settings)
    for key in ("epochs", "seed", "steps_per_epoch", "train_cases", "val_cases"):  # flags win over --set
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    path = train_builtin(args.name, out_dir=args.out, progress=progress, **overrides)
    print(file=sys.stderr)
    print(path)
    return 0
