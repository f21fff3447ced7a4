"""A tenant's retained history read back from the real broker (``ops.retained``): only its messages, in
the order they reached Kafka, within --since/--until, and a plain word when retention removed the start."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from common.kafka_config import confluent_config
from common.topic_wait import watermarks
from ops.admin import admin_client
from ops.retained import read_history
from streams.core.rules import load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS
from streams.replay import whatif
from tests.agents.test_whatif import PROPOSED, business_day


@pytest.fixture(scope="module")
def day(kafka):
    """Tenant cty-a's business day on the broker, and another tenant's on the same topics."""
    day = business_day()
    now_ms = int(time.time() * 1000)
    for n, message in enumerate(day.messages):
        # a second between changes, as they happen: the order the history is read back in
        at = now_ms + n * 1000
        other_key = (message.key or b"").replace(b"cty-a:", b"cty-b:")
        kafka.producer.produce(kafka.name(message.topic), key=other_key, value=message.value, timestamp=at)
        kafka.producer.produce(kafka.name(message.topic), key=message.key, value=message.value, timestamp=at)
    kafka.producer.flush(10)
    return day


def test_one_tenants_history_in_order_and_the_same_whatif_as_in_memory(day, kafka, module_settings) -> None:

    kept, retention = read_history(module_settings.kafka, "cty-a")
    assert [(m.topic, m.key, orjson.loads(m.value or b"")) for m in kept] == [
        (kafka.name(m.topic), m.key, orjson.loads(m.value or b"")) for m in day.messages
    ]
    assert not retention.gone(None)
    rules = load_rules()
    from_broker, _ = whatif(
        kept,
        rules_in_force=rules,
        settings_in_force=DEFAULT_SETTINGS,
        rules_proposed=rules,
        settings_proposed=PROPOSED,
        topic_prefix=module_settings.kafka.topic_prefix,
    )
    in_memory, _ = whatif(
        day.messages,
        rules_in_force=rules,
        settings_in_force=DEFAULT_SETTINGS,
        rules_proposed=rules,
        settings_proposed=PROPOSED,
    )
    assert from_broker.to_json()["rules"] == in_memory.to_json()["rules"] != []


def test_since_and_until_select_by_the_time_messages_reached_kafka(day, module_settings) -> None:
    kept, _ = read_history(module_settings.kafka, "cty-a")
    times = sorted(m.timestamp_ms for m in kept)
    middle = times[len(times) // 2]
    later, _ = read_history(module_settings.kafka, "cty-a", since_ms=middle)
    earlier, _ = read_history(module_settings.kafka, "cty-a", until_ms=middle - 1)
    assert sorted(m.offset for m in earlier + later) == sorted(m.offset for m in kept)
    assert all(m.timestamp_ms >= middle for m in later) and all(m.timestamp_ms < middle for m in earlier)


def test_history_removed_by_retention_is_said(day, kafka, module_settings) -> None:
    """Records deleted from the start of a topic (as retention does): the reader says from when on
    the history is whole, and that a replay from before then would miss changes."""
    topic = kafka.name("cdc.crm.product")
    admin = admin_client(module_settings.kafka)
    reader = Consumer(confluent_config(module_settings.kafka, {"group.id": "watermarks"}))
    try:
        held = [
            p
            for p in range(module_settings.topic_partitions)
            if watermarks(reader, TopicPartition(topic, p), 10)[1] > 0
        ]
    finally:
        reader.close()
    futures = admin.delete_records([TopicPartition(topic, p, 1) for p in held])
    for future in futures.values():
        future.result(10)
    _, retention = read_history(module_settings.kafka, "cty-a")
    oldest = retention.oldest_complete_ms()
    assert oldest is not None and topic in retention.gone_before_ms
    assert retention.gone(None) and retention.gone(oldest - 1) and not retention.gone(oldest)
