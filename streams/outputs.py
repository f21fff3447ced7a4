"""A message the processor writes: routed changes, commands, audit records, dead letters, progress,
the state changelog. A batch's messages are written in its transaction (``streams.checkpoint``).

Sizes are checked before anything of an input is staged (``too_large``): an input whose outputs
would be too large for the broker is dead-lettered instead, never half-sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# What a message costs besides its key, value and headers, for the size check (record overhead).
RECORD_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class OutputMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    partition: int = -1  # -1: the producer's partitioner picks it from the key

    @property
    def size(self) -> int:
        headers = sum(len(name) + len(value) for name, value in self.headers or ())
        return len(self.key or b"") + len(self.value or b"") + headers + RECORD_OVERHEAD


def too_large(messages: Sequence[OutputMessage], limit: int) -> OutputMessage | None:
    """The first message larger than ``limit`` bytes, if any."""
    for message in messages:
        if message.size > limit:
            return message
    return None
