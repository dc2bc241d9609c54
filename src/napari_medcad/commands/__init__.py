"""Subcommands of the `napari-medcad` command, one module each.

A module here defines ``arguments(parser)`` and ``run(args) -> int`` and registers them with
:func:`napari_medcad.cli.command`.  Modules import only argparse-level things at the top; the
heavy imports (torch, napari) happen inside ``run`` so ``napari-medcad --help`` stays fast.
"""
