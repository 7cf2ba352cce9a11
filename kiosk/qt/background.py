"""Work off the GUI thread, results back on it: one small helper for database and PIN work.

Modelled on Anki's ``QueryOp`` and napari's ``thread_worker``::

    Background(self).run(lambda: store.search(text), on_success=self.show_rows, on_failure=self.show_error,
                         busy=[self.search_button], key="search")

The operation (a plain callable) runs in the pool's one thread, after those asked for before it. ``on_success(result)`` or ``on_failure(exc)`` then
runs on the GUI thread (a queued signal): an exception never escapes into Qt. The ``busy`` widgets are
disabled while it runs (and enabled again afterwards, unless another operation still uses them). With a
``key``, only the newest operation of that key reports (a search typed letter by letter shows the last
query's rows, never an older one's). Once the owner widget is destroyed, nothing is called back.

The helper holds its owner weakly: a strong reference made a cycle (window -> helper -> window) whose
collection deleted a top-level window inside Python's garbage collector and crashed the Qt tests.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Iterable, TypeVar

import shiboken6
from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtWidgets import QWidget

log = logging.getLogger(__name__)

T = TypeVar("T")

# One thread: operations run one after another in the order they were asked for, so the audit entries of
# events that follow each other (a PIN set, then the unlock) are written in that order (with two threads they
# raced, and the trail could say "unlock" before "PIN set"). The kiosk's operations are small; the inference
# has its own thread.
_POOL_THREADS = 1


def pool() -> QThreadPool:
    """The pool the operations run in (its threads never expire: each keeps its database connection)."""
    global _pool
    if _pool is None:
        _pool = QThreadPool()
        _pool.setMaxThreadCount(_POOL_THREADS)
        _pool.setExpiryTimeout(-1)
    return _pool


_pool: QThreadPool | None = None


def wait_for_background(timeout_ms: int = 5000) -> bool:
    """Wait until no operation runs (for shutdown and tests); False if some still ran at the timeout."""
    return _pool is None or _pool.waitForDone(timeout_ms)


class _Relay(QObject):
    """Lives on the GUI thread; the pool thread emits, Qt queues the call to the GUI thread."""

    finished = Signal(bool, object)  # ok, result or exception

    def __init__(self, deliver: Callable[[bool, object], None]):
        super().__init__()
        self._deliver = deliver
        self.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)

    @Slot(bool, object)
    def _on_finished(self, ok: bool, value: object) -> None:
        try:
            self._deliver(ok, value)
        finally:  # released on a later turn of the event loop: never deleted inside its own slot
            QTimer.singleShot(0, lambda: _alive.discard(self))


_alive: set[_Relay] = set()  # relays whose operation has not reported yet (kept from the garbage collector)


def _task(operation: Callable[[], Any], relay: _Relay) -> Callable[[], None]:
    def run() -> None:  # on a pool thread
        try:
            result = operation()
        except BaseException as exc:  # noqa: BLE001 -- every failure goes to on_failure, none into Qt
            relay.finished.emit(False, exc)
        else:
            relay.finished.emit(True, result)
    return run


class Background:
    """Runs operations for one owner widget; see the module docstring."""

    def __init__(self, owner: QWidget):
        self._owner = weakref.ref(owner)
        self._gone = False
        self._latest: dict[str, int] = {}
        self._serial = 0
        self._busy: dict[int, int] = {}  # id(widget) -> operations using it
        self.running = 0
        me = weakref.ref(self)
        owner.destroyed.connect(lambda *_args: setattr(me(), "_gone", True) if me() is not None else None)

    @property
    def owner(self) -> QWidget | None:
        return self._owner()

    def _alive(self) -> bool:
        owner = self._owner()
        return not self._gone and owner is not None and shiboken6.isValid(owner)

    def run(self, operation: Callable[[], T], on_success: Callable[[T], None] | None = None,
            on_failure: Callable[[BaseException], None] | None = None, busy: Iterable[QWidget] = (),
            key: str | None = None) -> None:
        self._serial += 1
        serial = self._serial
        if key is not None:
            self._latest[key] = serial
        widgets = list(busy)
        for widget in widgets:
            self._busy[id(widget)] = self._busy.get(id(widget), 0) + 1
            widget.setEnabled(False)
        self.running += 1

        def deliver(ok: bool, value: object) -> None:
            self.running -= 1
            if not self._alive():
                return
            for widget in widgets:
                self._busy[id(widget)] -= 1
                if not self._busy[id(widget)] and shiboken6.isValid(widget):
                    del self._busy[id(widget)]
                    widget.setEnabled(True)
            if key is not None and self._latest.get(key) != serial:
                return  # a newer operation of this key reports instead
            try:
                if ok:
                    if on_success is not None:
                        on_success(value)  # type: ignore[arg-type]
                elif on_failure is not None:
                    on_failure(value)  # type: ignore[arg-type]
                else:
                    log.error("background operation failed", exc_info=value)  # type: ignore[arg-type]
            except Exception:  # a failing callback must not take the event loop down
                log.exception("background callback failed")

        relay = _Relay(deliver)
        _alive.add(relay)
        pool().start(_task(operation, relay))
