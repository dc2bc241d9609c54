"""The `napari-medcad` command: a thin shell over the core.

Every subcommand maps user errors (MedcadError) to one line on stderr and exit status 2.
Heavy imports (torch, napari) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2

#: subcommand name -> (function running it, one-line help)
_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {}


def command(name: str, help: str):
    """Register a subcommand: decorates ``run(args) -> int``; ``run.arguments(parser)`` adds options."""

    def register(run):
        _COMMANDS[name] = (run, help)
        return run

    return register


# ------------------------------------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="image file or DICOM folder")


@command("info", "print an image's geometry as JSON (as SimpleITK reports it)")
def run_info(args: argparse.Namespace) -> int:
    from .core.io import image_info

    print(json.dumps(image_info(args.path), indent=2))
    return 0


run_info.arguments = _info_arguments


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--screenshot", metavar="OUT.png", help="save a screenshot of the window and exit")
    parser.add_argument(
        "--sample",
        default="lung_ct",
        help="sample to open: lung_ct (real CT crop), phantom_ct, radiograph (default: lung_ct)",
    )


@command("demo", "open napari with a sample image and the plugin's widgets")
def run_demo(args: argparse.Namespace) -> int:
    from .napari.demo import run_demo as _run

    return _run(sample=args.sample, screenshot=args.screenshot)


run_demo.arguments = _demo_arguments


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-medcad",
        description="Computer-aided diagnosis on medical images (napari plugin command line).",
    )
    parser.add_argument("--version", action="version", version=f"napari-medcad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (run, help_text) in _COMMANDS.items():
        add_arguments = getattr(run, "arguments", None)
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if add_arguments is not None:
            add_arguments(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .core.errors import MedcadError

    parser = build_parser()
    args = parser.parse_args(argv)
    run, _help = _COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except MedcadError as err:
        print(f"napari-medcad {args.command}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"napari-medcad {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"napari-medcad {args.command}: not enough memory", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
