"""SQL text helpers shared by the stores: the one escaping of user text for ``LIKE``."""

from __future__ import annotations

LIKE_ESCAPE = "ESCAPE '\\'"  # goes after every ``LIKE ?`` whose pattern comes from like_contains()


def like_contains(text: str) -> str:
    """A ``LIKE ? ESCAPE '\\'`` pattern matching values that contain ``text`` (surrounding blanks dropped)
    literally: the wildcards ``%`` and ``_`` and the escape character itself lose their meaning."""
    escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
