"""The reader's review of one image's findings, saved after every action.

A :class:`ReviewSession` wraps the Findings of one image.  Every decision (accept, reject,
move, relabel, note, add, remove) is an :class:`Action` holding the finding before and after,
so undo and redo are the same operation in two directions.  After each action the whole state
(findings, history, redo stack) is written to the review file atomically and durably (a
temporary file beside it, fsync, rename): a process killed at any moment loses no action that
had returned.  The file is tied to the image by its content signature, so reopening the same
image restores the review and a review file of another image is refused.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .atomic import write_text
from .errors import MedcadError
from .findings import Finding, Findings, Status

FORMAT = "napari-medcad review"
VERSION = 1
#: a temporary review file untouched for this long was left by a killed writer, not a live one
#: (a save writes and renames its file in well under a second)
STALE_PARTIAL_S = 60.0


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
    """One review action: the finding as it was (None: it did not exist) and as it became."""

    kind: str
    finding_id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "finding_id": self.finding_id, "before": self.before,
                "after": self.after, "time": self.time}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Action":
        return cls(str(data["kind"]), int(data["finding_id"]), data.get("before"), data.get("after"),
                   str(data.get("time", "")))


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
        self._encoded: dict[int, str] = {f.id: json.dumps(f.to_dict()) for f in findings}
        self._encoded_history = [json.dumps(a.to_dict()) for a in self.history]

    # opening ------------------------------------------------------------------------------------
    @classmethod
    def start(cls, findings: Findings, image_signature: str,
              path: str | os.PathLike | None = None) -> "ReviewSession":
        """Resume the saved review of this image if there is one, else begin one over ``findings``."""
        path = Path(path) if path is not None else default_review_path(image_signature)
        remove_stale_partials(path)
        if path.exists():
            return cls.open(path, image_signature)
        session = cls(findings.copy(), image_signature, path)
        session.save()
        return session

    @classmethod
    def open(cls, path: str | os.PathLike, image_signature: str | None = None) -> "ReviewSession":
        """A saved review; refused when it belongs to another image than ``image_signature``."""
        path = Path(path)
        remove_stale_partials(path)
        data = _read_review_file(path)
        saved_signature = str(data.get("image_signature", ""))
        if image_signature is not None and saved_signature != image_signature:
            raise MedcadError(
                f"this review belongs to a different image (signature {saved_signature[:12]}..., "
                f"the open image is {image_signature[:12]}...)", path)
        try:
            findings = Findings.from_dict(data["findings"])
            history = [Action.from_dict(a) for a in data.get("history", [])]
            redo = [Action.from_dict(a) for a in data.get("redo", [])]
        except (KeyError, TypeError, ValueError) as err:
            raise MedcadError(f"the review file is damaged ({type(err).__name__}: {err})", path) from None
        return cls(findings, saved_signature, path, history, redo)

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

    def move(self, finding_id: int, centre_world_mm: Sequence[float]) -> Finding:
        """The reader moved the finding: new world position (and voxel position on its grid)."""
        centre = tuple(float(v) for v in centre_world_mm)
        index = self.findings.world_to_index(centre) if self.findings.geometry is not None else ()
        return self._change("move", finding_id, centre_world_mm=centre, centre_index_zyx=index,
                            status=self._edited(finding_id))

    def resize(self, finding_id: int, diameter_mm: float) -> Finding:
        return self._change("resize", finding_id, diameter_mm=float(diameter_mm), status=self._edited(finding_id))

    def add(self, centre_world_mm: Sequence[float], diameter_mm: float = 0.0, label: str = "nodule",
            note: str = "", **fields: Any) -> Finding:
        """A finding the reader drew: status ADDED, source "reader", probability 1."""
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
        finding = self.findings[finding_id]
        if finding.source == "reader":
            self._apply(Action("remove", finding_id, finding.to_dict(), None, _now()))
            return None
        return self.reject(finding_id)

    # undo / redo --------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def undo(self) -> Action | None:
        if not self.history:
            return None
        action = self.history.pop()
        self._encoded_history.pop()
        self.redo_stack.append(action)
        inverse = Action(f"undo {action.kind}", action.finding_id, action.after, action.before, _now())
        self._set(action.finding_id, action.before)
        self._saved(inverse)
        return action

    def redo(self) -> Action | None:
        if not self.redo_stack:
            return None
        action = self.redo_stack.pop()
        self._set(action.finding_id, action.after)
        self.history.append(action)
        self._encoded_history.append(json.dumps(action.to_dict()))
        self._saved(action)
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
            if action.after is None:
                latest.pop(action.finding_id, None)
            elif _decides(action):
                latest[action.finding_id] = {"status": str(action.after.get("status")), "action": action.kind,
                                             "time": action.time}
        return latest

    def reviewed_findings(self) -> Findings:
        """A copy of the findings whose provenance records the review (file, decisions, times)."""
        findings = self.findings.copy()
        findings.provenance = {**findings.provenance, "review": {
            "file": self.path.name, "actions": len(self.history),
            "decisions": {str(k): v for k, v in self.decisions().items()}}}
        return findings

    # persistence --------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write the whole state atomically and durably (fsync before the rename)."""
        header = {"format": FORMAT, "version": VERSION, "image_signature": self.image_signature,
                  "saved_at": _now()}
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
            return write_text(self.path, text, durable=True)
        except OSError as err:
            raise MedcadError(f"could not save the review ({err.strerror or err})", self.path) from None

    # internals ----------------------------------------------------------------------------------
    def _edited(self, finding_id: int) -> Status:
        """A reader's change to a model finding makes it EDITED; their own stay ADDED."""
        status = self.findings[finding_id].status
        return Status.ADDED if status == Status.ADDED else Status.EDITED

    def _change(self, kind: str, finding_id: int, **changes: Any) -> Finding:
        try:
            before = self.findings[finding_id]
        except KeyError:
            raise MedcadError(f"there is no finding {finding_id}") from None
        after = replace(before, **changes)
        self._apply(Action(kind, finding_id, before.to_dict(), after.to_dict(), _now()))
        return after

    def _apply(self, action: Action) -> None:
        self._set(action.finding_id, action.after)
        self.history.append(action)
        self._encoded_history.append(json.dumps(action.to_dict()))
        self.redo_stack.clear()
        self._saved(action)

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

    def _saved(self, action: Action) -> None:
        self.save()
        for listener in list(self.listeners):
            listener(action)


def _decides(action: Action) -> bool:
    """Whether ``action`` changed more of its finding than the note (see ReviewSession.decisions)."""
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
    if int(data.get("version", 0)) > VERSION:
        raise MedcadError(f"the review file is of a newer version ({data.get('version')}); update napari-medcad", path)
    return data


def load_review(path: str | os.PathLike, image_signature: str | None = None) -> Findings:
    """The reviewed findings in a review file (for export and the CLI); their
    ``image_signature`` names the image they belong to."""
    return ReviewSession.open(path, image_signature).reviewed_findings()
