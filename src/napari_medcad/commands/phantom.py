"""`napari-medcad phantom --out DIR --cases N --seed S`: seeded synthetic chest CTs with ground truth.

The cases (NIfTI image, label map, ``annotations.csv`` in LUNA16 columns) are what the built-in
detector is trained and benchmarked on; ``--shape``/``--spacing`` make small ones for tests.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the cases into")
    parser.add_argument("--cases", type=int, default=1, metavar="N", help="number of cases (default: 1)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the set (default: 0)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="grid size in voxels (default: 96 256 256)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel spacing in mm (default: 1.4 1.4 3.0)")
    parser.add_argument("--nodules", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="number of nodules per case, inclusive range (default: 1 4)")


@command("phantom", "write seeded synthetic chest CTs (NIfTI) with nodule labels and LUNA16 annotations", arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.phantom import PhantomConfig, write_phantom_cases

    changes = {}
    if args.shape:
        changes["shape_zyx"] = tuple(args.shape)
    if args.spacing:
        changes["spacing_xyz"] = tuple(args.spacing)
    if args.nodules:
        changes["n_nodules"] = tuple(args.nodules)
    config = PhantomConfig(**changes)

    def progress(done: int, total: int, message: str) -> None:
        print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)

    for path in write_phantom_cases(args.out, args.cases, args.seed, config, progress=progress):
        print(path)
    return 0
