"""Model cards: everything needed to run a model correctly, and to know where it came from.

A card is a YAML or JSON file beside the weights.  It names the task, the input the network
expects (dimensionality, spacing, channels, the preprocessing pipeline as data), the classes,
how raw outputs become findings, how to tile inference, and the training provenance.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..errors import MedcadError

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
        if self.task not in TASKS:
            raise MedcadError(f"model card '{self.name}': task must be one of {', '.join(TASKS)}, not '{self.task}'")
        if self.dims not in (2, 3):
            raise MedcadError(f"model card '{self.name}': dims must be 2 or 3, not {self.dims}")
        if self.format not in FORMATS:
            raise MedcadError(f"model card '{self.name}': format must be one of {', '.join(FORMATS)}")

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
            else yaml.safe_dump(self.to_dict(), sort_keys=False)
        )
        write_text(path, text)
        self.path = path
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> "ModelCard":
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        unknown = set(data) - known
        if unknown:
            raise MedcadError(f"unknown model card fields: {', '.join(sorted(unknown))}", path)
        missing = {"name", "task", "dims"} - set(data)
        if missing:
            raise MedcadError(f"the model card lacks {', '.join(sorted(missing))}", path)
        try:
            return cls(**data, path=path)
        except TypeError as err:
            raise MedcadError(f"invalid model card ({err})", path) from None


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read a card from YAML (.yaml/.yml) or JSON (.json)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as err:
        raise MedcadError(f"cannot read the model card ({err.strerror or err})", path) from None
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise MedcadError(f"the model card is not valid YAML/JSON ({str(err).splitlines()[0]})", path) from None
    if not isinstance(data, dict):
        raise MedcadError("the model card must be a mapping of fields", path)
    return ModelCard.from_dict(data, path=path.resolve())
