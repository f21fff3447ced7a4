"""A tenant's retained history: every change event (``cdc.*``) and result (``results.*``) of one tenant
still on the broker, in the order it reached Kafka — what ``lienthong whatif`` replays.

The broker keeps a topic's messages for its retention (``retention.ms``; the broker's default, 7
days, unless the topic says otherwise — docs/operations.md, "Retention"). What is older is gone: the
reader says so (``Retention.gone``) instead of replaying a history with a hole at its start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from common.kafka_config import confluent_config
from common.messages import Retained
from common.names import ENTITIES, TENANT, System, cdc_topic, results_topic
from common.settings import KafkaSettings
from common.topic_wait import watermarks


class HistoryError(RuntimeError):
    """The history cannot be read (no broker, no topic); the message says what to do."""


@dataclass(slots=True)
class Retention:
    """How far back the history goes, per topic that has lost messages to retention."""

    # topic -> the oldest timestamp still retained (ms), for topics whose first offsets were deleted
    gone_before_ms: dict[str, int] = field(default_factory=dict)

    def oldest_complete_ms(self) -> int | None:
        """From when on the history is whole; None: nothing was ever deleted."""
        return max(self.gone_before_ms.values()) if self.gone_before_ms else None

    def gone(self, since_ms: int | None) -> bool:
        """Whether history that ``since_ms`` asks for (None: all of it) is no longer retained."""
        oldest = self.oldest_complete_ms()
        return oldest is not None and (since_ms is None or since_ms < oldest)


def history_topics(prefix: str = "") -> list[str]:
    topics = [prefix + cdc_topic(system, entity) for system in System for entity in sorted(ENTITIES[system])]
    return topics + [prefix + results_topic(system) for system in System]


def of_tenant(message_key: bytes | None, headers: list[tuple[str, bytes]] | None, tenant: str) -> bool:
    """A change event's key is ``<tenant>:<record id>``, a result's ``<tenant>:<entity>:<key>``; a
    Debezium envelope names its tenant in the ``tenant`` header (docs/contract.md)."""
    if message_key is not None and message_key.startswith(tenant.encode() + b":"):
        return True
    return any(name == TENANT and value == tenant.encode() for name, value in headers or ())


def read_history(
    kafka: KafkaSettings,
    tenant: str,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Retained], Retention]:
    """The tenant's retained change events and results between ``since_ms`` and ``until_ms`` (the
    times they reached Kafka), oldest first; and what retention has already removed.

    ``progress(read, total)`` is called as messages are read (of every tenant: the topics are not
    partitioned by tenant)."""
    consumer = Consumer(
        confluent_config(
            kafka,
            {
                "group.id": f"history-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            },
        )
    )
    kept: list[Retained] = []
    retention = Retention()
    try:
        try:
            listed = consumer.list_topics(timeout=timeout).topics
        except KafkaException as exc:
            raise HistoryError(f"broker {kafka.bootstrap_servers} did not answer ({exc})") from None
        wanted = [topic for topic in history_topics(kafka.topic_prefix) if topic in listed]
        if not wanted:
            raise HistoryError(
                f"no cdc.* or results.* topic on {kafka.bootstrap_servers}: run `lienthong topics create`"
            )
        start: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        trimmed: dict[tuple[str, int], int] = {}  # partitions retention has trimmed -> their first offset
        for topic in wanted:
            for partition in listed[topic].partitions:
                low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
                if high <= low:
                    if low > 0:  # everything it ever held is gone
                        retention.gone_before_ms[topic] = int(time.time() * 1000)
                    continue
                ends[(topic, partition)] = high
                start.append(TopicPartition(topic, partition, low))
                if low > 0:
                    trimmed[(topic, partition)] = low
        if since_ms is not None and start:
            found = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, since_ms) for tp in start], timeout=timeout
            )
            start = []
            for tp in found:
                if tp.offset < 0:  # nothing at or after since_ms
                    ends.pop((tp.topic, tp.partition), None)
                else:
                    start.append(tp)
                    if tp.offset > trimmed.get((tp.topic, tp.partition), tp.offset):
                        trimmed.pop((tp.topic, tp.partition))  # the window starts after what was deleted
        total = sum(ends[(tp.topic, tp.partition)] - max(tp.offset, 0) for tp in start)
        if not start:
            return kept, retention
        consumer.assign(start)
        read = 0
        deadline = time.monotonic() + max(timeout, 30.0)
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                topic, partition = message.topic() or "", message.partition() or 0
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and (message.offset() or 0) >= ends.get(
                        (topic, partition), 0
                    ):
                        ends.pop((topic, partition), None)
                    continue
                deadline = time.monotonic() + max(timeout, 30.0)
                read += 1
                offset = message.offset() or 0
                _, timestamp_ms = message.timestamp()
                if trimmed.pop((topic, partition), None) == offset:  # the oldest message still retained
                    retention.gone_before_ms[topic] = max(retention.gone_before_ms.get(topic, 0), timestamp_ms)
                if offset >= ends.get((topic, partition), 0):
                    ends.pop((topic, partition), None)
                    continue
                if offset + 1 >= ends.get((topic, partition), 0):
                    ends.pop((topic, partition), None)
                if until_ms is not None and timestamp_ms > until_ms:
                    continue
                headers = _headers_of(message.headers())
                if of_tenant(message.key(), headers, tenant):
                    kept.append(
                        Retained(
                            topic=topic,
                            partition=partition,
                            offset=offset,
                            timestamp_ms=timestamp_ms,
                            key=message.key(),
                            value=message.value(),
                            headers=tuple(
                                (name, value if isinstance(value, bytes) else b"") for name, value in headers
                            ),
                        )
                    )
            if progress is not None:
                progress(read, total)
        if ends:
            raise HistoryError(
                f"reading the history stopped answering on {kafka.bootstrap_servers}; try again "
                "(LIENTHONG_KAFKA_TIMEOUT sets how long to wait)"
            )
    finally:
        consumer.close()
    kept.sort(key=lambda m: (m.timestamp_ms, m.topic, m.partition, m.offset))
    return kept, retention


def _headers_of(raw: object) -> list[tuple[str, bytes]]:
    pairs = raw.items() if isinstance(raw, dict) else raw if isinstance(raw, list) else []
    return [(str(name), value) for name, value in pairs if isinstance(value, bytes)]
