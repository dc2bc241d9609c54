"""The user's list of TorchScript files they trust to run.

TorchScript is a program, not data: ``torch.jit.load`` runs the module's ``__setstate__`` and
the model's ``forward`` runs at inference, and both can read and write files (for example with
``torch.from_file(..., shared=True)``).  PyTorch has no safe mode for it.  So a TorchScript
model (a card's weights, or a MONAI bundle's ``models/model.ts``) is loaded only when its exact
bytes are on the user's trust list: the SHA-256 digests in ``trusted.json`` in the user's
configuration folder (not the model folder, where an unpacked model archive could bring a
trust list of its own), added with ``napari-medcad models --trust NAME_OR_PATH``.  A changed file has another
digest and is refused again.  The digest is taken of the very bytes that are then loaded (the
file is read once), so the file cannot be swapped between the check and the load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from pathlib import Path

from ..atomic import write_text
from ..errors import MedcadError
from .configfile import read_bounded

TRUST_FILE = "trusted.json"
#: TorchScript is read into memory whole; a model larger than this is not one we run
MAX_TORCHSCRIPT_BYTES = 2 << 30


def trust_list_path() -> Path:
    """``$NAPARI_MEDCAD_TRUST`` (a file) or ``trusted.json`` in the platform's per-user
    configuration folder: apart from the user model folder, whose content comes from elsewhere."""
    configured = os.environ.get("NAPARI_MEDCAD_TRUST")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-medcad")) / TRUST_FILE


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (for listing; loading uses :func:`read_trusted`)."""
    hasher = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                hasher.update(chunk)
    except OSError as err:
        raise MedcadError(f"cannot read the TorchScript file ({err.strerror or err})", path) from None
    return hasher.hexdigest()


def _entries() -> dict[str, dict]:
    """The trust list: digest -> what was trusted (file, model, when).  A missing list is empty;
    a damaged one is an error (never silently replaced: it is the user's decision record)."""
    path = trust_list_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise MedcadError(f"cannot read the trust list ({getattr(err, 'strerror', None) or err})", path) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MedcadError(f"the trust list is not valid JSON ({err.msg}, line {err.lineno}); fix or delete it",
                          path) from None
    trusted = data.get("trusted") if isinstance(data, dict) else None
    if not isinstance(trusted, dict) or not all(isinstance(v, dict) for v in trusted.values()):
        raise MedcadError('the trust list must be {"trusted": {sha256: {...}}}; fix or delete it', path)
    return trusted


def _save(entries: dict[str, dict]) -> None:
    path = trust_list_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"trusted": entries}, indent=2, sort_keys=True) + "\n", durable=True)
    except OSError as err:
        raise MedcadError(f"cannot write the trust list ({err.strerror or err})", path) from None


def is_trusted(file_sha256: str) -> bool:
    return file_sha256 in _entries()


def trust(path: Path, model: str, shown_sha256: str | None = None) -> str:
    """Put the current content of ``path`` on the trust list; its digest.  ``shown_sha256``: the
    digest the user was shown when asked; a file that changed since is refused, not trusted."""
    path = Path(path).resolve()
    entries = _entries()
    file_sha256 = digest(read_bounded(path, "the TorchScript file", MAX_TORCHSCRIPT_BYTES))
    if shown_sha256 is not None and file_sha256 != shown_sha256:
        raise MedcadError("the TorchScript file changed after you were asked about it; nothing was trusted", path)
    entries[file_sha256] = {"file": str(path), "model": model,
                            "trusted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _save(entries)
    return file_sha256


def untrust(path: Path) -> tuple[str, bool]:
    """Take the current content of ``path`` off the trust list; its digest and whether it was on it."""
    entries = _entries()
    file_sha256 = file_digest(Path(path))
    was_trusted = entries.pop(file_sha256, None) is not None
    if was_trusted:
        _save(entries)
    return file_sha256, was_trusted


def read_trusted(path: Path, model: str) -> bytes:
    """The bytes of a TorchScript file, if the user trusts exactly these bytes; else one line
    that says why it is refused and how to trust it."""
    data = read_bounded(path, "the TorchScript file", MAX_TORCHSCRIPT_BYTES)
    file_sha256 = digest(data)
    if not is_trusted(file_sha256):
        raise MedcadError(
            f"refused to load model '{model}': TorchScript is a program that can read and write your files, "
            f"and this file (sha256 {file_sha256[:16]}...) is not on your trust list; if you trust where it "
            f"came from, run: napari-medcad models --trust {shlex.quote(str(path))}",
            path,
        )
    return data
