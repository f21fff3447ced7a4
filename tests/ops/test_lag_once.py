"""Consumer-group lag on the real broker: exported once per group however many replicas serve
``/metrics`` (the elected exporter, ``ConsumerGroupLagCollector(member_id=…)``), equal to the admin
client's numbers (what ``kafka-consumer-groups.sh --describe`` prints: end offset − committed offset
per partition; the local broker's jars do not include that script), and ``describe_groups`` saying
each group's state and members, plainly when it has none."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import ConsumerGroupLagCollector
from common.settings import KafkaSettings
from ops.lag import describe_groups, read_lag

BOOTSTRAP = os.environ.get("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
PARTITIONS = 4


@pytest.fixture()
def topic():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    name = f"lag-once-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])[name].result(15)
    yield name
    admin.delete_topics([name])[name].result(15)


def scraped(collector: ConsumerGroupLagCollector, name: str) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    family = families.get(name)
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples} if family else {}


@pytest.mark.broker
def test_two_replicas_export_their_groups_lag_once_and_lag_describes_the_group(topic):
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for partition in range(PARTITIONS):
        for n in range(10):
            producer.produce(topic, value=b"%d" % n, partition=partition)
    assert producer.flush(15) == 0
    group = f"group-{uuid.uuid4().hex[:8]}"
    replicas = [
        Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False}) for _ in range(2)
    ]
    for consumer in replicas:
        consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while not all(c.assignment() for c in replicas) or sum(len(c.assignment()) for c in replicas) != PARTITIONS:
        assert time.monotonic() < deadline, "the two consumers were never both assigned"
        for consumer in replicas:
            consumer.poll(0.2)
    for consumer in replicas:  # each commits 3 on its partitions: a lag of 7 per partition
        consumer.commit(
            offsets=[TopicPartition(topic, tp.partition, 3) for tp in consumer.assignment()], asynchronous=False
        )
    try:
        kafka = KafkaSettings(bootstrap_servers=BOOTSTRAP)
        rows = [row for row in read_lag(kafka, [group]) if row.topic == topic]
        assert [(row.partition, row.committed, row.end, row.lag) for row in rows] == [
            (p, 3, 10, 7) for p in range(PARTITIONS)
        ]

        collectors = [
            ConsumerGroupLagCollector(BOOTSTRAP, [group], timeout=5.0, member_id=consumer.memberid)
            for consumer in replicas
        ]
        sums = [scraped(c, "kafka_consumergroup_lag_sum") for c in collectors]
        # exactly one replica exports the group, and what Prometheus sums is the group's lag, once
        assert sorted(len(s) for s in sums) == [0, 1]
        assert sum(v for s in sums for v in s.values()) == sum(row.lag for row in rows) == 28
        per_partition = [scraped(c, "kafka_consumergroup_lag") for c in collectors]
        assert sum(len(p) for p in per_partition) == PARTITIONS

        (described,) = describe_groups(kafka, [group])
        assert described.state == "stable"
        assert len(described.members) == 2
        assert sorted(p for m in described.members for p in m.partitions) == [(topic, p) for p in range(PARTITIONS)]
        assert {m.member_id for m in described.members} == {c.memberid() for c in replicas}
    finally:
        for consumer in replicas:
            consumer.close()

    deadline = time.monotonic() + 30
    while (described := describe_groups(kafka, [group])[0]).members:
        assert time.monotonic() < deadline, "the closed consumers stayed members"
        time.sleep(0.2)
    assert described.state == "empty"
    assert "no member, nothing consumes for this group" in described.summary
