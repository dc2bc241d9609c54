"""The Inference widget's model choice: which model runs, which classifier explains, and what they are.

Split from ``inference.py`` so that the widget is only inputs, running and layers.  This lists
the registered models (and model folders the reader browses to), fits the choice to the chosen
image (its dimensionality, then its modality), describes the chosen model with its rescorer
switch, and asks before a TorchScript model (a program) runs for the first time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from qtpy.QtWidgets import QCheckBox, QComboBox, QFileDialog, QLabel, QMessageBox, QWidget

from ...core.errors import MedcadError
from ...core.inference.run import UNKNOWN_MODALITIES
from ..layers import META_KEY
from .text_area import description_area

if TYPE_CHECKING:  # pragma: no cover
    from ...core.models.card import ModelCard

BROWSE = "__browse__"


class ModelChooser:
    """The model and explainer combo boxes, the chosen model's description and its rescorer switch.

    ``image_layer`` gives the image the models should fit (or None), ``fail`` shows an error;
    the Inference widget places the controls and keeps them under its own names."""

    def __init__(self, parent: QWidget, image_layer: Callable[[], object], fail: Callable[[BaseException], None]):
        self.parent = parent
        self.image_layer = image_layer
        self.fail = fail
        self.model_combo = QComboBox()
        self.model_combo.activated.connect(self._on_model_chosen)
        self.model_combo.currentIndexChanged.connect(self.describe_model)
        self.rescore_check = QCheckBox("graph false-positive reduction (GNN)")
        self.rescore_check.setChecked(True)
        self.rescore_check.setToolTip("rescore the detector's candidates with the model's graph neural network")
        self.explain_combo = QComboBox()
        self.about = QLabel("")
        self.about.setWordWrap(True)
        self.about_area = description_area(self.about, lines=4)
        self.cards: dict[str, ModelCard] = {}
        self._last_model_index = 0

    def refresh_models(self) -> None:
        """The registered models (built-in, then the user's folder), plus Browse..."""
        from ...core.models.registry import list_models

        try:
            cards = list_models()
        except MedcadError as err:  # one broken user card must not hide the built-in models
            self.fail(err)
            cards = []
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.cards = {}
        explainers: list = []
        for card in cards:
            if card.task == "classification" and card.inference.get("stage") != "rescore":
                explainers.append(card)
            if card.inference.get("stage") == "rescore" or card.task not in ("detection", "segmentation"):
                continue  # a rescorer runs inside its detector; classifiers make explanations, not findings
            self.cards[card.name] = card
            self.model_combo.addItem(f"{card.name} ({card.task}, {card.dims}-D {card.modality})", card.name)
        self.model_combo.addItem("Browse...", BROWSE)
        self.explain_combo.clear()
        for card in explainers:
            self.cards[card.name] = card
            self.explain_combo.addItem(f"{card.name} ({card.family}, {card.dims}-D)", card.name)
        self.model_combo.setCurrentIndex(0)
        self.model_combo.blockSignals(False)
        self.fit_models()
        self.describe_model()

    def add_model_path(self, path) -> ModelCard | None:
        """Use the model in folder (or card file) ``path`` and select it."""
        from ...core.models.registry import find_model

        try:
            card = find_model(path)
        except MedcadError as err:
            return self.fail(err)
        key = str(Path(path).expanduser().resolve())
        self.cards[key] = card
        index = self.model_combo.findData(key)
        if index < 0:
            index = self.model_combo.count() - 1  # before Browse...
            self.model_combo.insertItem(index, f"{card.name} ({Path(key).name})", key)
        self.model_combo.setCurrentIndex(index)
        self._last_model_index = index
        return card

    def _on_model_chosen(self, index: int) -> None:
        if self.model_combo.itemData(index) != BROWSE:
            self._last_model_index = index
            return
        self.model_combo.setCurrentIndex(self._last_model_index)  # unless a folder is chosen
        folder = QFileDialog.getExistingDirectory(self.parent, "Model folder (card.yaml and weights)")
        if folder:
            self.add_model_path(folder)

    def select_model(self, name: str) -> bool:
        index = self.model_combo.findData(name)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
            self._last_model_index = index
        return index >= 0

    def model_card(self) -> ModelCard:
        key = self.model_combo.currentData()
        if key in (None, BROWSE) or key not in self.cards:
            raise MedcadError("choose a model (or Browse... for a model folder)")
        return self.cards[key]

    def explainer_card(self) -> ModelCard:
        card = self.cards.get(self.explain_combo.currentData())
        if card is None:
            raise MedcadError("no classifier to explain with")
        return card

    def fit_models(self, _name=None) -> None:
        """Choose models that run on the chosen image when the chosen ones do not: a detector of
        its dimensionality (of its modality first), a classifier of at most its dimensionality
        to explain with (a 2-D one explains a volume's slices)."""
        layer = self.image_layer()
        if layer is None:
            return
        modality = _layer_modality(layer)
        card = self.cards.get(self.model_combo.currentData())
        if card is not None and card.dims != layer.ndim:
            fitting = [i for i in range(self.model_combo.count())
                       if getattr(self.cards.get(self.model_combo.itemData(i)), "dims", None) == layer.ndim]
            fitting.sort(key=lambda i: (self.cards[self.model_combo.itemData(i)].modality or "").upper() != modality)
            if fitting:
                self.select_model(self.model_combo.itemData(fitting[0]))
        explainer = self.cards.get(self.explain_combo.currentData())
        if explainer is not None and explainer.dims > layer.ndim:
            for i in range(self.explain_combo.count()):
                if getattr(self.cards.get(self.explain_combo.itemData(i)), "dims", 99) <= layer.ndim:
                    self.explain_combo.setCurrentIndex(i)
                    break
        self.describe_model()

    def describe_model(self, index=None) -> None:
        key = self.model_combo.currentData()
        card = self.cards.get(key)
        text = card.description if card is not None and card.description else ""
        layer = self.image_layer()
        if card is not None and layer is not None and card.dims != layer.ndim:
            runners = [c for c in self.cards.values() if c.task != "classification" and c.dims == layer.ndim]
            text = (f"{card.name} runs on {card.dims}-D images; '{layer.name}' is {layer.ndim}-D"
                    + ("" if runners else f", and no detection or segmentation model here runs on {layer.ndim}-D "
                       "images: Explain shows where a classifier looks") + f". {text}")
        self.about.setText(text)
        has_rescorer = card is not None and bool(card.inference.get("rescorer"))
        self.rescore_check.setEnabled(has_rescorer)  # only a model with a rescorer can switch it
        if has_rescorer:  # on or off as the card advises; the reader can switch it
            self.rescore_check.setChecked(card.rescores_by_default)

    def trusted_or_asked(self, card) -> bool:
        """A TorchScript model is a program: it runs only once the user trusts its exact file
        (core/models/trust.py).  The CLI says to run `models --trust`; here the reader is asked."""
        from ...core.models.loading import torchscript_file
        from ...core.models.trust import file_digest, is_trusted, trust

        path = torchscript_file(card)
        if path is None:
            return True
        file_sha256 = file_digest(path)
        if is_trusted(file_sha256):
            return True
        answer = QMessageBox.question(
            self.parent, "Trust this model?",
            f"'{card.name}' is TorchScript: a program that runs with your permissions and can read and "
            f"write your files (PyTorch has no safe way to load it).\n\n{path}\nSHA-256 {file_sha256}\n\n"
            "Trust it only if you know where it comes from. Trust this file and run it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
        trust(path, card.name, shown_sha256=file_sha256)
        return True


def _layer_modality(layer) -> str:
    """The modality our reader recorded on the layer, upper case ("" when it did not open it)."""
    info = layer.metadata.get(META_KEY, {}) if isinstance(layer.metadata, dict) else {}
    return str(info.get("modality", "") or "").upper()


def default_model_name(layer) -> str:
    """The built-in model for the layer's modality (CT when the file did not say)."""
    from ...core.models.registry import default_model_for

    modality = _layer_modality(layer)
    candidates = [modality] if modality not in UNKNOWN_MODALITIES else []
    candidates += [m for m in ("CT",) if m not in candidates]
    error = None
    for candidate in candidates:
        try:
            return default_model_for(candidate, layer.ndim).name
        except MedcadError as err:
            error = error or err
    raise error
