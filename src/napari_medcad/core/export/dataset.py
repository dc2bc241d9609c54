"""The dataset folder as a transaction: stage every file, then move them into place.

An export writes its files into ``<dataset>/.medcad_staging-<random>/files/`` mirroring their
final paths.  Only when all of them are complete (and flushed to disk) does it write the
staging folder's ``plan.json`` (atomically): the list of files to move and to delete.  That
file is the commit point:

* killed before it exists: the dataset is untouched; the next export deletes the stale
  staging folder;
* killed after it exists (during the renames): the next export *rolls forward*, finishing the
  plan's renames and deletions, so the dataset ends up exactly as the export intended.

Each rename is atomic (same folder tree, same file system).  A lock file serialises exports
into one dataset, so a staging folder found while holding the lock is never a live one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..atomic import write_text
from ..errors import MedcadError

STAGING_PREFIX = ".medcad_staging-"
LOCK_NAME = ".medcad_export.lock"
PLAN_NAME = "plan.json"
MANIFEST_NAME = "medcad_export.json"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


@contextmanager
def dataset_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the dataset for one export (released by the OS if killed)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; exports must not run concurrently
        yield
        return
    with open(root / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _check_relative(relative: str) -> str:
    """Paths inside the dataset only: a plan or a manifest never names anything outside it."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts or relative != Path(*parts).as_posix():
        raise MedcadError(f"refusing a path that would leave the dataset: {relative!r}")
    return relative


class Transaction:
    """Files staged for one export; :meth:`commit` moves them in, :meth:`abort` drops them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.staging = self.root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        (self.staging / "files").mkdir(parents=True)
        self.moves: list[str] = []
        self.deletes: list[str] = []

    def path(self, relative: str) -> Path:
        """Where to write the file that will become ``<dataset>/<relative>``."""
        relative = _check_relative(relative)
        if relative not in self.moves:
            self.moves.append(relative)
        target = self.staging / "files" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def delete(self, relative: str) -> None:
        """Remove ``<dataset>/<relative>`` at commit (a replaced case's files)."""
        relative = _check_relative(relative)
        if relative not in self.moves and relative not in self.deletes:
            self.deletes.append(relative)

    def staged_files(self) -> list[Path]:
        return [self.staging / "files" / relative for relative in self.moves]

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, last: tuple[str, ...] = (MANIFEST_NAME,)) -> None:
        """Flush the staged files, write the plan (the commit point), then apply it.

        Files named in ``last`` move after all others, so a reader that looks between two
        renames sees the old manifest next to new data rather than the reverse.
        """
        for path in self.staged_files():
            _fsync_file(path)
        ordered = [m for m in self.moves if m not in last] + [m for m in self.moves if m in last]
        plan = {"moves": ordered, "deletes": self.deletes}
        write_text(self.staging / PLAN_NAME, json.dumps(plan, indent=1), durable=True)
        _apply_plan(self.root, self.staging)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _apply_plan(root: Path, staging: Path) -> None:
    """Carry out a committed plan; safe to repeat after a kill at any point (roll forward)."""
    plan = json.loads((staging / PLAN_NAME).read_text(encoding="utf-8"))
    for relative in plan["deletes"]:
        (root / _check_relative(relative)).unlink(missing_ok=True)
    touched = set()
    for relative in plan["moves"]:
        source = staging / "files" / _check_relative(relative)
        if source.exists():  # absent: already moved before an earlier run was killed
            _move(source, root / relative)
            touched.add((root / relative).parent)
    for folder in touched:
        _fsync_dir(folder)
    (staging / PLAN_NAME).unlink()  # the plan goes last: until then a rerun finishes the job
    shutil.rmtree(staging, ignore_errors=True)


def recover(root: Path) -> dict[str, int]:
    """Finish committed exports that were killed, delete abandoned staging folders.

    Call with the dataset lock held: then no staging folder belongs to a running export.
    """
    rolled, removed = 0, 0
    for staging in sorted(root.glob(f"{STAGING_PREFIX}*")):
        if not staging.is_dir():
            continue
        if (staging / PLAN_NAME).is_file():
            try:
                _apply_plan(root, staging)
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise MedcadError(f"could not finish an interrupted export ({err})", staging) from None
            rolled += 1
            continue
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    return {"rolled_forward": rolled, "removed_stale": removed}
