"""The consumer-group lag collector against the real broker: a group with known committed offsets."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import ConsumerGroupLagCollector

BOOTSTRAP = os.environ.get("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")


@pytest.fixture()
def topic():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    name = f"metrics-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(15)
    yield name
    admin.delete_topics([name])[name].result(15)


@pytest.mark.broker
def test_lag_is_end_offset_minus_committed_per_partition_and_summed_per_topic(topic):
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for n in range(10):
        producer.produce(topic, value=b"x%d" % n, partition=0)
    for n in range(4):
        producer.produce(topic, value=b"y%d" % n, partition=1)
    assert producer.flush(15) == 0
    group = f"group-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)], asynchronous=False)
    consumer.close()

    collector = ConsumerGroupLagCollector(BOOTSTRAP, [group], timeout=5.0)
    assert collector.lags() == {(group, topic, 0): 7, (group, topic, 1): 0}

    registry = CollectorRegistry()
    registry.register(collector)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert {
        (s.name, tuple(sorted(s.labels.items())), s.value) for s in families["kafka_consumergroup_lag"].samples
    } == {
        ("kafka_consumergroup_lag", (("consumergroup", group), ("partition", "0"), ("topic", topic)), 7.0),
        ("kafka_consumergroup_lag", (("consumergroup", group), ("partition", "1"), ("topic", topic)), 0.0),
    }
    assert [(s.labels, s.value) for s in families["kafka_consumergroup_lag_sum"].samples] == [
        ({"consumergroup": group, "topic": topic}, 7.0)
    ]


def test_a_broker_that_does_not_answer_does_not_hang_a_scrape():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens once closed
    collector = ConsumerGroupLagCollector(nowhere, ["some-group"], timeout=0.5)
    started = time.monotonic()
    assert collector.lags() == {}
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    assert next(iter(collector.collect())).samples == []  # the refresh still running: the last values (none)
    assert time.monotonic() - started < 1.5
