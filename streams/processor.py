"""The processing loop put together from settings: its clients, topics, stores and rules."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from common.kafka_config import confluent_config
from common.names import AUDIT, DLQ_CDC, System, changes_topic, commands_topic, state_changelog_topic
from streams.agents.batch import OutputTopics, Processing
from streams.checkpoint import Checkpoint, TransactionalProducer
from streams.core.rules import RuleBook
from streams.loop import LoopConfig, ProcessingLoop
from streams.settings import WorkerSettings
from streams.tables.memory import RocksDBMemory
from streams.tables.store import Stores
from streams.topics import cdc_topics, results_topic

log = logging.getLogger(__name__)

# How long the fetch of a partition with nothing new waits before answering: the latency a quiet
# input adds, and the slack of a router's "read to the end" (streams.agents.time_order).
FETCH_WAIT_MS = 20


def internal_topics(settings: WorkerSettings) -> list[NewTopic]:
    """The processor's own topics: every change routed by tenant, and the state of its partitions."""
    prefix = settings.kafka.topic_prefix
    return [
        NewTopic(
            prefix + changes_topic(settings.app_id),
            settings.topic_partitions,
            settings.topic_replication_factor,
        ),
        NewTopic(
            prefix + state_changelog_topic(settings.app_id),
            settings.topic_partitions,
            settings.topic_replication_factor,
            config={"cleanup.policy": "compact"},
        ),
    ]


def ensure_internal_topics(settings: WorkerSettings, timeout: float = 30.0) -> int:
    """Create the internal topics when missing and wait until the broker lists them; the changes
    topic's partition count (which fixes where each tenant lives)."""
    admin = AdminClient(confluent_config(settings.kafka))
    wanted = internal_topics(settings)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [topic for topic in wanted if topic.topic not in existing]
    if missing:
        for name, future in admin.create_topics(missing).items():
            try:
                future.result()
            except Exception as exc:  # created meanwhile by another worker: fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                log.debug("topic %s created by another worker", name)
    deadline = time.monotonic() + timeout
    changes = wanted[0].topic
    while True:
        described = admin.list_topics(timeout=timeout).topics
        if all(topic.topic in described and not described[topic.topic].error for topic in wanted):
            return len(described[changes].partitions)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the processor's topics {[t.topic for t in wanted]} do not appear on the broker")
        time.sleep(0.1)


def transactional_id(settings: WorkerSettings) -> str:
    """Stable with static membership: a restarted worker fences its predecessor's open transaction at
    once; otherwise new each start (the broker aborts a dead worker's transaction on its timeout)."""
    return f"{settings.app_id}-{settings.group_instance_id or uuid.uuid4().hex}"


def loop_consumer(settings: WorkerSettings) -> Consumer:
    extra: dict[str, Any] = {
        "group.id": settings.app_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": int(min(3.0, settings.session_timeout / 3) * 1000),
        "max.partition.fetch.bytes": settings.consumer_fetch_kb * 1024,
        "queued.max.messages.kbytes": max(1024, settings.consumer_fetch_kb * 16),
    }
    if settings.group_instance_id:
        extra["group.instance.id"] = settings.group_instance_id
    return Consumer(confluent_config(settings.kafka, extra))


def restore_consumer(settings: WorkerSettings) -> Consumer:
    return Consumer(
        confluent_config(
            settings.kafka,
            {
                "group.id": f"{settings.app_id}-restore",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            },
        )
    )


def loop_producer(settings: WorkerSettings) -> TransactionalProducer:
    return Producer(
        confluent_config(
            settings.kafka,
            {
                "transactional.id": transactional_id(settings),
                "transaction.timeout.ms": int(settings.transaction_timeout * 1000),
                "linger.ms": 5,
                # the Java client's partitioner: a tenant's changes land where Kafka Streams would put them
                "partitioner": "murmur2_random",
                "message.max.bytes": settings.max_message_bytes + 65536,
                "queue.buffering.max.messages": 1_000_000,
                # librdkafka: a message may not outlive the transaction it belongs to
                "message.timeout.ms": int(settings.transaction_timeout * 1000),
            },
        )
    )


def build_loop(
    settings: WorkerSettings,
    rules: RuleBook,
    *,
    tenant_settings: Any,
    settings_current: Callable[[int], None],
    stop_worker: Callable[[], None],
    consumer: Consumer | None = None,
    restore: Consumer | None = None,
    producer: TransactionalProducer | None = None,
    changes_partitions: int | None = None,
) -> ProcessingLoop:
    prefix = settings.kafka.topic_prefix
    if changes_partitions is None:
        changes_partitions = ensure_internal_topics(settings)
    processing = Processing(
        rules=rules,
        topics=OutputTopics(
            commands={system: prefix + commands_topic(system) for system in System},
            audit=prefix + AUDIT,
            dead_letters=prefix + DLQ_CDC,
            changes=prefix + changes_topic(settings.app_id),
            state_changelog=prefix + state_changelog_topic(settings.app_id),
        ),
        topic_prefix=prefix,
        default_order_target=settings.default_order_target,
        max_message_bytes=settings.max_message_bytes,
    )
    tables = settings.tables
    on_rocksdb = tables.store.startswith("rocksdb")
    memory = RocksDBMemory.of(tables.rocksdb_block_cache_mb, tables.rocksdb_memtables_mb) if on_rocksdb else None
    config = LoopConfig(
        input_topics=[prefix + spec.name for spec in cdc_topics()]
        + [prefix + results_topic(system.value) for system in System],
        changes_topic=processing.topics.changes,
        changelog_topic=processing.topics.state_changelog,
        changes_partitions=changes_partitions,
        batch_size=settings.batch_size,
        order_max_wait_s=settings.order_max_wait,
    )
    return ProcessingLoop(
        config=config,
        processing=processing,
        consumer=consumer or loop_consumer(settings),
        restore_consumer=restore or restore_consumer(settings),
        checkpoint=Checkpoint(producer or loop_producer(settings), timeout=settings.delivery_timeout),
        stores=Stores(tables.data_dir if on_rocksdb else None, memory),
        tenant_settings=tenant_settings,
        settings_current=settings_current,
        stop_worker=stop_worker,
    )
