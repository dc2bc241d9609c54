"""The Review widget's findings table: sorted, filtered, and read by finding id.

The table's model is the review session's own list (``napari.findings_table``), so a row
number read before the table is rebuilt may name another finding, or none, afterwards.  The
widget therefore keeps its current finding by id; this table turns ids into rows and rows into
ids, and moves the current row.  Apart from the widget so that the widget is the controls, the
keyboard and the view, not the bookkeeping between the table's rows and the proxy's.
"""

from __future__ import annotations

from qtpy.QtCore import QItemSelectionModel, Qt
from qtpy.QtWidgets import QAbstractItemView, QComboBox, QDoubleSpinBox, QHBoxLayout, QHeaderView, QLabel, QTableView

from ...core.findings import Status
from ..findings_table import ALL_STATUSES, FindingsFilter, FindingsTableModel


class ReviewTable(QTableView):
    """One finding per row, by probability first; one row at a time; read only; with its filter.

    ``findings`` is the session's list as a table model, ``proxy`` what is shown (sorted and
    filtered by ``min_probability`` and ``status_filter``)."""

    def __init__(self):
        super().__init__()
        self.min_probability = QDoubleSpinBox()
        self.min_probability.setRange(0.0, 1.0)
        self.min_probability.setSingleStep(0.05)
        self.min_probability.setDecimals(2)
        self.status_filter = QComboBox()
        self.status_filter.addItems([ALL_STATUSES] + [s.value for s in Status])
        self.min_probability.valueChanged.connect(self.apply_filter)
        self.status_filter.currentIndexChanged.connect(self.apply_filter)

        self.findings = FindingsTableModel()
        self.proxy = FindingsFilter()
        self.proxy.setSourceModel(self.findings)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.sortByColumn(2, Qt.SortOrder.DescendingOrder)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(20)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.horizontalHeader().setStretchLastSection(True)

    def filter_row(self) -> QHBoxLayout:
        """The filter controls, labelled, in one row for the widget's layout."""
        row = QHBoxLayout()
        row.addWidget(QLabel("min probability"))
        row.addWidget(self.min_probability)
        row.addWidget(QLabel("status"))
        row.addWidget(self.status_filter, 1)
        return row

    def apply_filter(self, *args) -> None:
        self.proxy.set_filter(self.min_probability.value(), self.status_filter.currentText())

    def id_at(self, proxy_index) -> int | None:
        """The finding id of a row of the table (None for no row)."""
        if not proxy_index.isValid():
            return None
        row = self.proxy.mapToSource(proxy_index).row()
        return self.findings.items[row].id if 0 <= row < len(self.findings.items) else None

    def id_after_current(self) -> int | None:
        """The finding id of the row below the current one (None if there is none)."""
        return self.id_at(self.proxy.index(self.selectionModel().currentIndex().row() + 1, 0))

    def visible_ids(self) -> list[int]:
        """Finding ids in table order (after sorting and filtering)."""
        return [self.findings.items[self.proxy.mapToSource(self.proxy.index(row, 0)).row()].id
                for row in range(self.proxy.rowCount())]

    def select(self, finding_id: int) -> bool:
        """Make the finding's row the current row; False if it has none or is filtered out."""
        row = self.findings.rows.get(finding_id)
        if row is None:
            return False
        index = self.proxy.mapFromSource(self.findings.index(row, 0))
        if not index.isValid():
            return False
        self._make_current(index)
        return True

    def step(self, delta: int) -> None:
        """Move the current row ``delta`` rows, within the table (no current row: the first)."""
        rows = self.proxy.rowCount()
        if not rows:
            return
        index = self.selectionModel().currentIndex()
        row = 0 if not index.isValid() else min(max(index.row() + delta, 0), rows - 1)
        self._make_current(self.proxy.index(row, 0))

    def _make_current(self, index) -> None:
        self.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.scrollTo(index)
