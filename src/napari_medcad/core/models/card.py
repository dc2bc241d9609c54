"""Model cards: everything needed to run a model correctly, and to know where it came from.

A card is a YAML or JSON file beside the weights.  It names the task, the input the network
expects (dimensionality, spacing, channels, the preprocessing pipeline as data), the classes,
how raw outputs become findings, how to tile inference, and the training provenance.

Cards come from model authors, so reading one is defensive (:mod:`.configfile`: size cap,
UTF-8, YAML without aliases, plain data only) and every field is checked when the card is
made, so a wrong value is one MedcadError naming the card file and the field, never a
traceback in the middle of a run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..errors import MedcadError
from .configfile import check_plain, cut, read_config, show

TASKS = ("detection", "segmentation", "classification")
FORMATS = ("state_dict", "torchscript", "monai_bundle")


@dataclass
class ModelCard:
    name: str
    task: str
    dims: int
    version: str = "0.0.0"
    description: str = ""
    modality: str = "CT"
    family: str = "cnn"  # cnn | attention | gnn | rnn (what the model is, for comparison tables)
    format: str = "state_dict"
    #: for state_dict: which of our network builders and its keyword arguments
    architecture: dict[str, Any] = field(default_factory=dict)
    weights: str = ""  # file name relative to the card
    spacing_xyz: list[float] | None = None  # the grid the network was trained on
    preprocessing: list[dict[str, Any]] = field(default_factory=list)  # a Pipeline as data
    classes: list[str] = field(default_factory=lambda: ["background", "lesion"])
    output: dict[str, Any] = field(default_factory=lambda: {"activation": "sigmoid"})
    decoding: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)  # roi_size_zyx, overlap, batch, mask
    provenance: dict[str, Any] = field(default_factory=dict)
    license: str = "unspecified"
    #: where the card was read from (not stored)
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        """Refuse a card whose fields have the wrong kind of value, naming the file and field:
        the code that runs the model converts them with int()/float()/.get() and would otherwise
        fail with a traceback in the middle of a run."""
        _check_fields(self)

    @property
    def folder(self) -> Path:
        if self.path is None:
            raise MedcadError(f"model card '{self.name}' was not read from a file")
        return self.path.parent

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    @property
    def threshold(self) -> float:
        return float(self.decoding.get("threshold", 0.5))

    @property
    def rescores_by_default(self) -> bool:
        """Whether its graph rescorer (``inference.rescorer``) runs unless asked otherwise:
        yes, unless the card's ``inference.rescore_by_default`` says false."""
        return bool(self.inference.get("rescorer")) and bool(self.inference.get("rescore_by_default", True))

    def rescores(self, asked: bool | None = None) -> bool:
        """Whether its graph rescorer runs when ``asked`` (None: the card's default)."""
        return bool(self.inference.get("rescorer")) and (self.rescores_by_default if asked is None else bool(asked))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("path")
        return data

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card (YAML or JSON by extension) atomically."""
        import yaml

        path = Path(path)
        text = (
            json.dumps(self.to_dict(), indent=2)
            if path.suffix == ".json"
            else yaml.dump(self.to_dict(), Dumper=_no_alias_dumper(), sort_keys=False)
        )
        write_text(path, text)
        self.path = path
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelCard":
        """A card from plain data (as read from a file); also checks the values' ranges."""
        if not isinstance(data, dict):
            raise MedcadError("the model card must be a mapping of fields", path)
        check_plain(data, path, "the model card")
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        unknown = set(data) - known
        if unknown:
            raise MedcadError(f"unknown model card fields: {cut(', '.join(sorted(unknown)), 80)}", path)
        missing = {"name", "task", "dims"} - set(data)
        if missing:
            raise MedcadError(f"the model card lacks {', '.join(sorted(missing))}", path)
        try:
            card = cls(**data, path=path)
        except TypeError as err:
            raise MedcadError(f"invalid model card ({err})", path) from None
        _check_values(card)
        return card


def _no_alias_dumper():
    """yaml.SafeDumper that writes a repeated value out again: cards may not hold aliases."""
    import yaml

    class NoAliasSafeDumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return NoAliasSafeDumper


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read a card from YAML (.yaml/.yml) or JSON (.json); any problem is one MedcadError."""
    path = Path(path)
    data = read_config(path, "the model card")
    return ModelCard.from_dict(data, path=path.resolve())


# -- checks ----------------------------------------------------------------------------------

ACTIVATIONS = ("sigmoid", "softmax")
BLENDS = ("gaussian", "constant")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """Raises a one-line MedcadError naming the card's file, its name and the field."""

    def __init__(self, card: ModelCard):
        self.card = card

    def fail(self, field: str, expected: str, value: Any) -> None:
        raise MedcadError(f"model card '{self.card.name}': {field} must be {expected}, not {show(value)}",
                          self.card.path)

    def mapping(self, field: str, value: Any) -> None:
        if not isinstance(value, dict):
            self.fail(field, "a mapping of settings", value)

    def text(self, field: str, value: Any, optional: bool = False) -> None:
        if not (isinstance(value, str) or (optional and value is None)):
            self.fail(field, "text", value)

    def texts(self, field: str, value: Any) -> None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(field, "a list of text", value)

    def integer(self, field: str, value: Any, low: int) -> None:
        if not _is_int(value) or value < low:
            self.fail(field, f"a whole number of at least {low}", value)

    def number(self, field: str, value: Any, low: float | None = None, high: float | None = None,
               below_high: bool = False) -> None:
        ok = _is_number(value) and value == value  # not NaN
        if ok and low is not None:
            ok = value >= low
        if ok and high is not None:
            ok = value < high if below_high else value <= high
        if not ok:
            if low is not None and high is not None:
                expected = f"a number from {low:g} to {'below ' if below_high else ''}{high:g}"
            elif low is not None:
                expected = f"a number of at least {low:g}"
            else:
                expected = "a number"
            self.fail(field, expected, value)

    def sizes(self, field: str, value: Any, length: int, low: int) -> None:
        if (not isinstance(value, (list, tuple)) or len(value) != length
                or not all(_is_int(v) and v >= low for v in value)):
            self.fail(field, f"{length} whole numbers of at least {low}", value)


def _check_fields(card: ModelCard) -> None:
    """The kinds of values (run on every card, also one made in code)."""
    if not isinstance(card.name, str) or not card.name.strip():
        raise MedcadError(f"the model card's name must be non-empty text, not {show(card.name)}", card.path)
    check = _Checker(card)
    if card.task not in TASKS:
        check.fail("task", f"one of {', '.join(TASKS)}", card.task)
    if not _is_int(card.dims) or card.dims not in (2, 3):
        check.fail("dims", "2 or 3", card.dims)
    if card.format not in FORMATS:
        check.fail("format", f"one of {', '.join(FORMATS)}", card.format)
    if _is_number(card.version):  # `version: 1.0` in YAML is a number; it is meant as text
        card.version = str(card.version)
    for name in ("version", "description", "modality", "family", "weights", "license"):
        check.text(name, getattr(card, name))
    check.mapping("architecture", card.architecture)
    check.text("architecture.name", card.architecture.get("name", ""))
    check.mapping("architecture.params", card.architecture.get("params") or {})
    if card.spacing_xyz is not None and (
            not isinstance(card.spacing_xyz, (list, tuple)) or not all(_is_number(v) for v in card.spacing_xyz)):
        check.fail("spacing_xyz", f"{card.dims} numbers", card.spacing_xyz)
    if not isinstance(card.preprocessing, list):
        check.fail("preprocessing", "a list of steps", card.preprocessing)
    for index, step in enumerate(card.preprocessing):
        if not isinstance(step, dict) or not isinstance(step.get("op"), str):
            check.fail(f"preprocessing[{index}]", '{"op": name, "params": {...}}', step)
        check.mapping(f"preprocessing[{index}].params", step.get("params") or {})
    check.texts("classes", card.classes)
    for name in ("output", "decoding", "inference", "provenance"):
        check.mapping(name, getattr(card, name))
    _check_output(card, check)
    _check_decoding(card, check)
    _check_inference(card, check)


def _check_output(card: ModelCard, check: _Checker) -> None:
    output = card.output
    if output.get("activation", "sigmoid") not in ACTIVATIONS:
        check.fail("output.activation", " or ".join(ACTIVATIONS), output.get("activation"))
    check.integer("output.channels", output.get("channels", 1), 1)
    if "finding_channel" in output:
        channels = output.get("channels", 1)
        if not _is_int(output["finding_channel"]) or not 0 <= output["finding_channel"] < channels:
            check.fail("output.finding_channel", f"a channel from 0 to {channels - 1}", output["finding_channel"])


def _check_decoding(card: ModelCard, check: _Checker) -> None:
    decoding = card.decoding
    for name in ("threshold", "mask_threshold", "min_diameter_mm", "within_closing_mm"):
        if name in decoding:
            check.number(f"decoding.{name}", decoding[name])
    if "max_findings" in decoding:
        check.integer("decoding.max_findings", decoding["max_findings"], 0)


def _check_inference(card: ModelCard, check: _Checker) -> None:
    """Tiling and the rescorer's settings: what the engine and the graph stage convert."""
    inference = card.inference
    if "roi_size_zyx" in inference:
        check.sizes("inference.roi_size_zyx", inference["roi_size_zyx"], card.dims, 1)
    if "roi_size_yx" in inference:
        check.sizes("inference.roi_size_yx", inference["roi_size_yx"], 2, 1)
    if "mask_margin_zyx" in inference:
        check.sizes("inference.mask_margin_zyx", inference["mask_margin_zyx"], card.dims, 0)
    if "overlap" in inference:
        check.number("inference.overlap", inference["overlap"], 0.0, 1.0, below_high=True)
    for name in ("batch_size", "max_candidates", "k_neighbours"):
        if name in inference:
            check.integer(f"inference.{name}", inference[name], 1)
    if "candidate_threshold" in inference:
        check.number("inference.candidate_threshold", inference["candidate_threshold"])
    if inference.get("blend", "gaussian") not in BLENDS:
        check.fail("inference.blend", " or ".join(BLENDS), inference.get("blend"))
    for name in ("mask", "rescorer", "detector", "stage"):
        check.text(f"inference.{name}", inference.get(name), optional=True)
    if not isinstance(inference.get("rescore_by_default", True), bool):
        check.fail("inference.rescore_by_default", "true or false", inference.get("rescore_by_default"))
    for name in ("features", "edge_features"):
        if name in inference:
            check.texts(f"inference.{name}", inference[name])
    check.mapping("inference.explain", inference.get("explain") or {})


def _check_values(card: ModelCard) -> None:
    """What a card read from a file must also have: its weights, and values in range (a card
    made in code may leave the weights out, or set a threshold just above 1 to mean 'no
    findings')."""
    check = _Checker(card)
    if card.format in ("state_dict", "torchscript") and not card.weights.strip():
        check.fail("weights", "the name of the weights file beside the card", card.weights)
    if card.format == "state_dict" and not card.architecture.get("name"):
        check.fail("architecture.name", "the name of a network", card.architecture.get("name"))
    if card.spacing_xyz is not None:
        if len(card.spacing_xyz) != card.dims or not all(0 < v < float("inf") for v in card.spacing_xyz):
            check.fail("spacing_xyz", f"{card.dims} positive numbers (mm)", card.spacing_xyz)
    for name in ("threshold", "mask_threshold"):
        if name in card.decoding:
            check.number(f"decoding.{name}", card.decoding[name], 0.0, 1.0)
    for name in ("min_diameter_mm", "within_closing_mm"):
        if name in card.decoding:
            check.number(f"decoding.{name}", card.decoding[name], 0.0)
    if "candidate_threshold" in card.inference:
        check.number("inference.candidate_threshold", card.inference["candidate_threshold"], 0.0, 1.0)
