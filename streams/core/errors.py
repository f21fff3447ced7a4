"""The error every check of an input raises: what kind of problem, and what was wrong, in words."""

from __future__ import annotations


class BadInput(Exception):
    """An input that cannot be processed; it goes to a dead-letter topic with ``kind`` and ``message``.

    ``pointer``: for a value that does not fit the change event's schema, the JSON pointer (RFC 6901) of
    where it is in the message, as a JSON Schema validator names it (``docs/contract/schemas``): the message
    ends with it, ``(JSON pointer "/after/lines/0/quantity")``, so a producer finds the same place either way.
    """

    def __init__(self, kind: str, message: str, pointer: str | None = None) -> None:
        if pointer is not None:
            message = f'{message} (JSON pointer "{pointer}")'
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.pointer = pointer


def json_pointer(*path: str | int) -> str:
    """``("after", "lines", 0, "quantity")`` -> ``/after/lines/0/quantity`` (RFC 6901, escaped)."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


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
