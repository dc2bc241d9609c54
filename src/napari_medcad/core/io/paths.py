"""Checks and format detection shared by every reader: turn OS-level surprises into MedcadError.

A user may hand us a FIFO, a device, an unreadable or empty file, or a folder of junk; each must
give a one-line reason, never a traceback or a hang.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import MedcadError

ITK_EXTENSIONS = (".nii.gz", ".nii", ".hdr", ".nrrd", ".nhdr", ".mha", ".mhd")  # .hdr: a NIfTI-1 pair's header
TIFF_EXTENSIONS = (".tif", ".tiff")
PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima")
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")

#: how many files of a folder we peek at to decide whether it is a DICOM folder
_FOLDER_PEEK = 64


def extension_of(path: str | os.PathLike) -> str:
    """Lower-case extension, with '.nii.gz' kept whole."""
    name = os.fspath(path).lower()
    for ext in ITK_EXTENSIONS + TIFF_EXTENSIONS + PICTURE_EXTENSIONS + DICOM_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def check_readable(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is a readable regular file or folder; else raise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise MedcadError("no such file or folder", path) from None
    except PermissionError:
        raise MedcadError("permission denied", path) from None
    except OSError as err:
        raise MedcadError(f"cannot access it ({err.strerror or err})", path) from None
    if stat.S_ISDIR(mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise MedcadError("permission denied: the folder cannot be listed", path)
        return path
    if not stat.S_ISREG(mode):
        raise MedcadError("not a regular file (a device, pipe or socket cannot be read as an image)", path)
    if not os.access(path, os.R_OK):
        raise MedcadError("permission denied: the file cannot be read", path)
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise MedcadError("permission denied: the file cannot be read", path) from None
    except OSError as err:
        raise MedcadError(f"cannot read it ({err.strerror or err})", path) from None
    if path.stat().st_size == 0:
        raise MedcadError("the file is empty", path)
    return path


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """True if the file carries the 'DICM' marker after the 128-byte preamble (Part 10 file)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


#: the value representations an explicit-VR data element can start with
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD",
        b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI",
        b"UL", b"UN", b"UR", b"US", b"UT", b"UV"}


def has_dicom_start(path: str | os.PathLike) -> bool:
    """True if the file begins like a DICOM data set stored without preamble and file meta.

    Older exports and some PACS write the bare data set: no 128-byte preamble, no 'DICM', often
    no extension.  Such a file starts with its lowest element, a tag of group 0x0002 (file meta)
    or 0x0008 (SOP class, image type...), followed by an explicit VR or, for implicit VR, a
    length that fits in the file.  Random bytes pass both tests about once in ten million.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    if len(head) < 8:
        return False
    for order in ("<", ">"):
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in (0x0002, 0x0008) or element > 0x1FFF:
            continue
        if head[4:6] in _VRS:
            return True
        (length,) = struct.unpack(order + "I", head[4:8])
        if order == "<" and length <= size - 8:  # implicit VR is always little-endian
            return True
    return False


def looks_like_dicom(path: str | os.PathLike) -> bool:
    """A DICOM extension, the Part 10 'DICM' marker, or a bare data set's first element."""
    path = Path(path)
    return extension_of(path) in DICOM_EXTENSIONS or has_dicom_preamble(path) or has_dicom_start(path)


def iter_folder_files(folder: Path, limit: int | None = None):
    """Regular files below ``folder`` (recursively, sorted, hidden files skipped)."""
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = Path(root) / name
            if full.is_file():
                yield full
                count += 1
                if limit is not None and count >= limit:
                    return


def folder_is_empty(folder: str | os.PathLike) -> bool:
    """True if the folder has no entries at all (hidden ones aside)."""
    try:
        with os.scandir(folder) as entries:
            return not any(not entry.name.startswith(".") for entry in entries)
    except OSError:
        return False


def folder_has_dicom(folder: str | os.PathLike) -> bool:
    """Cheap test used by the napari reader to claim or decline a folder."""
    return any(has_dicom_preamble(p) or has_dicom_start(p) for p in iter_folder_files(Path(folder), _FOLDER_PEEK))


def is_supported_path(path: str | os.PathLike) -> bool:
    """Whether one of our readers should try this path (cheap; no decoding)."""
    path = Path(path)
    if path.is_dir():
        return folder_has_dicom(path)
    ext = extension_of(path)
    if ext in ITK_EXTENSIONS + TIFF_EXTENSIONS + PICTURE_EXTENSIONS + DICOM_EXTENSIONS:
        return True
    return path.is_file() and (has_dicom_preamble(path) or has_dicom_start(path))


def check_memory(n_bytes: int, path: str | os.PathLike) -> None:
    """Refuse images that cannot fit in memory (a corrupt header can claim terabytes)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 64 * 2**30
    if n_bytes > 0.8 * total:
        raise MedcadError(
            f"the header claims an image of {n_bytes / 2**30:.1f} GiB, more than this machine's "
            f"memory ({total / 2**30:.1f} GiB); the file is corrupt or too large",
            path,
        )


# ------------------------------------------------------------------------------------------
# file names SimpleITK can take

#: formats whose header names a separate data file, found beside the header's own name
_DETACHED_HEADER_EXTENSIONS = (".nhdr", ".mhd", ".hdr")


def itk_can_take(name: str) -> bool:
    """Whether SimpleITK can be given ``name``: it must be encodable as UTF-8.

    A file name that is not valid UTF-8 (a Latin-1 name from an old export or a zip archive)
    reaches Python as a str with surrogate escapes; SimpleITK's wrapping cannot convert it and
    aborts the whole process (std::logic_error) or raises TypeError.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextmanager
def itk_file_names(paths: Sequence[str | os.PathLike]) -> Iterator[list[str]]:
    """Names under which SimpleITK can open (or write) ``paths``, valid while the block runs.

    Every path handed to SimpleITK goes through here.  A path SimpleITK can take is passed
    as it is; any other is reached through a symbolic link with a UTF-8 name in a private
    temporary folder (removed afterwards): a link to its folder when only the folder's name
    is the problem (so a detached header still finds its data file beside it), else a link
    to the file itself with the same extension (ITK picks its reader by the extension).  A
    detached header (.nhdr, .mhd, .hdr) whose own name is not UTF-8 cannot be read that way, as
    the header names its data file relative to itself: that is refused in one line.
    """
    names = [os.fspath(p) for p in paths]
    if all(itk_can_take(name) for name in names):
        yield names
        return
    with tempfile.TemporaryDirectory(prefix="medcad-itk-") as alias_folder:
        if not itk_can_take(alias_folder):
            raise MedcadError("its name is not valid UTF-8 text, which the image library cannot open; rename it",
                              names[0])
        folders: dict[str, str] = {}
        yield [_itk_alias(name, alias_folder, index, folders) for index, name in enumerate(names)]


def _itk_alias(name: str, alias_folder: str, index: int, folders: dict[str, str]) -> str:
    """``name`` itself, or a name through a link in ``alias_folder`` (see :func:`itk_file_names`)."""
    if itk_can_take(name):
        return name
    absolute = os.path.abspath(name)
    folder, base = os.path.split(absolute)
    try:
        if itk_can_take(base):
            if folder not in folders:
                folders[folder] = os.path.join(alias_folder, f"folder{len(folders)}")
                os.symlink(folder, folders[folder])
            return os.path.join(folders[folder], base)
        ext = extension_of(base)
        if ext in _DETACHED_HEADER_EXTENSIONS:
            raise MedcadError(
                "its name is not valid UTF-8 text, which the image library cannot open, and a header "
                "with a separate data file cannot be read under another name; rename it",
                name,
            )
        suffix = base[-len(ext):] if ext and itk_can_take(base[-len(ext):]) else ""
        alias = os.path.join(alias_folder, f"file{index}{suffix}")
        os.symlink(absolute, alias)
        return alias
    except OSError as err:  # a file system without symbolic links
        raise MedcadError(
            f"its name is not valid UTF-8 text, which the image library cannot open ({err.strerror or err}); "
            "rename it",
            name,
        ) from None


# ------------------------------------------------------------------------------------------
# keeping third-party chatter off the user's terminal

_NATIVE_LOCK = threading.Lock()
_native_depth = 0
_native_saved: dict[int, int] = {}
_native_sink = None


class CapturedText:
    """What was printed while a capturing block ran (filled in when the block ends)."""

    text = ""


@contextmanager
def native_output_captured():
    """Collect what C/C++ libraries (ITK, GDCM, MetaIO, libjpeg...) print on descriptors 1 and 2.

    Those libraries write warnings and errors straight to the process's stderr (and ITK's
    JPEG reader even to stdout), bypassing Python: a failed read could print several lines
    before our one-line message, and a merely odd file could spoil the JSON `info` prints.
    While the block runs, descriptors 1 and 2 point at a temporary file; its text is handed
    back in ``CapturedText.text`` so a caller may use it as the reason of an error.  Nested
    and concurrent uses share one redirection (the last one out restores the terminal).
    """
    global _native_depth, _native_sink
    captured = CapturedText()
    start = 0
    with _NATIVE_LOCK:
        if _native_depth == 0:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            try:
                sink = tempfile.TemporaryFile()
            except OSError:
                sink = None
            if sink is not None:
                for fd in (1, 2):
                    try:
                        _native_saved[fd] = os.dup(fd)
                        os.dup2(sink.fileno(), fd)
                    except OSError:  # no such descriptor: nothing to protect there
                        _native_saved.pop(fd, None)
            _native_sink = sink
        _native_depth += 1
        if _native_sink is not None:
            start = os.lseek(_native_sink.fileno(), 0, os.SEEK_END)
    try:
        yield captured
    finally:
        with _NATIVE_LOCK:
            sink = _native_sink
            if sink is not None:
                try:
                    end = os.lseek(sink.fileno(), 0, os.SEEK_END)
                    data = os.pread(sink.fileno(), min(end - start, 1 << 16), start) if end > start else b""
                    captured.text = data.decode("utf-8", "replace")
                except OSError:
                    pass
            _native_depth -= 1
            if _native_depth == 0:
                for fd, saved in list(_native_saved.items()):
                    try:
                        os.dup2(saved, fd)
                    finally:
                        os.close(saved)
                        del _native_saved[fd]
                if sink is not None:
                    sink.close()
                _native_sink = None


@contextmanager
def quiet_libraries(*logger_names: str):
    """Silence Python warnings and the named libraries' log records while reading a file.

    A reader reports problems by raising MedcadError; warnings printed by pydicom, tifffile or
    numpy on a malformed file would otherwise reach the terminal before that one line.  The
    records are kept in ``CapturedText.text``.
    """
    captured = CapturedText()
    lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):  # pragma: no cover - trivial
            try:
                lines.append(record.getMessage())
            except Exception:
                pass

    handler = _Keep(logging.WARNING)
    loggers = [logging.getLogger(name) for name in logger_names]
    saved = [(lg.propagate, lg.handlers[:]) for lg in loggers]
    for lg in loggers:
        lg.handlers = [handler]  # some libraries (nibabel) attach their own stderr handler
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for lg, (propagate, handlers) in zip(loggers, saved):
            lg.handlers = handlers
            lg.propagate = propagate
        captured.text = "\n".join(lines)
