"""`napari-medcad models`: the registered models, where a user's own models go, and which
TorchScript files the user trusts to run (``--trust`` / ``--untrust``)."""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import command

COLUMNS = ("name", "task", "dims", "modality", "family", "version", "trust", "from")

TRUST_MEANING = (
    "TorchScript is a program, not just weights: loading and running it can read and write files "
    "with your rights. napari-medcad will now load this exact file; a changed file has another "
    "digest and needs --trust again. Trust only a file whose source you trust."
)


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument("--trust", metavar="NAME_OR_PATH",
                       help="allow this TorchScript model (its exact file, by SHA-256) to be loaded and run")
    trust.add_argument("--untrust", metavar="NAME_OR_PATH", help="take a TorchScript model off the trust list")


def _trust_state(card) -> str:
    """'-' (weights only: nothing to trust), 'trusted', or 'needs --trust' (TorchScript)."""
    from ..core.errors import MedcadError
    from ..core.models.loading import torchscript_file
    from ..core.models.trust import file_digest, is_trusted

    path = torchscript_file(card)
    if path is None:
        return "-"
    try:
        return "trusted" if is_trusted(file_digest(path)) else "needs --trust"
    except MedcadError:  # unreadable file or trust list: it will not load as it is
        return "needs --trust"


def describe_models() -> list[dict]:
    """One row per registered model: what it is, whether it needs the user's trust, and where
    its card was read from."""
    return _catalogue()[0]


def _catalogue() -> tuple[list[dict], list]:
    """The rows of :func:`describe_models`, and the user models left out (MedcadErrors)."""
    from ..core.models.registry import BUILTIN_DIR, scan_models

    cards, problems = scan_models()
    rows = []
    for card in cards:
        path = card.path
        builtin = path is not None and BUILTIN_DIR in path.parents
        rows.append({
            "name": card.name, "task": card.task, "dims": card.dims, "modality": card.modality,
            "family": card.family, "version": card.version, "trust": _trust_state(card),
            "from": "built-in" if builtin else (str(path.parent) if path is not None else "?"),
        })
    return rows, problems


def _torchscript_target(name_or_path: str):
    """(TorchScript file, model name) for --trust/--untrust: a model name, a model folder or card,
    or the TorchScript file itself."""
    from pathlib import Path

    from ..core.errors import MedcadError
    from ..core.models.loading import torchscript_file
    from ..core.models.registry import CARD_SUFFIXES, find_model

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix.lower() not in CARD_SUFFIXES:
        try:
            card = find_model(path)
        except MedcadError:  # a bare TorchScript file without a card: trust the file itself
            return path.resolve(), path.name
        file = torchscript_file(card)
        return path.resolve(), card.name if file is not None and file.resolve() == path.resolve() else path.name
    card = find_model(name_or_path)
    file = torchscript_file(card)
    if file is None:
        raise MedcadError(f"model '{card.name}' is not TorchScript: its weights load as plain tensors "
                          "and need no trust")
    return file.resolve(), card.name


def _trust(name_or_path: str) -> int:
    from ..core.models.trust import trust, trust_list_path

    file, model = _torchscript_target(name_or_path)
    digest = trust(file, model)
    print(f"trusted: {file} (model '{model}')")
    print(f"sha256:  {digest}")
    print(TRUST_MEANING)
    print(f"trust list: {trust_list_path()} (undo: napari-medcad models --untrust {name_or_path})")
    return 0


def _untrust(name_or_path: str) -> int:
    from ..core.models.trust import trust_list_path, untrust

    file, model = _torchscript_target(name_or_path)
    digest, was_trusted = untrust(file)
    state = "no longer trusted" if was_trusted else "was not on the trust list"
    print(f"{state}: {file} (model '{model}', sha256 {digest})")
    print(f"trust list: {trust_list_path()}")
    return 0


@command("models", "list the registered models, print where the user model folder is, "
                   "trust a TorchScript model (--trust)", arguments)
def run(args: argparse.Namespace) -> int:
    from ..core.models.registry import user_model_dir

    if args.trust:
        return _trust(args.trust)
    if args.untrust:
        return _untrust(args.untrust)
    rows, problems = _catalogue()
    folder = user_model_dir()
    if args.json:
        broken = [{"card": problem.path, "reason": problem.reason} for problem in problems]
        print(json.dumps({"models": rows, "skipped": broken, "user_model_dir": str(folder)}, indent=2))
        return 0
    if rows:
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
        print("  ".join(c.ljust(widths[c]) for c in COLUMNS).rstrip())
        for row in rows:
            print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS).rstrip())
    else:
        print("no models registered")
    for problem in problems:
        print(f"skipped a user model: {problem}", file=sys.stderr)
    state = "" if folder.is_dir() else " (does not exist yet)"
    print(f"\nuser model folder: {folder}{state}")
    print("add a model by putting a folder with card.yaml and its weights there, or pass its path to --model")
    if any(row["trust"] == "needs --trust" for row in rows):
        print("TorchScript models run code: load one only after `napari-medcad models --trust NAME` "
              "(check where it came from first)")
    return 0
