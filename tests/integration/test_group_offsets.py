"""What an owner with held changes reads of the group's committed offsets (``streams.loop.GroupOffsets``),
on the real broker: a transaction in flight is left out, not waited for, and counted once committed."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from common.topic_wait import watermarks
from streams.loop import GroupOffsets

pytestmark = pytest.mark.broker


def test_offsets_of_a_transaction_in_flight_are_left_out_at_once_and_read_once_committed(bootstrap):
    name = f"group-offsets-{uuid.uuid4().hex[:8]}"
    topic, group = f"{name}.input", f"{name}-group"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    try:
        plain = Producer({"bootstrap.servers": bootstrap})
        for n in range(3):
            plain.produce(topic, b"event %d" % n)
        plain.flush(10)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        assert watermarks(consumer, TopicPartition(topic, 0), timeout=10)[1] == 3
        router = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{name}-router"})
        router.init_transactions(30)
        router.begin_transaction()
        router.send_offsets_to_transaction([TopicPartition(topic, 0, 3)], consumer.consumer_group_metadata(), 30)
        offsets = GroupOffsets(admin, group)

        asked_at = time.monotonic()
        (in_flight,) = offsets([TopicPartition(topic, 0)], 10)
        waited = time.monotonic() - asked_at
        assert in_flight.offset < 0, "an offset of a transaction not committed yet counts as nothing routed"
        assert waited < 5, f"asked while a transaction was in flight, the answer took {waited:.1f} s"

        router.commit_transaction(30)
        deadline = time.monotonic() + 10
        while (committed := offsets([TopicPartition(topic, 0)], 10)[0].offset) != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert committed == 3
        consumer.close()
    finally:
        admin.delete_topics([topic])
