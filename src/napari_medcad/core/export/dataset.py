"""The dataset folder as a transaction: stage every file, then move them into place.

An export writes its files into ``<dataset>/.medcad_staging-<random>/files/`` mirroring their
final paths.  Only when all of them are complete (and flushed to disk) does it write the
staging folder's ``plan.json`` (atomically): the list of files to move and to delete.  That
file is the commit point:

* killed before it exists: the dataset is untouched; the next export deletes the stale
  staging folder;
* killed after it exists (during the renames): the next export *rolls forward*, finishing the
  plan's renames and deletions, so the dataset ends up exactly as the export intended.

Each rename is atomic (same folder tree, same file system), but a reader that looks between
two renames sees some files new and some old.  The plan orders the renames so that this
mixture stays usable (see ``case._commit_order``): files are added before the lists naming
them and deleted after the lists stop naming them, so nnU-Net, which reads the case list in
dataset.json, never misses a file; the LUNA16 tables, coco.json and medcad_export.json may
each be a step behind until the next export rolls the plan forward.  A staging folder holding
a plan.json means such a commit is unfinished.

A lock file serialises exports into one dataset, so a staging folder found while holding the
lock is never a live one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

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


def check_dataset_folder(root: Path) -> None:
    """Refuse a folder holding anything but a dataset: an export replaces and deletes files.

    Ours are a folder with a manifest, an empty one (hidden files aside), and one whose first
    export was killed after its commit point (a plan, and some files, but no manifest yet).
    Called before locking, so a refused folder is left exactly as it was.
    """
    if (root / MANIFEST_NAME).is_file() or any(root.glob(f"{STAGING_PREFIX}*/{PLAN_NAME}")):
        return
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    if visible:
        raise MedcadError(f"this folder is not a napari-medcad dataset (it holds {', '.join(visible[:3])}"
                          f"{'...' if len(visible) > 3 else ''}); choose an empty or new folder", root)


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

    def commit(self, order: Callable[[str], int] | None = None) -> None:
        """Flush the staged files, write the plan (the commit point), then apply it.

        The files move in the order of ``order(relative)`` (by default the manifest last, so a
        reader between two renames sees the old manifest next to new data rather than the
        reverse).  Deletions follow the moves, except that of a file a move replaces under
        another letter case (on macOS and Windows the same file: deleting it afterwards would
        delete the new one).
        """
        for path in self.staged_files():
            _fsync_file(path)
        ordered = sorted(self.moves, key=order or (lambda relative: relative == MANIFEST_NAME))
        replaced = {m.lower() for m in self.moves}
        plan = {"deletes": [d for d in self.deletes if d.lower() in replaced], "moves": ordered,
                "deletes_after": [d for d in self.deletes if d.lower() not in replaced]}
        write_text(self.staging / PLAN_NAME, json.dumps(plan, indent=1), durable=True)
        _apply_plan(self.root, self.staging)


def _move(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _apply_plan(root: Path, staging: Path) -> None:
    """Carry out a committed plan; safe to repeat after a kill at any point (roll forward)."""
    plan = json.loads((staging / PLAN_NAME).read_text(encoding="utf-8"))
    touched = set()
    for relative in plan["deletes"]:  # plans of earlier versions delete everything here
        (root / _check_relative(relative)).unlink(missing_ok=True)
    for relative in plan["moves"]:
        source = staging / "files" / _check_relative(relative)
        if source.exists():  # absent: already moved before an earlier run was killed
            _move(source, root / relative)
            touched.add((root / relative).parent)
    for relative in plan.get("deletes_after", []):
        target = root / _check_relative(relative)
        if target.exists():
            target.unlink()
            touched.add(target.parent)
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
