"""`napari-medcad models`: the registered models and where a user's own models go."""

from __future__ import annotations

import argparse
import json

from ..cli import command

COLUMNS = ("name", "task", "dims", "modality", "family", "version", "from")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def describe_models() -> list[dict]:
    """One row per registered model: what it is and where its card was read from."""
    from ..core.models.registry import BUILTIN_DIR, list_models

    rows = []
    for card in list_models():
        path = card.path
        builtin = path is not None and BUILTIN_DIR in path.parents
        rows.append({
            "name": card.name, "task": card.task, "dims": card.dims, "modality": card.modality,
            "family": card.family, "version": card.version,
            "from": "built-in" if builtin else (str(path.parent) if path is not None else "?"),
        })
    return rows


@command("models", "list the registered models and print where the user model folder is", arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.models.registry import user_model_dir

    rows = describe_models()
    folder = user_model_dir()
    if args.json:
        print(json.dumps({"models": rows, "user_model_dir": str(folder)}, indent=2))
        return 0
    if rows:
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
        print("  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip())
        for row in rows:
            print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS).rstrip())
    else:
        print("no models registered")
    state = "" if folder.is_dir() else " (does not exist yet)"
    print(f"\nuser model folder: {folder}{state}")
    print("add a model by putting a folder with card.yaml and its weights there, or pass its path to --model")
    return 0
