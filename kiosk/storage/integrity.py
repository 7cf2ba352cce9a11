"""What the store's self-check found, in words an administrator can act on.

The database file is checked with ``PRAGMA quick_check`` when the store opens (a failure refuses to open
it: kiosk.storage.db.StoreDamagedError). Each reference's features and photo file carry an AES-GCM tag
(kiosk.storage.crypto), checked on every read and for all references at start; this module reports those.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LISTED = 5


@dataclass(frozen=True)
class ReferenceDamage:
    employee_id: str
    reference_id: int
    file: str
    features: str = ""  # why the feature vector cannot be used ("" when it is fine)
    photo: str = ""     # why the photo cannot be used ("" when it is fine)

    @property
    def remedy(self) -> str:
        if self.features and not self.photo:
            return "re-embed from the photo (done when the model loads)"
        return f"re-enrol {self.employee_id} or restore a backup"

    @property
    def what(self) -> str:
        return " and ".join(w for w, bad in (("features", self.features), ("photo", self.photo)) if bad)


@dataclass(frozen=True)
class IntegrityReport:
    checked: int = 0
    damage: tuple[ReferenceDamage, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.damage

    @property
    def repairable(self) -> list[ReferenceDamage]:
        """Damaged features whose photo is fine: re-embedding restores them."""
        return [d for d in self.damage if d.features and not d.photo]

    def lines(self) -> list[str]:
        return [f"{d.employee_id}: {d.what} damaged ({d.features or d.photo}); {d.remedy}" for d in self.damage]

    @property
    def summary(self) -> str:
        if self.ok:
            return f"store check: all {self.checked} reference photo(s) and feature vector(s) verified"
        people = sorted({d.employee_id for d in self.damage})
        listed = ", ".join(f"{d.employee_id} ({d.what}: {d.remedy})" for d in self.damage[:MAX_LISTED])
        more = f" and {len(self.damage) - MAX_LISTED} more" if len(self.damage) > MAX_LISTED else ""
        return (f"Store check: {len(self.damage)} of {self.checked} reference(s) of {len(people)} employee(s) "
                f"damaged and not used for verification: {listed}{more}")
