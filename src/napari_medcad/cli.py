"""The `napari-medcad` command: a thin shell over the core.

Every subcommand maps user errors (MedcadError) to one line on stderr and exit status 2.
Heavy imports (torch, napari) happen inside the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

EXIT_USER_ERROR = 2

#: subcommand name -> (function running it, one-line help, function adding its options);
#: filled by the modules of :mod:`napari_medcad.commands`
_COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, Callable | None]] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register a subcommand: decorates ``run(args) -> int``; ``arguments(parser)`` adds its options."""

    def register(run):
        _COMMANDS[name] = (run, help, arguments)
        return run

    return register


def _load_commands() -> None:
    """Import every module of :mod:`napari_medcad.commands`; each registers its subcommand."""
    import importlib
    import pkgutil

    from . import commands

    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{module.name}")


# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-medcad",
        description="Computer-aided diagnosis on medical images (napari plugin command line).",
    )
    parser.add_argument("--version", action="version", version=f"napari-medcad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _load_commands()
    for name, (_run, help_text, add_arguments) in _COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if add_arguments is not None:
            add_arguments(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .core.errors import MedcadError

    parser = build_parser()
    args = parser.parse_args(argv)
    run, _help, _arguments = _COMMANDS[args.command]
    try:
        return int(run(args) or 0)
    except MedcadError as err:
        print(f"napari-medcad {args.command}: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt:
        print(f"napari-medcad {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"napari-medcad {args.command}: not enough memory", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    # `python -m napari_medcad.cli`: run the imported module, whose registry the commands fill
    from napari_medcad.cli import main as _main

    sys.exit(_main())
