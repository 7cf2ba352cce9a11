"""Admin page: the audit log, filtered, exported to CSV; the queries and the export run off the GUI thread."""

from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import KioskError
from ..storage import AuditEntry, AuditLog
from .background import Background

log = logging.getLogger(__name__)

SHOWN = 2000  # rows in the table (the export has them all)


class AuditPage(QWidget):
    def __init__(self, audit: AuditLog, parent=None):
        super().__init__(parent)
        self.audit = audit
        self.entries: list[AuditEntry] = []
        self.ops = Background(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by ID or reason")
        self.filter.textChanged.connect(self.refresh)
        self.verdict = QComboBox()
        self.verdict.addItems(["All", "ACCEPT", "REJECT"])
        self.verdict.currentIndexChanged.connect(self.refresh)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.clicked.connect(self.export)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Time (UTC)", "Claimed ID", "Score", "Verdict", "Reason"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        row.addWidget(self.verdict)
        row.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

    def choose_export_path(self) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Export audit log", "audit.csv", "CSV files (*.csv)")
        return path

    def _query(self, limit: int) -> Callable[[], list[AuditEntry]]:
        audit, text, verdict = self.audit, self.filter.text(), self.verdict.currentText()
        return lambda: audit.entries(text, None if verdict == "All" else verdict, limit=limit)

    def refresh(self) -> None:
        self.ops.run(self._query(SHOWN), self._show_entries, self._on_read_failed, key="query")

    def _on_read_failed(self, exc: BaseException) -> None:
        # the store turns every sqlite3 error (a damaged file too) into a StorageError
        log.error("cannot read the audit log: %s", exc)
        self.entries = []
        self.table.setRowCount(0)
        self.status.setText(f"The audit log cannot be read: {exc}")

    def _show_entries(self, entries: list[AuditEntry]) -> None:
        self.entries = entries
        self.table.setRowCount(len(self.entries))
        for r, e in enumerate(self.entries):
            values = (e.time.replace("T", " ")[:19], e.claimed_id, "" if e.score is None else f"{e.score:.3f}",
                      e.verdict, e.reason)
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnToContents(0)
        self.status.setText(f"{len(self.entries)} attempt(s) shown" + (" (newest first, limited)"
                                                                      if len(self.entries) == SHOWN else ""))

    def export(self) -> None:
        path = self.choose_export_path()
        if not path:
            return
        audit, query = self.audit, self._query(10_000_000)
        self.status.setText("Exporting...")

        def exported(count: int) -> None:
            self.status.setText(f"Exported {count} attempt(s) to {path}")
            log.info("audit log exported to %s (%d rows)", path, count)

        def failed(exc: BaseException) -> None:
            if not isinstance(exc, (OSError, KioskError)):
                log.error("audit export failed", exc_info=exc)
            self.status.setText(f"Export failed: {exc}")

        self.ops.run(lambda: audit.export_csv(path, query()), exported, failed, busy=[self.export_button])

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
