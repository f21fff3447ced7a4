"""Offsets of a partition that has no leader for a moment (a topic just created, a broker restarting)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from common.topic_wait import end_offsets, watermarks


class LeaderElectedLate:
    """A consumer whose partition answers ``code`` ``failures`` times, then its offsets."""

    def __init__(self, code: int, failures: int, *, retriable: bool = False) -> None:
        self.code = code
        self.failures = failures
        self.retriable = retriable
        self.asked = 0

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.asked <= self.failures:
            raise KafkaException(KafkaError(self.code, retriable=self.retriable))
        return 3, 17


@pytest.mark.parametrize(
    "code",
    [
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,  # a broker starting or restarting
        KafkaError._ALL_BROKERS_DOWN,
    ],
)
def test_a_partition_without_a_leader_yet_is_asked_again_until_it_answers(code: int) -> None:
    consumer = LeaderElectedLate(code, failures=2)

    assert watermarks(consumer, TopicPartition("cdc.crm.customer", 0), timeout=5) == (3, 17)
    assert consumer.asked == 3


def test_an_error_that_does_not_pass_is_raised_at_once() -> None:
    consumer = LeaderElectedLate(KafkaError.TOPIC_AUTHORIZATION_FAILED, failures=1)

    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("cdc.crm.customer", 0), timeout=5)
    assert consumer.asked == 1


def test_a_leader_that_never_comes_is_an_error_once_the_time_is_up() -> None:
    consumer = LeaderElectedLate(KafkaError.NOT_LEADER_FOR_PARTITION, failures=1_000)

    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("cdc.crm.customer", 0), timeout=0.5)
    assert 2 <= consumer.asked <= 5


def test_an_error_librdkafka_says_may_pass_is_asked_again() -> None:
    consumer = LeaderElectedLate(KafkaError.REQUEST_TIMED_OUT, failures=2, retriable=True)

    assert watermarks(consumer, TopicPartition("cdc.crm.customer", 0), timeout=5) == (3, 17)
    assert consumer.asked == 3


class TwoTopics:
    """A broker with ``cdc.crm.customer`` (2 partitions, ending at 5 and 8) and ``audit.sync`` (1, at 4)."""

    def __init__(self) -> None:
        self.ends = {("cdc.crm.customer", 0): 5, ("cdc.crm.customer", 1): 8, ("audit.sync", 0): 4}

    def list_topics(self, timeout: float) -> SimpleNamespace:
        partitions: dict[str, dict[int, object]] = {}
        for topic, partition in self.ends:
            partitions.setdefault(topic, {})[partition] = object()
        return SimpleNamespace(topics={t: SimpleNamespace(partitions=p) for t, p in partitions.items()})

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, self.ends[(partition.topic, partition.partition)]


def test_end_offsets_are_by_topic_and_partition_and_a_missing_topic_has_none() -> None:
    ends = end_offsets(TwoTopics(), ["cdc.crm.customer", "results.crm"], timeout=5)

    assert ends == {("cdc.crm.customer", 0): 5, ("cdc.crm.customer", 1): 8}
