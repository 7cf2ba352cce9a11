"""Where the data key is kept, for the admin (Admin > Security): one read-only line, through the app layer (the
Qt layer never imports kiosk.storage). Nothing is opened or asked: the key file says where the key is
(kiosk.storage.keyproviders), and the line says what a copy of the disk would give away: "the key is on the same
disk" for the plain file beside the data. Moving the key is ``kiosk key migrate`` at a terminal."""

from __future__ import annotations

from kiosk.storage.keyproviders import KeyPlace, describe


def key_place(storage) -> KeyPlace | None:
    """Where ``storage``'s data key is (None for a store made by hand, without its places)."""
    paths = getattr(storage, "paths", None)
    if paths is None:
        return None
    return describe(paths.key_file, paths.data)


def key_place_line(storage) -> str:
    """The admin's line: "Data key: ..." ("" where the store has no places)."""
    place = key_place(storage)
    return "" if place is None else place.line
