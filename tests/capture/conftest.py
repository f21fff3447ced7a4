"""Capture tests: the sandboxes in-process (aiohttp test servers), the capture services' own code,
and the real broker for what they produce (topics of their own per module, as the integration tier)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from common.settings import KafkaSettings
from common.topic_wait import watermarks
from streams.settings import WorkerSettings
from tests.integration.conftest import Kafka, bootstrap, kafka, module_settings, tenant

__all__ = ["Kafka", "bootstrap", "events_of", "kafka", "module_settings", "tenant"]


def events_of(settings: KafkaSettings, topic: str, tenant: str) -> list[dict]:
    """Every change event of ``tenant`` on ``topic`` (without prefix) so far, in offset order per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"capture-test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    name = settings.topic_prefix + topic
    try:
        metadata = consumer.list_topics(name, timeout=10).topics[name]
        partitions = [TopicPartition(name, p, 0) for p in metadata.partitions]
        ends = {p.partition: _end_offset(consumer, p) for p in partitions}
        wanted = {p.partition for p in partitions if ends[p.partition] > 0}
        consumer.assign([p for p in partitions if p.partition in wanted])
        found: list[dict] = []
        while wanted:
            message = consumer.poll(5.0)
            if message is None:
                raise AssertionError(f"{topic}: could not read up to the end offsets {ends}")
            if message.error():
                continue
            event = orjson.loads(message.value() or b"null")
            if isinstance(event, dict) and event.get("tenant") == tenant:
                found.append(event)
            partition, offset = message.partition() or 0, message.offset() or 0
            if offset + 1 >= ends[partition]:
                wanted.discard(partition)
        return found
    finally:
        consumer.close()


def _end_offset(consumer: Consumer, partition: TopicPartition) -> int:
    """The partition's end offset; a topic the capture service has just created can answer "not leader"
    for a moment while its leader is elected."""
    for attempt in range(20):
        try:
            return int(watermarks(consumer, partition, 10)[1])
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION or attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


@pytest.fixture()
def read_events(module_settings: WorkerSettings) -> Iterator:
    yield lambda topic, tenant: events_of(module_settings.kafka, topic, tenant)
