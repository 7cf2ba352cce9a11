"""Admin page: the audit log (verification decisions and admin events), filtered by text, verdict and kind,
exported to CSV; its hash chain is checked and a break shown in a red banner naming the first broken entry.
The queries, the check and the export run off the GUI thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from kiosk.app import EVENT_LABELS, KIND_DECISION, Admin, AuditEntry, AuditLog, ChainBreak
from kiosk.errors import KioskError
from kiosk.qt.background import Background


def export_folder() -> Path:
    """Where an export is offered: the user's Documents folder, else their home (never the working directory,
    which may be the source checkout)."""
    for location in (QStandardPaths.StandardLocation.DocumentsLocation, QStandardPaths.StandardLocation.HomeLocation):
        folder = QStandardPaths.writableLocation(location)
        if folder and Path(folder).is_dir():
            return Path(folder)
    return Path.home()

log = logging.getLogger(__name__)

SHOWN = 2000  # rows in the table (the export has them all)
ALL_KINDS = "All kinds"
# the table's columns: the short ones sized to their content, Reason as wide as it needs (at most REASON_SHARE of
# the table, the rest in its tooltip), Detail last with the room that is left
COLUMNS = ("Time (UTC)", "Claimed ID", "Score", "Verdict / event", "Liveness", "Mode", "Reason", "Detail")
COL_VERDICT, COL_REASON, COL_DETAIL = COLUMNS.index("Verdict / event"), COLUMNS.index("Reason"), COLUMNS.index("Detail")
REASON_SHARE = 0.5
BANNER_STYLE = ("background: #b00020; color: white; font-weight: bold; padding: 6px; border-radius: 3px")


class AuditPage(QWidget):
    def __init__(self, audit: AuditLog, admin: Admin | None = None, parent=None):
        super().__init__(parent)
        self.audit = audit  # read here; the export is kiosk.app.Admin's (None: no export)
        self.admin = admin
        self.entries: list[AuditEntry] = []
        self.ops = Background(self)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by ID or reason")
        self.filter.textChanged.connect(self.refresh)
        self.verdict = QComboBox()
        self.verdict.addItems(["All", "ACCEPT", "REJECT"])
        self.verdict.currentIndexChanged.connect(self.refresh)
        self.kind = QComboBox()  # the data of each item: None (everything), "decision" or an event kind
        self.kind.addItem(ALL_KINDS, None)
        self.kind.addItem("Decisions", KIND_DECISION)
        for kind, label in EVENT_LABELS.items():
            self.kind.addItem(label, kind)
        self.kind.currentIndexChanged.connect(self.refresh)
        self.chain_break: ChainBreak | None = None
        self._notice = ""  # shown instead of the row count by the next refresh (the export's outcome)
        self.banner = QLabel("")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(BANNER_STYLE)
        self.banner.setVisible(False)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.clicked.connect(self.export)
        self.export_button.setEnabled(admin is not None)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)  # Detail, often empty: the room that is left
        self.table.verticalHeader().setVisible(False)
        self.status = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.filter, 1)
        row.addWidget(self.verdict)
        row.addWidget(self.kind)
        row.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

    def choose_export_path(self) -> str:
        path, _ = QFileDialog.getSaveFileName(self, "Export audit log", str(export_folder() / "audit.csv"),
                                              "CSV files (*.csv)")
        return path

    def _query(self, limit: int) -> Callable[[], list[AuditEntry]]:
        audit, text, verdict, kind = self.audit, self.filter.text(), self.verdict.currentText(), self.kind.currentData()
        return lambda: audit.entries(text, None if verdict == "All" else verdict, limit=limit, kind=kind)

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
                      e.label, "" if e.liveness is None else f"{e.liveness:.3f}", e.mode, e.reason, e.detail)
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                if c in (COL_REASON, COL_DETAIL):
                    item.setToolTip(value)
                self.table.setItem(r, c, item)
        self.fit_columns()
        notice, self._notice = self._notice, ""
        self.status.setText(notice or f"{len(self.entries)} entries shown" + (" (newest first, limited)"
                                                                               if len(self.entries) == SHOWN else ""))

    def fit_columns(self) -> None:
        for column in range(len(COLUMNS) - 1):
            self.table.resizeColumnToContents(column)
        cap = int(self.table.viewport().width() * REASON_SHARE)
        if cap > 0 and self.table.columnWidth(COL_REASON) > cap:
            self.table.setColumnWidth(COL_REASON, cap)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.fit_columns()

    def export(self) -> None:
        path = self.choose_export_path()
        if not path:
            return
        admin, query = self.admin, self._query(10_000_000)
        self.status.setText("Exporting...")

        def exported(count: int) -> None:
            self._notice = f"Exported {count} entries to {path}"
            self.status.setText(self._notice)
            log.info("audit log exported to %s (%d rows)", path, count)
            self.refresh()  # the export is itself an audited event: show it

        def failed(exc: BaseException) -> None:
            if not isinstance(exc, (OSError, KioskError)):
                log.error("audit export failed", exc_info=exc)
            self.status.setText(f"Export failed: {exc}")

        self.ops.run(lambda: admin.export_audit(path, query()), exported, failed, busy=[self.export_button])

    def check_chain(self) -> None:
        """Verify the hash chain in the background; a break shows the red banner naming the first broken entry."""
        self.ops.run(self.audit.verify_chain, self._show_chain, self._on_check_failed, key="verify")

    def _show_chain(self, broken: ChainBreak | None) -> None:
        self.chain_break = broken
        if broken is None:
            self.banner.setVisible(False)
            self.banner.setText("")
            return
        log.error("the audit log's hash chain is broken at %s", broken.describe())
        self.banner.setText(f"The audit log was altered: {broken.describe()}. Entries from there on cannot be "
                            f"trusted; 'kiosk audit verify' checks it from a terminal.")
        self.banner.setVisible(True)

    def _on_check_failed(self, exc: BaseException) -> None:
        log.error("cannot check the audit log's hash chain: %s", exc)
        self.chain_break = None
        self.banner.setText(f"The audit log's hash chain cannot be checked: {exc}")
        self.banner.setVisible(True)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self.refresh()
        self.check_chain()
