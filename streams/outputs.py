"""What the processor writes besides its tables: commands, audit records, dead letters, re-keyed
documents. Sent per batch through one confluent-kafka (librdkafka) producer, and awaited once.

librdkafka batches and compresses in its own threads; ``produce()`` only queues a message, so a
batch of a thousand events costs a thousand cheap calls and one wait for the broker's
acknowledgements (``delivered``). Messages a batch could not send raise ``OutputsNotDelivered``:
the agent then stops without acking the batch, which is read again after a restart.

Sizes are checked before anything of an event is sent (``fits``): an event whose outputs would be
too large for the broker is dead-lettered instead, never half-sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# What a message costs besides its key, value and headers, for the size check (record overhead).
RECORD_OVERHEAD = 128


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the outputs use (a fake in the agent tests)."""

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


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


class OutputsNotDelivered(RuntimeError):
    """The broker did not take every message of a batch; the batch must not be acked."""


class Outputs:
    def __init__(self, producer: ProducerLike, *, max_message_bytes: int, delivery_timeout: float = 120.0) -> None:
        self.producer = producer
        self.max_message_bytes = max_message_bytes
        self.delivery_timeout = delivery_timeout
        self._pending = 0
        self._errors: list[str] = []
        self._offsets: dict[tuple[str, int], int] = {}  # highest acknowledged offset per partition
        self._followed: dict[tuple[str, int], list[int]] = {}  # every acknowledged offset, where asked (follow)
        self._lock = threading.Lock()

    def fits(self, messages: Sequence[OutputMessage]) -> OutputMessage | None:
        """The first message too large to send, if any."""
        for message in messages:
            if message.size > self.max_message_bytes:
                return message
        return None

    def send(self, message: OutputMessage) -> None:
        """Queue one message (it goes out with the batch; ``delivered`` waits for it)."""
        with self._lock:
            self._pending += 1
        self.producer.produce(
            message.topic,
            message.value,
            message.key,
            partition=message.partition,
            headers=message.headers,
            on_delivery=self._on_delivery,
        )

    def _on_delivery(self, error: Any, message: Any) -> None:
        with self._lock:
            self._pending -= 1
            if error is not None:
                where = message.topic() if message is not None else "?"
                self._errors.append(f"{where}: {error}")
            elif message is not None and message.offset() is not None:
                where = (message.topic(), message.partition())
                self._offsets[where] = max(self._offsets.get(where, -1), message.offset())
                followed = self._followed.get(where)
                if followed is not None:
                    followed.append(message.offset())

    def follow(self, topic: str, partition: int) -> None:
        """Keep every offset the broker acknowledges on this partition, for ``followed``."""
        with self._lock:
            self._followed.setdefault((topic, partition), [])

    def followed(self, topic: str, partition: int) -> list[int]:
        """The offsets acknowledged on a followed partition since the last call."""
        with self._lock:
            offsets = self._followed.get((topic, partition))
            if not offsets:
                return []
            self._followed[(topic, partition)] = []
            return offsets

    async def delivered(self) -> dict[tuple[str, int], int]:
        """Wait until the broker acknowledged every message queued so far; else raise.

        Returns the highest offset acknowledged per (topic, partition) since the last call.
        """
        if self._pending:
            # flush(0) sends what is queued at once (linger.ms does not hold it back) without
            # blocking; then the delivery reports are served from this loop, not from a thread.
            self.producer.flush(0)
            deadline = time.monotonic() + self.delivery_timeout
            pause = 0.0002
            while self._pending:
                if time.monotonic() > deadline:
                    raise OutputsNotDelivered(
                        f"{self._pending} message(s) not acknowledged by the broker within {self.delivery_timeout:g}s"
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)
                self.producer.poll(0)
        with self._lock:
            errors, self._errors = self._errors, []
            offsets, self._offsets = self._offsets, {}
        if errors:
            raise OutputsNotDelivered(f"{len(errors)} message(s) refused by the broker, first: {errors[0]}")
        return offsets
