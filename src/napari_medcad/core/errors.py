"""The one error type users can cause, and how it reads.

Anything a user can trigger by giving us a bad file or an impossible parameter raises
:class:`MedcadError`.  Its ``str`` is a single line that names the file (when there is one)
and the reason in words a clinician understands; the CLI prints it and exits 2, napari shows
it as a notification.  Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import os


class MedcadError(Exception):
    """A problem with the user's input, with a one-line message."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = " ".join(str(reason).split())  # never more than one line
        self.path = os.fspath(path) if path is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.reason}" if self.path else self.reason


def shown_path(path: str | os.PathLike) -> str:
    """A path as a person can read it: a name that is not UTF-8 (an old Latin-1 export) shows its
    odd bytes as ``\xe9`` instead of the lone surrogates Python keeps for them, which terminals
    and Qt cannot print."""
    name = os.fspath(path)
    if isinstance(name, bytes):
        return name.decode("utf-8", "backslashreplace")
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def first_line(err: BaseException, limit: int = 160) -> str:
    """A library's exception as a one-line reason: the first non-empty line of its message (its
    type's name if it has none), at most ``limit`` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[0] if lines else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Cancelled(Exception):
    """Raised inside a long computation when its caller asked it to stop."""
