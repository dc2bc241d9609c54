"""Which review a findings layer starts, for the Review widget.

The one saved for its image if it was made on these findings; a fresh one (the saved one kept
aside) when the Inference widget replaced edited findings with the reader's consent
(``REPLACES_REVIEW`` in the new Points layer's metadata); and when the saved review was made
on other findings, the reader chooses.  Apart from the widget because none of it is the
widget's state: it is the decision, its one dialog, and the memory of a start that failed.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QMessageBox, QWidget

from ...core.review import ReviewSession, file_identity
from ..findings_layers import REPLACES_REVIEW, base_findings, findings_count
from ..layers import META_KEY


def open_session(parent: QWidget, viewer, layer, signature: str, path: Path) -> tuple[ReviewSession | None, bool]:
    """The review of ``layer``'s findings, and whether a saved review was kept aside for it.

    The saved review if it was made on these findings; a fresh one (the saved one kept aside)
    if the findings replaced reviewed ones with the reader's consent, or if the reader chooses
    to start over a review made on other findings; None if the layer was closed while the
    reader was asked."""
    findings = base_findings(layer)
    restart = bool(layer.metadata.get(META_KEY, {}).get(REPLACES_REVIEW))
    if not restart and path.exists():
        saved = ReviewSession.open(path, signature)  # refused here if damaged or of another image
        if saved.began_with(findings):
            return saved, False  # the file is read once: 5,000 findings take 0.1 s to parse
        restart = not (saved.history or saved.redo_stack) or ask_start_over(parent, layer, saved)
        if layer not in viewer.layers:
            return None, False
    set_aside = restart and path.exists()
    return ReviewSession.start(findings, signature, path, restart=restart), set_aside


def ask_start_over(parent: QWidget, layer, saved: ReviewSession) -> bool:
    """Whether the reader starts a new review of ``layer``'s findings rather than resuming
    ``saved``, which was made on other findings of the same image."""
    actions = len(saved.history)
    box = QMessageBox(QMessageBox.Icon.Question, "Resume the saved review?",
                      f"A saved review of this image ({actions} action{'' if actions == 1 else 's'}, "
                      f"{findings_count(len(saved.findings))}) was made on other findings than those in "
                      f"'{layer.name}'.\n\nResume it: its findings replace those shown.\n"
                      f"Start over: review the findings in '{layer.name}'; the saved review is kept "
                      f"aside in {saved.path.parent}.", parent=parent)
    resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
    start_over = box.addButton("Start over", QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(resume)
    box.setEscapeButton(resume)
    box.exec()
    return box.clickedButton() is start_over


class FailedStart:
    """What the last automatic start failed on: it is not retried, nor its error shown again,
    until the findings, their image (or its data) or the review file change."""

    def __init__(self) -> None:
        self._last: tuple | None = None

    def remember(self, layer, image_layer, path: Path | None) -> None:
        self._last = (layer, image_layer, _data_id(image_layer), path, file_identity(path))

    def forget(self) -> None:
        self._last = None

    def failed_before(self, layer, image_layer) -> bool:
        """The last automatic start failed on these very layers, and the review file is as it was."""
        if self._last is None:
            return False
        points, image, data, path, state = self._last
        return points is layer and image is image_layer and data == _data_id(image_layer) and state == file_identity(path)


def _data_id(layer) -> int | None:
    return id(layer.data) if layer is not None else None
