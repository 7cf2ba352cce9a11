"""Admin page: the audit log, filtered, exported to CSV."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QLabel,
                               QLineEdit, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..storage import AuditEntry, AuditLog, StorageError

log = logging.getLogger(__name__)

SHOWN = 2000  # rows in the table (the export has them all)


class AuditPage(QWidget):
    def __init__(self, audit: AuditLog, parent=None):
        super().__init__(parent)
        self.audit = audit
        self.entries: list[AuditEntry] = []
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

    def _query(self, limit: int) -> list[AuditEntry]:
        verdict = self.verdict.currentText()
        return self.audit.entries(self.filter.text(), None if verdict == "All" else verdict, limit=limit)

    def refresh(self) -> None:
        try:
            self.entries = self._query(SHOWN)
        except StorageError as exc:  # the store turns every sqlite3 error (a damaged file too) into this
            log.error("cannot read the audit log: %s", exc)
            self.entries = []
            self.table.setRowCount(0)
            self.status.setText(f"The audit log cannot be read: {exc}")
            return
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
        try:
            count = self.audit.export_csv(path, self._query(10_000_000))
        except (OSError, StorageError) as exc:
            self.status.setText(f"Export failed: {exc}")
            return
        self.status.setText(f"Exported {count} attempt(s) to {path}")
        log.info("audit log exported to %s (%d rows)", path, count)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
