"""Progress and cancellation for long computations, without Qt.

Every long core function takes ``progress: ProgressFn | None``, a callback called between
units of work with a :class:`Progress`.  The callback may raise :class:`Cancelled` to stop the
work there.  Tests and the CLI call the functions directly; napari widgets wrap them with
:func:`iterate` into a generator that a napari generator worker runs: it yields each
:class:`Progress` to the GUI thread and, when the worker is quit (Cancel), stops the work at
its next unit and returns nothing.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator, Optional

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units finished; ``message`` says what is being done."""

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressFn = Callable[[Progress], None]


def report(progress: Optional[ProgressFn], done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if there is one (this is where a cancelled job stops)."""
    if progress is not None:
        progress(Progress(int(done), int(total), message))


def scaled(progress: Optional[ProgressFn], start: float, stop: float, total: int = 1000) -> Optional[ProgressFn]:
    """A callback for a sub-task that maps its 0..1 onto ``start..stop`` of the parent's 0..1."""
    if progress is None:
        return None

    def forward(inner: Progress) -> None:
        fraction = start + (stop - start) * inner.fraction
        progress(Progress(int(round(fraction * total)), total, inner.message))

    return forward


def iterate(
    function: Callable[..., Any], *args, cancel_event: threading.Event | None = None, **kwargs
) -> Generator[Progress, None, Any]:
    """Run ``function(*args, progress=..., **kwargs)`` in a thread; yield its progress.

    The generator's return value is the function's result; its exceptions are re-raised here.
    Setting ``cancel_event``, or closing the generator, makes the function's next progress call
    raise :class:`Cancelled`, so the work stops at its next unit and its result is dropped.
    """
    events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
    cancel = cancel_event if cancel_event is not None else threading.Event()

    def on_progress(item: Progress) -> None:
        if cancel.is_set():
            raise Cancelled()
        events.put(("progress", item))

    def target() -> None:
        try:
            events.put(("result", function(*args, progress=on_progress, **kwargs)))
        except BaseException as err:  # handed to the consumer, re-raised there
            events.put(("error", err))

    thread = threading.Thread(target=target, name=f"medcad-{getattr(function, '__name__', 'job')}", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "progress":
                yield value
            elif kind == "result":
                return value
            else:
                raise value
    finally:
        cancel.set()  # the worker thread ends at its next progress call; nobody waits for it


def run(generator: Generator[Progress, None, Any], progress: Optional[ProgressFn] = None) -> Any:
    """Drive a progress generator to its end synchronously; return its return value."""
    while True:
        try:
            item = next(generator)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(item)
