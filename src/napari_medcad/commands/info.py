"""`napari-medcad info PATH`: an image's geometry as JSON, as SimpleITK reports it."""

from __future__ import annotations

import argparse
import json

from ..cli import command


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image file or DICOM folder")


@command("info", "print an image's geometry as JSON (as SimpleITK reports it)", arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.io import image_info

    print(json.dumps(image_info(args.path), indent=2))
    return 0
