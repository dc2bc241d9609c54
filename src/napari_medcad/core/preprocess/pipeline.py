"""A preprocessing pipeline as data: an ordered list of ``{"op": name, "params": {...}}``.

Steps are validated and completed with defaults when they are made, so two pipelines that do
the same thing compare equal and serialise to the same JSON.  A model card names its pipeline
in this JSON and inference calls exactly :meth:`Pipeline.run`, so the widget and the model
cannot drift apart.  The output records the pipeline and the source image's name in its
metadata (``"pipeline"``: JSON text, ``"source"``: name).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from ..atomic import write_text
from ..errors import MedcadError
from ..image import MedicalImage
from ..progress import ProgressFn, report, scaled
from .common import derive
from .registry import Operation, get_operation

FORMAT = "napari-medcad pipeline"
VERSION = 1


@dataclass(frozen=True)
class Step:
    """One operation with its complete, validated parameters."""

    op: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        params = self.operation.normalise(self.params)
        object.__setattr__(self, "params", MappingProxyType(params))

    def __hash__(self) -> int:  # params is a read-only mapping: hash its JSON form
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def operation(self) -> Operation:
        return get_operation(self.op)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Step":
        if not isinstance(data, Mapping) or "op" not in data:
            raise MedcadError(f'a pipeline step must be {{"op": name, "params": {{...}}}}, got {data!r}')
        extra = sorted(set(data) - {"op", "params"})
        if extra:
            raise MedcadError(f"pipeline step '{data['op']}' has unknown key '{extra[0]}'")
        params = data.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise MedcadError(f"the params of pipeline step '{data['op']}' must be a mapping, got {params!r:.40}")
        return cls(data["op"], params)

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "params": json.loads(json.dumps(dict(self.params)))}

    def describe(self) -> str:
        """One stable line, parameters in their declared order: ``gaussian(sigma_mm=1.0)``."""
        args = ", ".join(f"{name}={json.dumps(value)}" for name, value in self.params.items())
        return f"{self.op}({args})"

    def run(self, image: MedicalImage, progress: Optional[ProgressFn] = None, device: str = "auto") -> MedicalImage:
        return self.operation.run(image, self.params, progress=progress, device=device)


StepLike = Union[Step, Mapping[str, Any]]


@dataclass(frozen=True)
class Pipeline:
    """An ordered, immutable list of steps."""

    steps: tuple[Step, ...] = ()

    def __post_init__(self):
        steps = tuple(step if isinstance(step, Step) else Step.from_dict(step) for step in self.steps)
        object.__setattr__(self, "steps", steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    @property
    def makes_labels(self) -> bool:
        """True when the output is a label image (the last step is a mask)."""
        return bool(self.steps) and self.steps[-1].operation.makes_labels

    # serialisation ----------------------------------------------------------------------------
    @classmethod
    def from_list(cls, steps: Iterable[StepLike]) -> "Pipeline":
        return cls(tuple(steps))

    @classmethod
    def from_dict(cls, data: Union[Mapping[str, Any], list]) -> "Pipeline":
        """From :meth:`to_dict`'s form, or a bare list of steps (as a model card may hold)."""
        if isinstance(data, list):
            return cls.from_list(data)
        if not isinstance(data, Mapping) or not isinstance(data.get("steps"), list):
            raise MedcadError('a pipeline must be a list of steps or {"steps": [...]}')
        if data.get("format", FORMAT) != FORMAT:
            raise MedcadError(f"not a preprocessing pipeline (format '{data.get('format')}')")
        version = data.get("version", VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise MedcadError(f"the pipeline's version must be a whole number, got {version!r:.40}")
        if version > VERSION:
            raise MedcadError(f"pipeline version {version} is newer than this napari-medcad reads ({VERSION})")
        return cls.from_list(data["steps"])

    @classmethod
    def from_json(cls, text: str) -> "Pipeline":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise MedcadError(f"not valid pipeline JSON ({err.msg}, line {err.lineno})") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Pipeline":
        try:
            text = Path(path).read_text(encoding="utf-8")
            return cls.from_json(text)
        except OSError as err:
            raise MedcadError(f"cannot read the pipeline ({err.strerror or err})", path) from None
        except UnicodeDecodeError:
            raise MedcadError("the pipeline file is not UTF-8 text (JSON)", path) from None
        except MedcadError as err:
            raise MedcadError(err.reason, path) from None

    def to_list(self) -> list[dict[str, Any]]:
        return [step.to_dict() for step in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "steps": self.to_list()}

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write JSON beside the target and rename, so a pipeline file is never half-written."""
        return write_text(path, self.to_json() + "\n")

    def describe(self) -> str:
        """Numbered lines, one per step; stable across runs and versions of the dict order."""
        return "\n".join(f"{index}. {step.describe()}" for index, step in enumerate(self.steps, start=1))

    # running ----------------------------------------------------------------------------------
    def run(self, image: MedicalImage, progress: Optional[ProgressFn] = None, device: str = "auto") -> MedicalImage:
        """Apply the steps in order; the input is never modified.

        ``device``: "auto" (CUDA, MPS, else each step's faster CPU path), "reference",
        "cpu", "cuda[:N]" or "mps"; it only affects steps with a torch implementation.
        """
        source = image.name
        count = len(self.steps)
        result = image
        for index, step in enumerate(self.steps):
            step_progress = scaled(progress, index / count, (index + 1) / count)
            report(step_progress, 0, 1, step.op)
            result = step.run(result, step_progress, device=device)
        if result is image:
            result = derive(image, image.array.copy())
        report(progress, count, count, "done")
        metadata = {**result.metadata, "pipeline": self.to_json(indent=None), "source": source}
        name = f"{source} [{' > '.join(step.op for step in self.steps)}]"
        return replace(result, name=name, metadata=metadata)
