"""The review table: a Qt model over a ReviewSession's own findings list, and its sort/filter proxy.

No copy of the findings is made, so 5,000 rows cost nothing to build, and a decision repaints
one row's changed cells (a change outside the sort column costs the proxy no re-sort).
"""

from __future__ import annotations

import math

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt

from ..core.findings import Finding

SORT_ROLE = Qt.ItemDataRole.UserRole
COLUMNS = ("id", "class", "probability", "x mm", "y mm", "z mm", "diameter mm", "status", "note")
ALL_STATUSES = "all"
#: the table columns a finding's field is shown in (a decision repaints only those cells)
FIELD_COLUMNS = {"label": ("class",), "status": ("status",), "note": ("note",)}


class FindingsTableModel(QAbstractTableModel):
    """The session's findings list itself (no copy): a decision is one ``dataChanged``."""

    def __init__(self):
        super().__init__()
        self.items: list[Finding] = []
        self.rows: dict[int, int] = {}

    def set_items(self, items: list[Finding]) -> None:
        self.beginResetModel()
        self.items = items
        self.rows = {f.id: row for row, f in enumerate(items)}
        self.endResetModel()

    def finding_changed(self, finding_id: int, fields=None) -> None:
        """Repaint the finding's row, or only the cells of ``fields``: a change outside the sort
        column (probability) then costs the proxy no re-sort."""
        row = self.rows.get(finding_id)
        if row is None:
            return
        columns = [COLUMNS.index(c) for f in fields for c in FIELD_COLUMNS.get(f, ())] if fields else []
        if fields is None or not columns:
            columns = [0, len(COLUMNS) - 1]
        self.dataChanged.emit(self.index(row, min(columns)), self.index(row, max(columns)))

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def value(self, finding: Finding, column: int):
        name = COLUMNS[column]
        if name == "id":
            return finding.id
        if name == "class":
            return finding.label
        if name == "probability":
            return finding.probability
        if name.endswith(" mm") and name[0] in "xyz":
            axis = "xyz".index(name[0])
            return finding.centre_world_mm[axis] if axis < len(finding.centre_world_mm) else math.nan
        if name == "diameter mm":
            return finding.diameter_mm
        if name == "status":
            return finding.status.value
        return finding.note

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        finding = self.items[index.row()]
        if role == SORT_ROLE:
            return self.value(finding, index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.value(finding, index.column())
            if isinstance(value, float):
                if math.isnan(value):
                    return ""
                return f"{value:.3f}" if COLUMNS[index.column()] == "probability" else f"{value:.1f}"
            return str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and COLUMNS[index.column()] not in ("class", "status", "note"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class FindingsFilter(QSortFilterProxyModel):
    """Sorts on raw values and hides findings below a probability or of another status."""

    def __init__(self):
        super().__init__()
        self.min_probability = 0.0
        self.status = ALL_STATUSES
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)

    def set_filter(self, min_probability: float, status: str) -> None:
        self.min_probability, self.status = float(min_probability), status
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row, source_parent):
        finding = self.sourceModel().items[source_row]
        if finding.probability < self.min_probability:
            return False
        return self.status == ALL_STATUSES or finding.status.value == self.status
