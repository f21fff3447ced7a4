"""A Kafka message as it was kept on its topic: what ``lienthong whatif`` and ``history`` read back
(``ops.retained``) and replay (``streams.replay``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Retained:
    """One message of ``cdc.*`` (a change event) or ``results.*`` (a result), where and when it was kept."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
