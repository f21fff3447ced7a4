"""Publishes a sandbox's outbox to Kafka: at least once, in outbox order, marked only once acknowledged."""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaException, Producer

from sandboxes.store import SandboxStore

log = logging.getLogger(__name__)


class OutboxPublisher:
    def __init__(self, store: SandboxStore, bootstrap_servers: str, *, idle_sleep: float = 0.05) -> None:
        self.store = store
        self.idle_sleep = idle_sleep
        self._stopping = asyncio.Event()
        # Idempotent producer: retries inside the client never duplicate or reorder a partition's events.
        self.producer = Producer(
            {"bootstrap.servers": bootstrap_servers, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )

    def publish_pending(self, timeout: float = 30.0) -> int:
        """Send every unpublished outbox row; mark those the broker acknowledged. Returns how many."""
        rows = self.store.pending()
        if not rows:
            return 0
        delivered: list[int] = []
        failed: list[str] = []

        def on_delivery(seq: int):
            def callback(err, _msg) -> None:
                (failed.append(str(err)) if err else delivered.append(seq))

            return callback

        for seq, topic, key, value in rows:
            self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery(seq))
        remaining = self.producer.flush(timeout)
        if failed or remaining:
            log.warning(
                "outbox: %d delivered, %d failed (%s), %d undelivered; they are retried",
                len(delivered),
                len(failed),
                failed[:1],
                remaining,
            )
        # Marked as published only up to the first failure: the outbox keeps its order.
        published = sorted(delivered)
        first_gap = next((i for i, (seq, *_rest) in enumerate(rows) if seq not in set(published)), len(rows))
        self.store.mark_published(seq for seq, *_rest in rows[:first_gap])
        return first_gap

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Publish until ``stop()``; what is pending then is published by the next run."""
        while not self._stopping.is_set():
            try:
                sent = await asyncio.to_thread(self.publish_pending)
            except KafkaException as exc:
                log.warning("outbox publisher: %s; retrying", exc)
                sent = 0
            if not sent:
                await asyncio.sleep(self.idle_sleep)
