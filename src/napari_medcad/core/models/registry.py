"""Where models are found: built-in cards shipped in the package, and the user's model folder.

A model is a folder holding ``card.yaml`` (or ``card.json``) and what the card points to:
weights for one of our networks, a TorchScript file, or a MONAI bundle.  Users add models
without code by dropping such a folder into their model folder (``napari-medcad models``
prints where) or by passing its path wherever a model name is accepted.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import MedcadError
from .card import ModelCard, read_card

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
CARD_NAMES = ("card.yaml", "card.yml", "card.json")


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


def _cards_below(root: Path, skip_broken: bool = False) -> list[ModelCard]:
    """The cards of the model folders in ``root``; with ``skip_broken`` a card that cannot be
    read is left out with a warning, so one bad user model does not hide all the others."""
    cards = []
    if not root.is_dir():
        return cards
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        card_path = _card_in(folder)
        if card_path is None:
            continue
        try:
            cards.append(read_card(card_path))
        except MedcadError as err:
            if not skip_broken:
                raise
            warnings.warn(f"skipping a user model: {err}", stacklevel=2)
    return cards


def list_models() -> list[ModelCard]:
    """Built-in models first, then the user's; a user model may not shadow a built-in name."""
    builtin = _cards_below(BUILTIN_DIR)
    names = {card.name for card in builtin}
    user = []
    for card in _cards_below(user_model_dir(), skip_broken=True):
        if card.name not in names:
            user.append(card)
            names.add(card.name)
    return builtin + user


def find_model(name_or_path: str | os.PathLike) -> ModelCard:
    """A registered model by name, or a model folder / card file / weights file with a card beside it."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            card_path = _card_in(path)
            if card_path is None:
                raise MedcadError(
                    f"no model card in this folder (expected one of {', '.join(CARD_NAMES)})", path
                )
            return read_card(card_path)
        if path.suffix in (".yaml", ".yml", ".json"):
            return read_card(path)
        for suffix in (".yaml", ".yml", ".json"):
            if path.with_suffix(suffix).is_file():
                return read_card(path.with_suffix(suffix))
        card_path = _card_in(path.parent)
        if card_path is not None:
            return read_card(card_path)
        raise MedcadError("a model file needs a card beside it (card.yaml, or the same name with .yaml)", path)
    for card in list_models():
        if card.name == text:
            return card
    known = ", ".join(card.name for card in list_models()) or "none"
    raise MedcadError(f"unknown model '{text}' (registered: {known})")


def default_model_for(modality: str, dims: int) -> ModelCard:
    """The built-in model a user gets by default for this kind of image."""
    for card in list_models():
        if card.modality == modality and card.dims == dims and card.provenance.get("default_for_modality"):
            return card
    raise MedcadError(f"no default model for {dims}-D {modality} images; choose one with --model")
