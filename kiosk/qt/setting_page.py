"""What the admin pages that change one decision setting (the face threshold, liveness) share: the controls
only preview a policy; Apply asks for confirmation, then saves it, tells the kiosk and records the change in
the audit log (off the GUI thread). Also the strictness slider row and the button row they lay out alike."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QHBoxLayout, QLabel, QMessageBox, QPushButton, QSlider, QWidget

from kiosk.qt.background import Background
from kiosk.storage import SettingsStore

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
    EVENT = ""           # the audit event kind of a change

    def __init__(self, settings: SettingsStore, policy, audit=None, parent=None):
        super().__init__(parent)
        self.settings = settings
        self.audit = audit  # kiosk.storage.AuditLog, or None (no audit entries)
        self.ops = Background(self)
        self.policy = policy          # applied
        self.preview_policy = policy  # what the controls show; applied only by Apply
        self.status = QLabel("")
        self.status.setWordWrap(True)

    # -- what a subclass provides -------------------------------------------------------------------------
    def _describe(self, policy) -> str:
        raise NotImplementedError

    def _save(self, policy) -> None:
        """Write ``policy`` into the settings (StorageError when that fails)."""
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
        policy = self.preview_policy
        old, new = self._describe(self.policy), self._describe(policy)

        def saved(_result: object) -> None:
            changed = policy != self.policy
            self.policy = policy
            self._show()
            self._announce(policy)
            self._say(f"Applied: {self.SETTING} {new}" + (f"; it was {old}." if changed else "."))
            log.info("admin: %s %s -> %s", self.SETTING, old, new)
            if changed:
                self._record(f"{old} -> {new}", new)

        def failed(exc: BaseException) -> None:
            self._say(f"Cannot save the {self.SETTING}: {exc}", error=True)
            log.error("cannot save the %s: %s", self.SETTING, exc)

        self._say(f"Saving the {self.SETTING}...")
        self.ops.run(lambda: self._save(policy), saved, failed, busy=[self], key="save")

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

    def _record(self, detail: str, new: str) -> None:
        """The audit entry ("old -> new"), written off the GUI thread."""
        audit = self.audit
        if audit is None:
            return

        def failed(exc: BaseException) -> None:
            log.error("cannot write the audit entry for the %s change %s: %s", self.SETTING, detail, exc)
            self._say(f"Applied: {self.SETTING} {new}, but the audit log could not record it: {exc}", error=True)

        self.ops.run(lambda: audit.record_event(self.EVENT, detail, reason="applied by the admin, confirmed"),
                     on_failure=failed)

    def _say(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#c62828;" if error else "")
