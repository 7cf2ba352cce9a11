"""The store's connection state on screen: a label for the status bar and one for the admin tab.

The Qt-free kiosk.storage.connection.ConnectionStatus tells of every change from the sync thread; a
signal carries it to the GUI thread. EMBEDDED (a single kiosk) shows quietly, ONLINE in green, OFFLINE
in red with the time of the copy the kiosk verifies with and the audit entries waiting.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QWidget

from kiosk.app import ConnectionInfo, ConnectionState, ConnectionStatus

_STYLE = {ConnectionState.EMBEDDED: "color: #555",
          ConnectionState.ONLINE: "color: #1b7f3b; font-weight: bold",
          ConnectionState.OFFLINE: "color: #b00020; font-weight: bold"}


class _Relay(QObject):
    changed = Signal(object)


class ConnectionLabel(QLabel):
    """``detailed``: the admin tab's longer text (the message and the last synchronisation)."""

    def __init__(self, status: ConnectionStatus, detailed: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.detailed = detailed
        self.setWordWrap(detailed)
        self._relay = _Relay(self)
        self._relay.changed.connect(self.show_info)  # queued: the sync thread never touches the widget
        self._unsubscribe = status.subscribe(self._relay.changed.emit)
        self.destroyed.connect(lambda *_: self._unsubscribe())
        self.show_info(status.info)

    def show_info(self, info: ConnectionInfo) -> None:
        text = info.summary
        if self.detailed and info.state is not ConnectionState.EMBEDDED:
            text += f"\n{info.message}"
        self.setText(text)
        self.setToolTip(info.message)
        self.setStyleSheet(_STYLE[info.state])
