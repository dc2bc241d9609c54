"""`napari-medcad demo`: napari with a sample image and every dock widget of the plugin."""

from __future__ import annotations

import argparse

from ..cli import command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screenshot", metavar="OUT.png", help="save a screenshot of the window and exit")
    parser.add_argument(
        "--sample",
        default="lung_ct",
        help="sample to open: lung_ct (real CT crop), phantom_ct, radiograph (default: lung_ct)",
    )


@command("demo", "open napari with a sample image and the plugin's widgets", arguments)
def run(args: argparse.Namespace) -> int:
    from ..napari.demo import run_demo

    return run_demo(sample=args.sample, screenshot=args.screenshot)
