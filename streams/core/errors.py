"""The error every check of an input raises: what kind of problem, and what was wrong, in words."""

from __future__ import annotations


class BadInput(Exception):
    """An input that cannot be processed; it goes to a dead-letter topic with ``kind`` and ``message``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
