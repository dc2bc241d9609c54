"""Reading the small YAML/JSON files a user model brings (cards, MONAI bundle configs) safely.

These files come from whoever made the model, so reading one must not cost more than its size
suggests and must give plain data or a one-line error:

* the file is capped in size (a card is a few KB) and must be UTF-8 text;
* YAML is read with a safe loader that also refuses aliases (``*name``): with them a 1 KB file
  can expand to billions of nodes (the "billion laughs" attack), which no card needs;
* dates stay text (``version: 2024-01-01``), and the result must be plain data: mappings with
  text keys, lists, text, numbers, booleans and nulls (no ``!!binary``, ``!!set``...).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from ..errors import MedcadError

#: a card or a bundle config is a short text file; more is a mistake or an attack
MAX_CONFIG_BYTES = 1 << 20
#: plain data nested deeper than this is not a configuration (and would exhaust the stack)
MAX_DEPTH = 64


@functools.lru_cache(maxsize=1)
def _loader():
    """yaml.SafeLoader that refuses aliases and keeps timestamps as text."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"YAML aliases (*{event.anchor}) are not allowed", event.start_mark
                )
            return super().compose_node(parent, index)

    NoAliasSafeLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return NoAliasSafeLoader


def read_bounded(path: Path, what: str, max_bytes: int) -> bytes:
    """The whole of a regular file, refusing a folder, a missing file or one larger than
    ``max_bytes`` (read no further than that: a card or a model is not allowed to fill memory)."""
    path = Path(path)
    if not path.is_file():
        raise MedcadError(f"{what} {'is a folder, not a file' if path.is_dir() else 'does not exist'}", path)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(max_bytes + 1)
    except OSError as err:
        raise MedcadError(f"cannot read {what} ({err.strerror or err})", path) from None
    if len(raw) > max_bytes:
        size = next(f"{max_bytes / unit:g} {name}" for unit, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB"),
                                                                      (1, "bytes")) if max_bytes >= unit)
        raise MedcadError(f"{what} is larger than {size}", path)
    return raw


def _read_text(path: Path, what: str, max_bytes: int) -> str:
    raw = read_bounded(path, what, max_bytes)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise MedcadError(f"{what} is not UTF-8 text (byte 0x{raw[err.start]:02x} at position {err.start})",
                          path) from None


def _yaml_problem(err) -> str:
    """A YAML error in one line: what is wrong and where."""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def parse_text(text: str, path: Path, what: str) -> Any:
    """``text`` as YAML (JSON by ``.json`` suffix), with the rules of the module docstring."""
    import yaml

    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except json.JSONDecodeError as err:
        raise MedcadError(f"{what} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})",
                          path) from None
    except yaml.YAMLError as err:
        raise MedcadError(f"{what} is not valid YAML ({_yaml_problem(err)})", path) from None
    except RecursionError:
        raise MedcadError(f"{what} is nested too deeply", path) from None
    check_plain(data, path, what)
    return data


def check_plain(value: Any, path: Path | None, what: str, depth: int = 0) -> None:
    """Refuse anything but plain data (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise MedcadError(f"{what} is nested too deeply", path)
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        for item in value:
            check_plain(item, path, what, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MedcadError(f"{what} has a key that is not text ({show(key)}); quote it", path)
            check_plain(item, path, what, depth + 1)
        return
    raise MedcadError(f"{what} holds a value of type {type(value).__name__}; only text, numbers, booleans, "
                      "lists and mappings are allowed", path)


def read_config(path: str | os.PathLike, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """The plain data of a YAML/JSON file written by a model's author, or a one-line MedcadError."""
    path = Path(path)
    return parse_text(_read_text(path, what, max_bytes), path, what)


def show(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut short: error messages never carry a huge value."""
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    shortener.maxlist = shortener.maxdict = shortener.maxtuple = 4
    shortener.maxlevel = 2
    text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cut(text: str, limit: int = 120) -> str:
    """``text`` on one line, at most ``limit`` characters (cut at a word, with an ellipsis)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    head = text[: limit - 3]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,;:") + "..."
