"""The reader's review of one image's findings, saved after every action.

A :class:`ReviewSession` wraps the Findings of one image.  Every decision (accept, reject,
move, relabel, note, add, remove, mask edit) is an :class:`Action` holding the finding before
and after, so undo and redo are the same operation in two directions.  One gesture of the
reader that changes several findings (deleting two points, a fill that replaces one mask by a
new one) is one action too (kind ``batch``, see :meth:`ReviewSession.batch`): undone, redone
and saved as one.  An action that changed mask voxels carries them (:class:`MaskPatch`: the
changed voxels' bounding box, which of its voxels changed, their values before and after,
compressed), so reopening the image puts the masks back as the reader left them.

After each action the whole state (findings, history, redo stack) is written to the review file
atomically and durably (a temporary file beside it, fsync, rename): a process killed at any
moment loses no action that had returned.  An action whose save fails is taken back in memory,
so the session never holds what the file does not.  The file is tied to the image by its
content signature, so reopening the same image restores the review and a review file of
another image is refused; a review file changed on disk by another window since this session
read or wrote it is not overwritten.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .atomic import write_text
from .errors import MedcadError
from .findings import Finding, Findings, Status, equivalent_diameter_mm
from .mask_patch import MaskPatch

FORMAT = "napari-medcad review"
#: 2: actions may be batches (``parts``) and carry mask voxels, the file names its writer and
#: save count; version 1 files are read as they are (an earlier napari-medcad refuses version 2
#: rather than undo a batch as one finding and lose its voxels)
VERSION = 2
#: a temporary review file untouched for this long was left by a killed writer, not a live one
#: (a save writes and renames its file in well under a second)
STALE_PARTIAL_S = 60.0
#: the kind of an action made of several (one gesture of the reader), or of mask voxels alone
BATCH = "batch"
#: the provenance that names the model run findings came from (``saved_findings_match``); the
#: rest (timings, device) may differ between two runs that made the same findings
MODEL_KEYS = ("model", "model_version", "threshold", "decoding", "rescored_by")
#: two findings at the same place: centres closer than this (mm)
SAME_PLACE_MM = 1e-3


def review_dir() -> Path:
    """``$NAPARI_MEDCAD_REVIEWS`` or the platform's per-user data folder: images may sit in
    read-only places (a PACS export, a CD), so reviews are not written beside them."""
    configured = os.environ.get("NAPARI_MEDCAD_REVIEWS")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-medcad")) / "reviews"


def default_review_path(image_signature: str) -> Path:
    return review_dir() / f"{image_signature}.review.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Action:
    """One review action: the finding as it was (None: it did not exist) and as it became.

    A ``batch`` action is one gesture that changed several findings: ``parts`` are its actions
    in order (its own ``before`` / ``after`` are None, ``finding_id`` is its last part's).
    ``voxels`` (a :meth:`MaskPatch.to_dict`) are the mask voxels the action changed; a batch
    without parts changed voxels of no finding."""

    kind: str
    finding_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    time: str
    parts: tuple["Action", ...] = ()
    voxels: dict[str, Any] | None = None

    @property
    def steps(self) -> tuple["Action", ...]:
        """The single actions this one is made of, in the order they were done."""
        return self.parts if self.kind.removeprefix("undo ") == BATCH else (self,)

    def inverse(self) -> "Action":
        """What undoing this action does (listeners hear it), steps in reverse order."""
        return Action(f"undo {self.kind}", self.finding_id, self.after, self.before, _now(),
                      tuple(part.inverse() for part in reversed(self.parts)), self.voxels)

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "finding_id": self.finding_id, "before": self.before,
                "after": self.after, "time": self.time}
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        if self.voxels is not None:
            data["voxels"] = self.voxels
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Action":
        """An action read back; ValueError or TypeError if it is not one (a damaged file)."""
        if not isinstance(data, dict):
            raise TypeError(f"an action is {type(data).__name__}, not an object")
        finding_id = data["finding_id"]
        if not isinstance(finding_id, int) or isinstance(finding_id, bool):
            raise ValueError(f"an action names finding {finding_id!r}")
        for state in (data.get("before"), data.get("after")):
            if state is not None:
                _checked_finding(state)
        voxels = data.get("voxels")
        if voxels is not None:
            MaskPatch.from_dict(voxels)  # refused now rather than when it is undone
        parts = data.get("parts") or ()
        if not isinstance(parts, list | tuple):
            raise TypeError("an action's parts are not a list")
        return cls(str(data["kind"]), finding_id, data.get("before"), data.get("after"), str(data.get("time", "")),
                   tuple(cls.from_dict(part) for part in parts), voxels)


class ReviewSession:
    """Review state of one image, persisted after every action (see the module docstring)."""

    def __init__(self, findings: Findings, image_signature: str, path: str | os.PathLike | None = None,
                 history: Sequence[Action] = (), redo: Sequence[Action] = ()):
        self.findings = findings
        self.findings.image_signature = image_signature
        self.image_signature = image_signature
        self.path = Path(path) if path is not None else default_review_path(image_signature)
        self.history: list[Action] = list(history)
        self.redo_stack: list[Action] = list(redo)
        #: called with each applied Action (and on undo/redo) so views can follow
        self.listeners: list[Callable[[Action], None]] = []
        #: called before each action (outside a batch), undo or redo: views turn edits they have not
        #: read yet (a stroke that just ended) into actions first, so the history keeps the order
        #: of the reader's gestures and an undo takes back the latest
        self.before_action: list[Callable[[], None]] = []
        self._encoded: dict[int, str] = {f.id: json.dumps(f.to_dict()) for f in findings}
        self._encoded_history = [json.dumps(a.to_dict()) for a in self.history]
        self._batch: list[Action] | None = None  # the parts of the batch being made
        # another writer of the same file (a second window): this session's own mark in the file,
        # what it expects to find there (the writer and save count it last read or wrote) and the
        # file's identity then (inode, size, mtime), checked before each save
        self._writer = secrets.token_hex(8)
        self._sequence = 0
        self._expected: tuple[Any, Any] | None = None
        self._disk: tuple[int, int, int] | None = None

    # opening ------------------------------------------------------------------------------------
    @classmethod
    def start(cls, findings: Findings, image_signature: str, path: str | os.PathLike | None = None, *,
              restart: bool = False) -> "ReviewSession":
        """Resume the saved review of this image if there is one, else begin one over ``findings``.

        ``restart=True`` begins afresh over ``findings`` even when a review is saved: the saved
        file is first renamed (atomically, in the same folder; never deleted) to
        ``<stem>.replaced-<UTC time>.review.json`` (see :func:`set_aside`).  Use
        :meth:`saved_findings_match` to tell whether the saved review is one of these findings.
        """
        path = Path(path) if path is not None else default_review_path(image_signature)
        remove_stale_partials(path)
        if restart and path.exists():
            set_aside(path)
        elif path.exists():
            return cls.open(path, image_signature)
        session = cls(findings.copy(), image_signature, path)
        session.save()
        return session

    @classmethod
    def open(cls, path: str | os.PathLike, image_signature: str | None = None) -> "ReviewSession":
        """A saved review; refused (MedcadError, the file untouched) when it belongs to another
        image than ``image_signature`` or is damaged."""
        path = Path(path)
        remove_stale_partials(path)
        disk = file_identity(path)  # before reading: a write in between is then seen at the next save
        data = _read_review_file(path)
        saved_signature = str(data.get("image_signature", ""))
        if image_signature is not None and saved_signature != image_signature:
            raise MedcadError(
                f"this review belongs to a different image (signature {saved_signature[:12]}..., "
                f"the open image is {image_signature[:12]}...)", path)
        findings, history, redo = _review_state(data, path)
        session = cls(findings, saved_signature, path, history, redo)
        session._sequence = data.get("sequence") if isinstance(data.get("sequence"), int) else 0
        session._expected, session._disk = (data.get("writer"), data.get("sequence")), disk
        return session

    @staticmethod
    def saved_findings_match(findings: Findings, path: str | os.PathLike) -> bool:
        """Whether the review saved at ``path`` was begun on these ``findings``: the same model
        run (the provenance's model, version, threshold, decoding and rescorer, timings aside) and
        the same finding ids at the same centres as the findings the review started from (its
        history undone).  False when there is no such file or it cannot be read (``open`` then
        says why)."""
        try:
            saved = ReviewSession.open(path)
        except MedcadError:
            return False
        return saved.began_with(findings)

    def began_with(self, findings: Findings) -> bool:
        """Whether this review was begun on ``findings`` (see :meth:`saved_findings_match`)."""
        if _model_identity(self.findings.provenance) != _model_identity(findings.provenance):
            return False
        started = {f.id: f.centre_world_mm for f in self.findings}
        for action in reversed(self.history):
            for step in reversed(action.steps):
                if step.before is None:
                    started.pop(step.finding_id, None)
                else:
                    started[step.finding_id] = tuple(step.before.get("centre_world_mm", ()))
        given = {f.id: f.centre_world_mm for f in findings}
        if started.keys() != given.keys():
            return False
        pairs = [(started[i], given[i]) for i in given]
        if any(len(a) != len(b) for a, b in pairs):
            return False
        if len({len(a) for a, _ in pairs}) != 1:  # no findings, or centres of mixed dimensions
            return all(np.allclose(a, b, rtol=0, atol=SAME_PLACE_MM) for a, b in pairs)
        saved_centres, given_centres = (np.array(side, float) for side in zip(*pairs))  # 5,000 at once
        return bool(np.allclose(saved_centres, given_centres, rtol=0, atol=SAME_PLACE_MM))

    # the reader's actions -----------------------------------------------------------------------
    def accept(self, finding_id: int) -> Finding:
        return self._change("accept", finding_id, status=Status.ACCEPTED)

    def reject(self, finding_id: int) -> Finding:
        return self._change("reject", finding_id, status=Status.REJECTED)

    def set_status(self, finding_id: int, status: Status | str) -> Finding:
        return self._change("status", finding_id, status=Status(status))

    def set_label(self, finding_id: int, label: str) -> Finding:
        return self._change("label", finding_id, label=str(label), status=self._edited(finding_id))

    def set_note(self, finding_id: int, note: str) -> Finding:
        return self._change("note", finding_id, note=" ".join(str(note).split()))

    def move(self, finding_id: int, centre_world_mm: Sequence[float],
             bbox_index_zyx: tuple[Sequence[int], Sequence[int]] | None = None) -> Finding:
        """The reader moved the finding: new world position (and voxel position on its grid).
        Its box moves with it by the whole voxels the centre moved, unless ``bbox_index_zyx``
        gives the new box (the reader moved or resized the box itself)."""
        self._flush()  # edits the views have not turned into actions yet come first: they may move it too
        before = self._finding(finding_id)
        centre = tuple(float(v) for v in centre_world_mm)
        index = self.findings.world_to_index(centre) if self.findings.geometry is not None else ()
        box = before.bbox_index_zyx
        if bbox_index_zyx is not None:
            box = (tuple(int(v) for v in bbox_index_zyx[0]), tuple(int(v) for v in bbox_index_zyx[1]))
        elif box is not None and index:
            shift = np.round(np.subtract(index, self.findings.world_to_index(before.centre_world_mm))).astype(int)
            box = tuple(tuple(int(v) for v in np.add(corner, shift)) for corner in box)
        return self._change("move", finding_id, centre_world_mm=centre, centre_index_zyx=index,
                            bbox_index_zyx=box, status=self._edited(finding_id))

    def resize(self, finding_id: int, diameter_mm: float) -> Finding:
        return self._change("resize", finding_id, diameter_mm=float(diameter_mm), status=self._edited(finding_id))

    def edit_mask(self, finding_id: int, volume_mm3: float | None = None) -> Finding:
        """The reader changed part of the finding's mask (its voxels travel with the action: see
        :meth:`batch`): a model finding becomes EDITED, an added or rejected one stays so.
        ``volume_mm3``: the mask's new volume; the diameter becomes its equivalent diameter (as
        the decoder measures a mask), so what is exported describes the corrected mask."""
        changes: dict[str, Any] = {"status": self._edited(finding_id)}
        if volume_mm3 is not None:
            geometry = self.findings.geometry
            ndim = geometry.ndim if geometry is not None else len(self.findings.shape_zyx) or 3
            changes.update(volume_mm3=float(volume_mm3),
                           diameter_mm=equivalent_diameter_mm(max(float(volume_mm3), 0.0), ndim))
        return self._change("mask", finding_id, **changes)

    def add(self, centre_world_mm: Sequence[float], diameter_mm: float = 0.0, label: str = "nodule",
            note: str = "", **fields: Any) -> Finding:
        """A finding the reader drew: status ADDED, source "reader", probability 1."""
        self._flush()
        centre = tuple(float(v) for v in centre_world_mm)
        index = self.findings.world_to_index(centre) if self.findings.geometry is not None else ()
        finding = Finding(id=self.findings.next_id(), label=label, probability=1.0, centre_world_mm=centre,
                          diameter_mm=float(diameter_mm), centre_index_zyx=index, status=Status.ADDED,
                          note=note, source="reader", **fields)
        self._apply(Action("add", finding.id, None, finding.to_dict(), _now()))
        return finding

    def remove(self, finding_id: int) -> Finding | None:
        """Deleting a reader's own finding removes it; deleting a model's finding rejects it, so
        the export keeps it as a hard negative."""
        self._flush()
        finding = self._finding(finding_id)
        if finding.source == "reader":
            self._apply(Action("remove", finding_id, finding.to_dict(), None, _now()))
            return None
        return self.reject(finding_id)

    @contextmanager
    def batch(self, voxels: "MaskPatch | dict[str, Any] | None" = None) -> Iterator[None]:
        """The actions made inside are one action: one gesture of the reader (deleting several
        points, a stroke that added one mask and erased another) is undone, redone and saved as
        one.  ``voxels`` are the mask voxels the gesture changed, saved with it (with no action
        inside, an action of those voxels alone).  Listeners hear the batch once, when it ends;
        if anything inside fails, or its save does, the session is as it was before the batch
        and the error is raised."""
        if self._batch is not None:
            raise RuntimeError("review batches do not nest")
        snapshot = self._snapshot()
        self._batch = parts = []
        try:
            with self._as_before_on_failure(snapshot):
                yield
        finally:
            self._batch = None
        if isinstance(voxels, MaskPatch):
            voxels = voxels.to_dict()
        if not parts and voxels is None:
            return
        if len(parts) == 1:
            action = replace(parts[0], voxels=voxels)
        else:
            action = Action(BATCH, parts[-1].finding_id if parts else 0, None, None, _now(), tuple(parts), voxels)
        self._record(action, snapshot)

    # undo / redo --------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def undo(self) -> Action | None:
        """Take back the latest action (a batch as a whole); saved at once.  If the save fails
        the action stays done (MedcadError raised, listeners not told)."""
        self._flush()
        if not self.history:
            return None
        with self._as_before_on_failure():
            action = self.history.pop()
            self._encoded_history.pop()
            self.redo_stack.append(action)
            self._set_steps(action.steps, undoing=True)
            self.save()
        self._tell(action.inverse())
        return action

    def redo(self) -> Action | None:
        self._flush()
        if not self.redo_stack:
            return None
        with self._as_before_on_failure():
            action = self.redo_stack.pop()
            self._set_steps(action.steps, undoing=False)
            self.history.append(action)
            self._encoded_history.append(json.dumps(action.to_dict()))
            self.save()
        self._tell(action)
        return action

    # decisions ----------------------------------------------------------------------------------
    def decisions(self) -> dict[int, dict[str, str]]:
        """Each finding's latest decision and when it was made (for an export's provenance).

        A decision is an action that changed the finding itself (its status, class, place or
        size, or created it): a note written after accepting records what the reader thought,
        not a new decision, so the accept keeps its action and time.
        """
        latest: dict[int, dict[str, str]] = {}
        for action in self.history:
            for step in action.steps:
                if step.after is None:
                    latest.pop(step.finding_id, None)
                elif _decides(step):
                    latest[step.finding_id] = {"status": str(step.after.get("status")), "action": step.kind,
                                               "time": step.time}
        return latest

    def reviewed_findings(self) -> Findings:
        """A copy of the findings whose provenance records the review (file, decisions, times)."""
        findings = self.findings.copy()
        findings.provenance = {**findings.provenance, "review": {
            "file": self.path.name, "actions": len(self.history),
            "decisions": {str(k): v for k, v in self.decisions().items()}}}
        return findings

    def mask_patches(self) -> list[MaskPatch]:
        """The mask voxels of the actions done (not undone), in the order they were made."""
        return [MaskPatch.from_dict(action.voxels) for action in self.history if action.voxels is not None]

    def apply_mask_edits(self, labels: np.ndarray) -> np.ndarray:
        """A copy of ``labels`` (the label map the review began with: the model's masks) with the
        reader's mask edits made: the masks as the reader left them, for an export."""
        edited = np.array(labels, copy=True)
        for patch in self.mask_patches():
            patch.apply(edited)
        return edited

    # persistence --------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write the whole state atomically and durably (fsync before the rename).  Refused
        (MedcadError, nothing written) when the file was changed by another writer since this
        session last read or wrote it: the reader reopens the review instead of losing either."""
        self._check_not_replaced()
        sequence = self._sequence + 1
        header = {"format": FORMAT, "version": VERSION, "image_signature": self.image_signature,
                  "saved_at": _now(), "writer": self._writer, "sequence": sequence}
        frame = self.findings.to_dict(include_items=False)
        # one join of the pieces: concatenating the 2 MB of a 5,000-finding review piece by piece
        # cost more than writing and fsyncing it
        text = "".join([json.dumps(header)[:-1], ', "findings": ',
                        *_with_items(frame, [self._encoded[f.id] for f in self.findings]),
                        ', "history": [', ",\n".join(self._encoded_history), "]",
                        ', "redo": ', json.dumps([a.to_dict() for a in self.redo_stack]), "}\n"])
        try:
            # a folder this makes is the user's own: reviews hold readers' notes, which may name a patient
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_text(self.path, text, durable=True)
        except OSError as err:
            raise MedcadError(f"could not save the review ({err.strerror or err})", self.path) from None
        self._sequence, self._expected = sequence, (self._writer, sequence)
        self._disk = file_identity(self.path)
        return self.path

    def _check_not_replaced(self) -> None:
        disk = file_identity(self.path)
        if disk is None or disk == self._disk:  # nothing there to overwrite, or what this session left
            return
        try:  # touched or copied back unchanged (a backup tool): still the review this session holds
            data = _read_review_file(self.path)
            found = (data.get("writer"), data.get("sequence"))
        except MedcadError:
            found = None
        if self._expected is None or found != self._expected:
            raise MedcadError("the review file was changed by another window or program since this review was "
                              "opened; nothing was saved: reopen the image to continue from the saved review",
                              self.path)
        self._disk = disk

    # internals ----------------------------------------------------------------------------------
    def _finding(self, finding_id: int) -> Finding:
        try:
            return self.findings[finding_id]
        except KeyError:
            raise MedcadError(f"there is no finding {finding_id}") from None

    def _edited(self, finding_id: int) -> Status:
        """A reader's change to a model finding makes it EDITED (a positive); their own stay
        ADDED, and a rejected one stays REJECTED: changing its class or nudging it is no decision
        that it is a lesion.  The views' pending edits are flushed first: a stroke still waiting
        to become an action may have rejected the finding."""
        self._flush()
        status = self._finding(finding_id).status
        return status if status in (Status.ADDED, Status.REJECTED) else Status.EDITED

    def _change(self, kind: str, finding_id: int, **changes: Any) -> Finding:
        self._flush()
        before = self._finding(finding_id)
        after = replace(before, **changes)
        self._apply(Action(kind, finding_id, before.to_dict(), after.to_dict(), _now()))
        return after

    def _apply(self, action: Action) -> None:
        if self._batch is not None:  # a part of the batch being made: recorded when it ends
            self._set_steps(action.steps, undoing=False)
            self._batch.append(action)
            return
        self._record(action, self._snapshot(), applied=False)

    def _flush(self) -> None:
        """Let views turn their unread edits into actions first (see ``before_action``)."""
        if self._batch is None:
            for flush in list(self.before_action):
                flush()

    def _record(self, action: Action, snapshot: tuple, applied: bool = True) -> None:
        """Do ``action`` (unless ``applied``), put it on the history and save; if that fails the
        session goes back to ``snapshot`` and the error is raised, else listeners hear it."""
        with self._as_before_on_failure(snapshot):
            if not applied:
                self._set_steps(action.steps, undoing=False)
            self.history.append(action)
            self._encoded_history.append(json.dumps(action.to_dict()))
            self.redo_stack.clear()
            self.save()
        self._tell(action)

    @contextmanager
    def _as_before_on_failure(self, snapshot: tuple | None = None) -> Iterator[None]:
        """Run the block; if it raises, the session goes back to ``snapshot`` (default: as it is
        now) and the error is raised: a failed save never leaves memory and file apart."""
        snapshot = self._snapshot() if snapshot is None else snapshot
        try:
            yield
        except BaseException:
            self._restore(snapshot)
            raise

    def _snapshot(self) -> tuple:
        """What an action may change (shallow copies: findings are replaced, never changed in place)."""
        return (list(self.findings.items), dict(self._encoded), list(self.history), list(self._encoded_history),
                list(self.redo_stack))

    def _restore(self, snapshot: tuple) -> None:
        items, encoded, history, encoded_history, redo = snapshot
        self.findings.items[:] = items
        self._encoded = encoded
        self.history[:], self._encoded_history[:], self.redo_stack[:] = history, encoded_history, redo

    def _set_steps(self, steps: Sequence[Action], undoing: bool) -> None:
        for step in (reversed(steps) if undoing else steps):
            self._set(step.finding_id, step.before if undoing else step.after)

    def _set(self, finding_id: int, state: dict[str, Any] | None) -> None:
        """Make finding ``finding_id`` be ``state`` (None: absent), keeping the table's order."""
        position = next((i for i, f in enumerate(self.findings.items) if f.id == finding_id), None)
        if state is None:
            if position is not None:
                del self.findings.items[position]
            self._encoded.pop(finding_id, None)
            return
        finding = Finding.from_dict(state)
        if position is None:
            self.findings.items.append(finding)
        else:
            self.findings.items[position] = finding
        self._encoded[finding_id] = json.dumps(finding.to_dict())

    def _tell(self, action: Action) -> None:
        for listener in list(self.listeners):
            listener(action)


def _decides(action: Action) -> bool:
    """Whether ``action`` (a single one, not a batch) changed more of its finding than the note
    (see ReviewSession.decisions)."""
    if action.before is None:
        return True
    return any(action.before.get(key) != value for key, value in action.after.items() if key != "note")


def remove_stale_partials(path: str | os.PathLike, older_than_s: float = STALE_PARTIAL_S) -> list[Path]:
    """Delete the temporary files a killed save of ``path`` left beside it (``.NAME.*.partial``,
    as ``core.atomic`` names them); only those untouched for ``older_than_s``, so a save running
    in another process keeps its file.  Returns what was removed."""
    path = Path(path)
    now = time.time()
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.partial"))
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if now - candidate.stat().st_mtime >= older_than_s:
                candidate.unlink()
                removed.append(candidate)
        except OSError:  # gone already, or not ours to delete: leave it
            continue
    return removed


def _with_items(frame: dict[str, Any], encoded_items: list[str]) -> list[str]:
    """``frame`` as JSON with its empty ``items`` list filled by already-encoded findings, in pieces to join."""
    text = json.dumps(frame)
    marker = '"items": []'
    at = text.index(marker)
    return [text[:at], '"items": [', ",\n".join(encoded_items), "]", text[at + len(marker):]]


def _read_review_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise MedcadError(f"cannot read the review file ({err.strerror or err})", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MedcadError("the review file is not valid JSON (damaged, or not a review file)", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MedcadError("not a napari-medcad review file", path)
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MedcadError(f"the review file is damaged (its version is {version!r}, not a number)", path)
    if version > VERSION:
        raise MedcadError(f"the review file is of a newer version ({version}); update napari-medcad", path)
    return data


def _checked_finding(state: Any) -> Finding:
    """A finding read from a review file; ValueError or TypeError (or MedcadError) if it is damaged."""
    if not isinstance(state, dict):
        raise TypeError(f"a finding is {type(state).__name__}, not an object")
    finding = Finding.from_dict(state)
    if not isinstance(finding.id, int) or isinstance(finding.id, bool):
        raise ValueError(f"a finding's id is {finding.id!r}, not a whole number")
    return finding


def _review_state(data: dict[str, Any], path: Path) -> tuple[Findings, list[Action], list[Action]]:
    """The findings, history and redo stack of a review file's contents; a one-line MedcadError
    naming what is damaged, so a hand-edited or truncated file is refused at load, not later."""
    try:
        frame = data["findings"]
        if not isinstance(frame, dict) or not isinstance(frame.get("items", []), list):
            raise TypeError("'findings' is not a findings table")
        findings = Findings.from_dict({**frame, "items": []})
        seen: set[int] = set()
        for item in frame.get("items", []):
            finding = _checked_finding(item)
            if finding.id in seen:
                raise ValueError(f"finding id {finding.id} appears twice")
            seen.add(finding.id)
            findings.items.append(finding)
        history, redo = data.get("history", []), data.get("redo", [])
        if not isinstance(history, list) or not isinstance(redo, list):
            raise TypeError("'history' or 'redo' is not a list")
        return findings, [Action.from_dict(a) for a in history], [Action.from_dict(a) for a in redo]
    except MedcadError as err:
        raise MedcadError(f"the review file is damaged ({err.reason})", path) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise MedcadError(f"the review file is damaged ({type(err).__name__}: {err})", path) from None


def file_identity(path: Path | None) -> tuple[int, int, int] | None:
    """(inode, size, modification time) of ``path``: every save renames a new file over it, so a
    save by another writer changes this; None if there is no such file (or no path)."""
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _model_identity(provenance: Any) -> Any:
    """The part of findings' provenance that names their model run (MODEL_KEYS), timings left out."""
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "seconds" and not str(k).endswith("_s")}
        return [plain(v) for v in value] if isinstance(value, list | tuple) else value

    provenance = provenance if isinstance(provenance, dict) else {}
    return plain({key: provenance[key] for key in MODEL_KEYS if key in provenance})


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a review file out of the way (atomically, same folder, never deleted):
    ``<stem>.replaced-<UTC time>.review.json`` for ``<stem>.review.json`` (another name keeps its
    own suffix).  Returns the new path."""
    path = Path(path)
    name = path.name
    stem, suffix = (name[:-len(".review.json")], ".review.json") if name.endswith(".review.json") \
        else (path.stem, path.suffix)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    for attempt in range(100):
        aside = path.with_name(f"{stem}.replaced-{stamp}{f'-{attempt}' if attempt else ''}{suffix}")
        if aside.exists():
            continue
        try:
            os.rename(path, aside)
        except OSError as err:
            raise MedcadError(f"could not move the saved review aside ({err.strerror or err})", path) from None
        return aside
    raise MedcadError("could not move the saved review aside (no free name)", path)


def load_review(path: str | os.PathLike, image_signature: str | None = None) -> Findings:
    """The reviewed findings in a review file (for export and the CLI); their
    ``image_signature`` names the image they belong to."""
    return ReviewSession.open(path, image_signature).reviewed_findings()
