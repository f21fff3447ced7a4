"""Moving a deployment's state from the faust tables of before (until 2026-12) to the partition stores.

Until December 2026 the processor kept its state in five faust tables, each with a changelog topic
named after the app id: ``links``, ``written`` and ``crm_records`` global (one partition, every
worker a copy), ``seen_events`` and ``orders`` partitioned like their inputs. Their keys are the same
``<tenant>:…`` keys the tables keep now, JSON-encoded, and their values JSON. ``migrate`` reads the last
value of every key of those changelogs and writes it to the state changelog
(``<app id>-state-changelog``) on the partition of its tenant — the partition the tenant's changes are
routed to (the Java client's murmur2 of the tenant, as the processor's producer picks it) — so that
the first worker that owns a partition restores its tenants' links, what was written, CRM records,
aggregates and recent event ids. Nothing is lost: no link is re-learnt, no command sent again.

Run it once, with the old workers stopped after they drained ``<app id>-aggregate-inputs`` (the
documents the old processor had re-keyed and not yet counted) and before the new workers start;
``docs/deploy.md`` gives the steps. It refuses when the new state changelog already holds data, or
when the old workers left documents undecided.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from common.kafka_config import confluent_config
from common.names import changes_topic, state_changelog_topic
from common.topic_wait import watermarks
from streams.agents import route
from streams.settings import WorkerSettings
from streams.tables.store import TableName, encode_key

log = logging.getLogger(__name__)

# The faust tables of before, by name: each has the changelog ``<app id>-<name>-changelog``.
OLD_TABLES: tuple[TableName, ...] = ("links", "written", "crm_records", "seen_events", "orders")
OLD_AGGREGATE_INPUTS = "aggregate-inputs"


class MigrationRefused(RuntimeError):
    """The migration would lose or mix state; the message says why and what to do."""


def partition_of(tenant: str, partitions: int) -> int:
    """The partition of the changes topic a tenant's changes are routed to (``streams.agents.route``)."""
    return route.partition_of(tenant.encode(), partitions)


@dataclass
class Migrated:
    """What ``migrate`` moved: keys per table, and per partition of the state changelog."""

    keys: dict[str, int] = field(default_factory=dict)
    partitions: dict[int, int] = field(default_factory=dict)
    skipped: int = 0  # keys without a tenant (none are expected)

    @property
    def total(self) -> int:
        return sum(self.keys.values())


def _read_whole(consumer: Consumer, topic: str, timeout: float) -> list[tuple[bytes, bytes | None]]:
    """Every message of ``topic`` (all partitions), in order, until each partition reported its end."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    partitions = list(metadata.partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    ended: set[int] = set()
    messages: list[tuple[bytes, bytes | None]] = []
    deadline = time.monotonic() + timeout
    while len(ended) < len(partitions):
        if time.monotonic() > deadline:
            raise MigrationRefused(f"{topic} could not be read to its end within {timeout:g}s: is the broker up?")
        for message in consumer.consume(10_000, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                    continue
                raise MigrationRefused(f"reading {topic}: {error}")
            messages.append((message.key() or b"", message.value()))
    consumer.unassign()
    return messages


def _undecided(settings: WorkerSettings, topic: str, timeout: float) -> int:
    """How many messages of ``topic`` the old workers' group (``<app id>``) has not committed."""
    group = Consumer(confluent_config(settings.kafka, {"group.id": settings.app_id, "enable.auto.commit": False}))
    try:
        metadata = group.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0  # a deployment that never had the old aggregates agent
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        committed = {tp.partition: tp.offset for tp in group.committed(partitions, timeout=timeout)}
        undecided = 0
        for tp in partitions:
            _low, end = watermarks(group, tp, timeout)
            undecided += max(0, end - max(committed.get(tp.partition, 0), 0))
        return undecided
    finally:
        group.close()


def migrate(
    settings: WorkerSettings, *, timeout: float = 120.0, progress: Callable[[str, int], None] = lambda t, n: None
) -> Migrated:
    """Copy the old faust tables' last values to the state changelog, each on its tenant's partition."""
    app_id = settings.app_id
    kafka = settings.kafka
    consumer = Consumer(
        confluent_config(
            kafka,
            {
                "group.id": f"{app_id}-migration",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
    )
    try:
        undecided = _undecided(settings, f"{app_id}-{OLD_AGGREGATE_INPUTS}", timeout)
        if undecided:
            raise MigrationRefused(
                f"the old workers left {undecided} document(s) of {app_id}-{OLD_AGGREGATE_INPUTS} undecided: start "
                "the old version until `lienthong lag` shows no lag there, stop it, then migrate"
            )
        target = state_changelog_topic(app_id)
        if _read_whole(consumer, target, timeout):
            raise MigrationRefused(f"{target} already holds state: the migration has run, or new workers have started")
        metadata = consumer.list_topics(changes_topic(app_id), timeout=timeout).topics.get(changes_topic(app_id))
        if metadata is None or metadata.error is not None:
            raise MigrationRefused(
                f"{changes_topic(app_id)} does not exist: start a new worker once with no input (or create the "
                "processor's topics) before migrating, so that the partition count is the one it will use"
            )
        partitions = len(metadata.partitions)
        last: dict[bytes, tuple[TableName, bytes | None]] = {}
        for table in OLD_TABLES:
            messages = _read_whole(consumer, f"{app_id}-{table}-changelog", timeout)
            for raw_key, value in messages:
                last[encode_key(table, orjson.loads(raw_key))] = (table, value)
            progress(table, len(messages))
    finally:
        consumer.close()

    migrated = Migrated()
    producer = Producer(confluent_config(kafka, {"acks": "all", "enable.idempotence": True, "linger.ms": 20}))
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    for key, (table, value) in last.items():
        if value is None:
            continue  # deleted in the old table: nothing to carry over
        tenant = key.split(b"|", 1)[1].split(b":", 1)[0].decode()
        if not tenant:
            migrated.skipped += 1
            continue
        partition = partition_of(tenant, partitions)
        producer.produce(target, value=value, key=key, partition=partition, on_delivery=delivered)
        producer.poll(0)
        migrated.keys[table] = migrated.keys.get(table, 0) + 1
        migrated.partitions[partition] = migrated.partitions.get(partition, 0) + 1
    if producer.flush(timeout) or failures:
        raise MigrationRefused(f"the broker did not take the migrated state ({'; '.join(failures[:3]) or 'no answer'})")
    log.info("migrated %d keys of the old tables to %s: %s", migrated.total, target, migrated.keys)
    return migrated
