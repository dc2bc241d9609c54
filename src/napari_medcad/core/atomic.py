"""Files that must never be seen half-written: write beside the target, then rename over it.

Review state, exports, pipelines, model cards and images all go through here.  A rename within
one folder is atomic on POSIX and Windows, so a reader (or a process restarted after a kill)
sees either the old file or the new one, never a mixture.  ``durable=True`` also flushes the
data to the disk before the rename, for files whose loss would lose a reader's work.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _create_beside(path: Path, suffix: str) -> Path:
    """A new empty file ``.NAME.<random>.partial<suffix>`` beside ``path``.

    Created as open() creates files (mode 0666 less the umask), not as mkstemp does (0600):
    the rename makes it the real file, which must get the permissions any other file written
    here gets.  The name pattern is what ``review.remove_stale_partials`` looks for.
    """
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial{suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def replacing(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path``.

    ``suffix`` keeps the extension a writer needs to pick its format (``.nii.gz``).  On any
    error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    temporary = _create_beside(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``durable`` fsyncs before the rename."""
    path = Path(path)
    with replacing(path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
    return path
