"""Writing an operator tool's messages (backfill's snapshots, reconcile's repairs, replayed dead
letters): every topic checked before the first message is written, each message acknowledged by
all in-sync replicas, idempotent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer

from common.kafka_config import confluent_config
from common.settings import KafkaSettings
from ops.lag import require_topics


class Publisher:
    def __init__(self, kafka: KafkaSettings, topics: Iterable[str]) -> None:
        """Raises ``ops.lag.LagError`` when the broker does not answer or a topic (prefix included) is missing."""
        require_topics(kafka, sorted(set(topics)))
        self._producer = Producer(confluent_config(kafka, {"acks": "all", "enable.idempotence": True}))
        self._failures: list[str] = []

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue one message (``KafkaException`` when the client refuses it); ``unacknowledged`` waits."""
        self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=self._delivered)
        self._producer.poll(0)

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

    def unacknowledged(self, timeout: float) -> str | None:
        """None once the broker has acknowledged every message; else what went wrong (the first
        delivery errors, or "no answer" when ``timeout`` seconds passed first)."""
        if self._producer.flush(timeout) or self._failures:
            return "; ".join(self._failures[:3]) or "no answer"
        return None
