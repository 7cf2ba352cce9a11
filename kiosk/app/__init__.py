"""The application layer: every use case of the kiosk and its audit entry, between the core and its clients
(the Qt window, the command line, the public API kiosk.api).

``Kiosk`` (kiosk.app.kiosk) holds one kiosk's store and use cases; ``Admin`` and ``Pins`` (kiosk.app.admin)
are the admin's; ``VerificationService`` (kiosk.app.attempt) runs the attempts. The store's types and words
that the clients show are re-exported here, so that no client imports kiosk.storage.
"""

from kiosk.app.admin import Admin, AuditNotRecorded, Pins, describe_liveness, describe_threshold
from kiosk.app.datakey import key_place, key_place_line
from kiosk.app.kiosk import Kiosk
from kiosk.storage import (
    EVENT_LABELS,
    KIND_DECISION,
    AuditEntry,
    AuditLog,
    ChainBreak,
    ConnectionInfo,
    ConnectionState,
    ConnectionStatus,
    Employee,
    IntegrityReport,
    PinManager,
    PinResult,
    Settings,
    SettingsStore,
    Storage,
    StorageError,
    clean_employee_id,
    clean_name,
)
from kiosk.storage.pin import MAX_PIN, MIN_PIN, format_duration

__all__ = ["Admin", "AuditNotRecorded", "Pins", "describe_liveness", "describe_threshold", "key_place",
           "key_place_line", "Kiosk", "EVENT_LABELS",
           "KIND_DECISION", "AuditEntry", "AuditLog", "ChainBreak", "ConnectionInfo", "ConnectionState",
           "ConnectionStatus", "Employee", "IntegrityReport", "PinManager", "PinResult", "Settings", "SettingsStore",
           "Storage", "StorageError", "clean_employee_id", "clean_name", "MAX_PIN", "MIN_PIN", "format_duration"]
