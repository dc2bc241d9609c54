"""Where models are found: built-in cards shipped in the package, and the user's model folder.

A model is a folder holding ``card.yaml`` (or ``card.json``) and what the card points to:
weights for one of our networks, a TorchScript file, or a MONAI bundle.  Users add models
without code by dropping such a folder into their model folder (``napari-medcad models``
prints where) or by passing its path wherever a model name is accepted.  A user model whose
card cannot be read, or whose name is already taken, is left out with one warning line naming
its card, and never hides the others.  (TorchScript models also need the user's trust before
they load: see :mod:`.trust`.)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import MedcadError
from .card import ModelCard, read_card

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
CARD_NAMES = ("card.yaml", "card.yml", "card.json")
CARD_SUFFIXES = (".yaml", ".yml", ".json")
#: files a user may pass as --model (a card or weights with a card beside them)
MODEL_FILE_SUFFIXES = CARD_SUFFIXES + (".pt", ".pth", ".ts", ".ckpt", ".bin", ".zip")

log = logging.getLogger(__name__)
#: problems already reported in this process (the registry is scanned many times in one run)
_reported: set[str] = set()


def user_model_dir() -> Path:
    """``$NAPARI_MEDCAD_MODELS`` or the platform's per-user data folder."""
    configured = os.environ.get("NAPARI_MEDCAD_MODELS")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-medcad")) / "models"


def _card_in(folder: Path) -> Path | None:
    for name in CARD_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _cards_below(root: Path, problems: list[MedcadError] | None = None) -> list[ModelCard]:
    """The cards of the model folders in ``root``.  With a ``problems`` list, a card that cannot
    be read is recorded there instead of raised, so one bad user model does not hide the others."""
    cards: list[ModelCard] = []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    except OSError as err:
        failure = MedcadError(f"cannot list the model folder ({err.strerror or err})", root)
        if problems is None:
            raise failure from None
        problems.append(failure)
        return cards
    for folder in folders:
        card_path = _card_in(folder)
        if card_path is None:
            continue
        try:
            cards.append(read_card(card_path))
        except MedcadError as err:
            if problems is None:
                raise
            problems.append(err)
    return cards


def scan_models() -> tuple[list[ModelCard], list[MedcadError]]:
    """Built-in models first, then the user's; and why any user model was left out (its card
    cannot be read, or its name is already taken: by a built-in, or by a user model whose
    folder sorts first)."""
    builtin = _cards_below(BUILTIN_DIR)
    owners: dict[str, str] = {card.name: "a built-in model" for card in builtin}
    problems: list[MedcadError] = []
    user = []
    for card in _cards_below(user_model_dir(), problems):
        if card.name in owners:
            problems.append(MedcadError(
                f"its name '{card.name}' is already taken by {owners[card.name]}; rename it in its card", card.path))
            continue
        owners[card.name] = f"the user model in {card.folder}"
        user.append(card)
    return builtin + user, problems


def report_problems(problems: list[MedcadError]) -> None:
    """Each problem as one warning line (stderr on the command line), once per process."""
    for problem in problems:
        line = f"skipped a user model: {problem}"
        if line not in _reported:
            _reported.add(line)
            log.warning(line)


def list_models() -> list[ModelCard]:
    """Built-in models first, then the user's; user models left out are reported, one line each."""
    cards, problems = scan_models()
    report_problems(problems)
    return cards


def _looks_like_path(name_or_path: str | os.PathLike) -> bool:
    """Whether the user meant a file or folder rather than a registered name: a path object, a
    separator, ``~``, ``.``/``..``, or a card/weights file name."""
    if isinstance(name_or_path, os.PathLike):
        return True
    text = str(name_or_path)
    return (os.sep in text or bool(os.altsep and os.altsep in text) or text.startswith("~")
            or text in (".", "..") or Path(text).suffix.lower() in MODEL_FILE_SUFFIXES)


def _card_at(path: Path) -> ModelCard:
    """The card of a model folder, a card file, or a weights file with a card beside it."""
    if path.is_dir():
        card_path = _card_in(path)
        if card_path is None:
            raise MedcadError(f"no model card in this folder (expected one of {', '.join(CARD_NAMES)})", path)
        return read_card(card_path)
    if path.suffix.lower() in CARD_SUFFIXES:
        return read_card(path)
    for suffix in CARD_SUFFIXES:
        if path.with_suffix(suffix).is_file():
            return read_card(path.with_suffix(suffix))
    card_path = _card_in(path.parent)
    if card_path is not None:
        return read_card(card_path)
    raise MedcadError("a model file needs a card beside it (card.yaml, or the same name with .yaml)", path)


def find_model(name_or_path: str | os.PathLike) -> ModelCard:
    """A registered model by name, or a model folder / card file / weights file with a card beside it.

    A plain name (no separator, not a card or weights file name) is looked up among the
    registered models first, so a folder of the same name in the current directory (say, the
    output of ``predict --out lung-nodule-ct``) does not shadow the model.
    """
    text = os.fspath(name_or_path)
    registered: list[ModelCard] | None = None
    if not _looks_like_path(name_or_path):
        registered = list_models()
        for card in registered:
            if card.name == text:
                return card
    path = Path(text).expanduser()
    if path.exists():
        return _card_at(path)
    registered = list_models() if registered is None else registered
    for card in registered:
        if card.name == text:
            return card
    known = ", ".join(card.name for card in registered) or "none"
    if _looks_like_path(name_or_path):
        raise MedcadError(f"no such model folder or file, and no registered model has this name (registered: {known})",
                          path)
    raise MedcadError(f"unknown model '{text}' (registered: {known})")


def default_model_for(modality: str, dims: int) -> ModelCard:
    """The built-in model a user gets by default for this kind of image."""
    for card in list_models():
        if card.modality == modality and card.dims == dims and card.provenance.get("default_for_modality"):
            return card
    raise MedcadError(f"no default model for {dims}-D {modality} images; choose one with --model")
