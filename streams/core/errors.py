"""The error every check of an input raises: what kind of problem, and what was wrong, in words."""

from __future__ import annotations


class BadInput(Exception):
    """An input that cannot be processed; it goes to a dead-letter topic with ``kind`` and ``message``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def masked(value: object) -> str:
    """A payload value as a dead letter's reason (its error.message header), a log line or the operator's
    page shows it: its type and size, and for text its first character, never the whole value. Records
    carry personal data (names, phone numbers, addresses); the dead letter itself keeps the original bytes
    for whoever reads it with the right to (``lienthong dlq show``)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return f"'{value[:1]}…' ({len(value)} characters)" if value else "''"
    if isinstance(value, int | float):
        return f"a {type(value).__name__} of {len(str(value))} digits"
    if isinstance(value, dict | list | tuple):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"
