"""Run a core computation off the GUI thread with a progress bar and a Cancel button.

Every dock widget uses :class:`JobRunner`: it turns a core function that takes a ``progress``
callback into a napari generator worker (see :func:`napari_medcad.core.progress.iterate`), so
the event loop stays free, the bar moves per unit of work, Cancel stops the work at its next
unit and a cancelled job delivers nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..core.errors import MedcadError
from ..core.progress import Progress, iterate


@dataclass(frozen=True)
class UserError:
    """A MedcadError carried back as a job's result, so it is shown once, without a traceback
    (raised, it would also reach the event loop through the worker's error path)."""

    error: MedcadError


def notify_error(err: BaseException) -> None:
    """User errors as a one-line notification; anything else through napari's error path."""
    from napari.utils.notifications import show_error

    if isinstance(err, MedcadError):
        show_error(str(err))
    else:
        show_error(f"{type(err).__name__}: {err}")


class JobRunner(QWidget):
    """A progress bar, a status line and a Cancel button that drive one job at a time."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.worker = None
        self._cancel_event = threading.Event()
        self.last_error: Optional[BaseException] = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        function: Callable[..., Any],
        *args,
        on_result: Callable[[Any], None],
        on_finish: Callable[[], None] | None = None,
        **kwargs,
    ):
        """Run ``function(*args, progress=..., **kwargs)`` in a worker; ``on_result`` gets its value."""
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError("a job is already running")
        self.last_error = None
        self.bar.setValue(0)
        self.status.setText("starting...")
        self._cancel_event = threading.Event()
        worker = create_worker(
            iterate, function, *args, cancel_event=self._cancel_event, _start_thread=False, **kwargs
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda value: self._on_returned(value, on_result))
        worker.errored.connect(self._on_error)
        worker.finished.connect(lambda: self._on_finished(on_finish))
        self.worker = worker
        self.cancel_button.setEnabled(True)
        worker.start()
        return worker

    def cancel(self) -> None:
        if self.worker is not None:
            self._cancel_event.set()
            self.status.setText("cancelling...")
            self.cancel_button.setEnabled(False)
            self.worker.quit()

    # slots (GUI thread) -------------------------------------------------------------------
    def _on_progress(self, item: Progress) -> None:
        self.bar.setValue(int(round(item.fraction * 1000)))
        text = f"{item.message} ({item.done}/{item.total})" if item.total > 1 else item.message
        self.status.setText(text)

    def _on_returned(self, value: Any, on_result: Callable[[Any], None]) -> None:
        self.bar.setValue(1000)
        self.status.setText("done")
        on_result(value)

    def _on_error(self, err: BaseException) -> None:
        self.last_error = err
        self.status.setText(str(err) if isinstance(err, MedcadError) else f"failed: {err}")
        notify_error(err)

    def _on_finished(self, on_finish: Callable[[], None] | None) -> None:
        if self.worker is not None and self.worker.abort_requested:
            self.status.setText("cancelled: nothing was added")
            self.bar.setValue(0)
        self.worker = None
        self.cancel_button.setEnabled(False)
        if on_finish is not None:
            on_finish()
