"""`napari-medcad train-builtin NAME`: retrain a built-in model from its seeded recipe on the CPU."""

from __future__ import annotations

import argparse
import sys

from ..cli import command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="built-in model to retrain (e.g. lung-nodule-ct)")
    parser.add_argument("--out", default=None,
                        help="folder for card.yaml and weights (default: replace the built-in model in the package)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="seed of training data and initialisation")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-cases", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--val-cases", type=int, default=None, help=argparse.SUPPRESS)


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

    path = train_builtin(
        args.name, out_dir=args.out, progress=progress, epochs=args.epochs, seed=args.seed,
        steps_per_epoch=args.steps_per_epoch, train_cases=args.train_cases, val_cases=args.val_cases,
    )
    print(file=sys.stderr)
    print(path)
    return 0
