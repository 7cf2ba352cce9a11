"""What the admin pages that change one decision setting (the face threshold, liveness) share: the controls
only preview a policy; Apply asks for confirmation, then saves it, tells the kiosk and records the change in
the audit log (kiosk.app.Admin, off the GUI thread). Also the strictness slider row and the button row they lay out alike."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QSlider, QWidget

from kiosk.app import Admin, AuditNotRecorded
from kiosk.qt.background import Background

log = logging.getLogger(__name__)


def slider_row(slider: QSlider, value_label: QLabel, title: str = "Strictness") -> QHBoxLayout:
    row = QHBoxLayout()
    row.addWidget(QLabel(title))
    row.addWidget(slider, 1)
    row.addWidget(value_label)
    return row


def button_row(*buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    row.addStretch(1)
    return row


class SettingPage(QWidget):
    """A page over one policy: ``policy`` is applied, ``preview_policy`` is what the controls show. Subclasses
    say what the setting is called (``SETTING``, ``EVENT``), describe a policy, save it and announce it."""

    SETTING = "setting"  # its name in messages, e.g. "threshold"

    def __init__(self, admin: Admin, policy, parent=None):
        super().__init__(parent)
        self.admin = admin  # saves the setting and writes its audit entry
        self.ops = Background(self)
        self.policy = policy          # applied
        self.preview_policy = policy  # what the controls show; applied only by Apply
        self.status = QLabel("")
        self.status.setWordWrap(True)

    # -- what a subclass provides -------------------------------------------------------------------------
    def _describe(self, policy) -> str:
        raise NotImplementedError

    def _save(self, policy, old) -> None:
        """Save ``policy`` (replacing ``old``) through kiosk.app.Admin, which audits the change (StorageError
        when saving fails, AuditNotRecorded when only the audit entry does)."""
        raise NotImplementedError

    def _announce(self, policy) -> None:
        """Tell the kiosk (a signal)."""
        raise NotImplementedError

    def _show(self) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        """Set the controls to ``preview_policy``, then ``_show``."""
        raise NotImplementedError

    def _warning(self) -> str:
        """Extra words for the confirmation of the change previewed (e.g. what switching off means)."""
        return ""

    # -- hooks (tests replace these instead of driving modal dialogs) -------------------------------------
    def confirm(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # -- the flow -----------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """The controls show something other than the applied setting."""
        return self.preview_policy != self.policy

    def apply(self) -> None:
        """Apply: asks for confirmation, then saves, tells the kiosk and records the change."""
        if not self.pending:
            self._say(f"Nothing to apply: this is the {self.SETTING} in use.")
            return
        old, new = self._describe(self.policy), self._describe(self.preview_policy)
        if not self.confirm(f"Apply the {self.SETTING}", f"Change the {self.SETTING} from {old} to {new}? It "
                            f"applies to the next person.{self._warning()}"):
            self._say(f"Not applied; the kiosk still uses {old}.")
            return
        self._commit()

    @property
    def saving(self) -> bool:
        """A save (or its audit entry) is still under way off the GUI thread."""
        return self.ops.running > 0

    def _commit(self) -> None:
        """Save off the GUI thread (a fleet's registry may take seconds to answer, or not at all); once saved,
        apply, tell the kiosk and record the change."""
        policy, applied = self.preview_policy, self.policy
        old, new = self._describe(applied), self._describe(policy)

        def saved(_result: object) -> None:
            changed = policy != self.policy
            self.policy = policy
            self._show()
            self._announce(policy)
            self._say(f"Applied: {self.SETTING} {new}" + (f"; it was {old}." if changed else "."))
            log.info("admin: %s %s -> %s", self.SETTING, old, new)

        def failed(exc: BaseException) -> None:
            if isinstance(exc, AuditNotRecorded):  # saved and in force; only its audit entry is missing
                saved(None)
                self._say(f"Applied: {self.SETTING} {new}, but {exc}", error=True)
                return
            self._say(f"Cannot save the {self.SETTING}: {exc}", error=True)
            log.error("cannot save the %s: %s", self.SETTING, exc)

        self._say(f"Saving the {self.SETTING}...")
        self.ops.run(lambda: self._save(policy, applied), saved, failed, busy=[self], key="save")

    def show_applied(self, policy) -> bool:
        """``policy`` was applied elsewhere (another kiosk of the fleet): show it as the one in use, without
        saving, announcing or recording it (that kiosk did); a change the admin is previewing here stays
        pending. False when it is the one in use already."""
        if policy == self.policy:
            return False
        previewing = self.pending
        self.policy = policy
        if not previewing:
            self.preview_policy = policy
        self._sync()
        self._say(f"Applied at another kiosk of the fleet: {self.SETTING} {self._describe(policy)}.")
        log.info("%s %s applied at another kiosk", self.SETTING, self._describe(policy))
        return True

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#c62828;" if error else "")
