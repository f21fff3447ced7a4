"""``lienthong lag``: committed offset, end offset and lag per consumer group, topic and partition.

Read with confluent-kafka's admin API (``list_consumer_groups``, ``list_consumer_group_offsets``,
``list_offsets``), the numbers ``kafka_consumergroup_lag`` of ``common/metrics.py`` exports. With a
topic prefix (``LIENTHONG_TOPIC_PREFIX``) only that deployment's topics are shown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from common.kafka_config import confluent_config
from common.settings import KafkaSettings


class LagError(RuntimeError):
    """The broker cannot be asked, or a named group has nothing committed; the message says what to do."""


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing on this partition
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - (self.committed or 0))


def _admin(kafka: KafkaSettings, timeout: float) -> AdminClient:
    return AdminClient(confluent_config(kafka, {"socket.timeout.ms": int(timeout * 1000)}))


def group_ids(admin: AdminClient, kafka: KafkaSettings, timeout: float) -> list[str]:
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException as exc:
        raise LagError(
            f"no Kafka broker answers at {kafka.bootstrap_servers} ({exc.args[0]}); start one "
            "(lienthong kafka start) or set LIENTHONG_BOOTSTRAP_SERVERS"
        ) from None
    return sorted(group.group_id for group in listed.valid)


def _list_topics(admin: AdminClient, kafka: KafkaSettings, timeout: float) -> dict[str, Any]:
    try:
        return dict(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise LagError(
            f"no Kafka broker answers at {kafka.bootstrap_servers} ({exc.args[0].str()}); start one "
            "(lienthong kafka start) or set LIENTHONG_BOOTSTRAP_SERVERS"
        ) from None


def read_lag(kafka: KafkaSettings, groups: list[str] | None = None, *, timeout: float = 10.0) -> list[LagRow]:
    """Every committed partition of ``groups`` (default: every group of the broker) on existing topics."""
    admin = _admin(kafka, timeout)
    topics = _list_topics(admin, kafka, timeout)
    known = group_ids(admin, kafka, timeout)
    if groups:
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise LagError(
                f"no consumer group {', '.join(unknown)} on {kafka.bootstrap_servers}; "
                f"groups there: {', '.join(known[:20]) or 'none'}{' …' if len(known) > 20 else ''}"
            )
    wanted = groups or known
    committed: dict[tuple[str, str, int], int | None] = {}
    for group in wanted:
        future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
        try:
            answer = future[group].result()
        except KafkaException as exc:
            raise LagError(f"could not read the offsets of group {group}: {exc.args[0]}") from None
        for tp in answer.topic_partitions or []:
            if not tp.topic.startswith(kafka.topic_prefix):
                continue
            committed[(group, tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    partitions = {(topic, p) for _, topic, p in committed if topic in topics and p in topics[topic].partitions}
    ends: dict[tuple[str, int], int] = {}
    if partitions:
        futures = admin.list_offsets(
            {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}, request_timeout=timeout
        )
        for tp, result in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = result.result().offset
            except KafkaException:
                continue  # the topic went away while we asked
    return sorted(
        (
            LagRow(group, topic, partition, offset, ends[(topic, partition)])
            for (group, topic, partition), offset in committed.items()
            if (topic, partition) in ends
        ),
        key=lambda row: (row.group, row.topic, row.partition),
    )


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: tuple[tuple[str, int], ...]  # (topic, partition) assigned to it


@dataclass(frozen=True)
class GroupState:
    """A consumer group as the broker describes it: its state and the members consuming for it."""

    group: str
    state: str  # stable, empty, preparing_rebalance, completing_rebalance, dead, unknown
    members: tuple[Member, ...]

    @property
    def summary(self) -> str:
        """The group in words, for people: plainly saying when nothing consumes for it."""
        if not self.members:
            return f"{self.state}: no member, nothing consumes for this group (start its workers or connectors)"
        return f"{self.state}: {len(self.members)} member(s)"


def describe_groups(kafka: KafkaSettings, groups: list[str], *, timeout: float = 10.0) -> list[GroupState]:
    """The state and members of each of ``groups`` (``describe_consumer_groups``)."""
    if not groups:
        return []
    admin = _admin(kafka, timeout)
    described: list[GroupState] = []
    for group, future in admin.describe_consumer_groups(groups, request_timeout=timeout).items():
        try:
            answer = future.result()
        except KafkaException as exc:
            raise LagError(f"could not describe group {group}: {exc.args[0]}") from None
        state = getattr(answer.state, "name", str(answer.state)).lower()
        members = tuple(
            sorted(
                (
                    Member(
                        member.member_id,
                        member.client_id or "",
                        member.host or "",
                        tuple(
                            sorted(
                                (tp.topic, tp.partition)
                                for tp in (member.assignment.topic_partitions if member.assignment else None) or []
                            )
                        ),
                    )
                    for member in answer.members or []
                ),
                key=lambda m: m.member_id,
            )
        )
        described.append(GroupState(group, state, members))
    return sorted(described, key=lambda g: g.group)


def require_topics(kafka: KafkaSettings, topics: list[str], *, timeout: float = 5.0) -> None:
    """Fail fast, before anything is written: the broker answers and every topic (prefix included) exists.
    A topic created a moment ago is waited for up to ``timeout``: a busy broker's metadata shows a new
    topic a little after its creation was acknowledged."""
    admin = _admin(kafka, timeout)
    deadline = time.monotonic() + timeout
    while True:
        present = _list_topics(admin, kafka, timeout)
        missing = sorted({topic for topic in topics if topic not in present})
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if missing:
        raise LagError(
            f"topic(s) {', '.join(missing)} not found on {kafka.bootstrap_servers}: create the contract's topics "
            "(lienthong topics create) or check LIENTHONG_TOPIC_PREFIX"
        )
