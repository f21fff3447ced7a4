"""The agent tier: the real processing loop (``streams.app.build_loop``) with fake Kafka clients at its edge.

``World`` is a broker in memory: what the loop's transactional producer commits is kept per topic and
partition (an aborted or never committed transaction leaves nothing), its consumer reads what a test
puts on the input topics and what the loop itself routed to the changes topic, and its restore
consumer reads the committed state changelog. A test puts change events and results on their
topics and runs the loop until nothing is left to route or decide; then reads the commands, audit
records and dead letters it committed. Several loops can share one world: a worker that stops and
another that takes its partitions, as on a real broker.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition

from common.names import AUDIT, DLQ_CDC, System, changes_topic, commands_topic, results_topic, state_changelog_topic
from common.settings import KafkaSettings
from streams.app import build_loop
from streams.core.rules import load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings
from streams.loop import ProcessingLoop
from streams.settings import TableSettings, WorkerSettings
from streams.topics import cdc_topics

NOW_MS = 1_800_000_000_000  # the workers' clock in these tests
ROUND_MS = 300  # how far it moves between two batches of ``Worker.run``
APP_ID = "agent-test"
INPUT_PARTITIONS = 2


class EndOfPartition:
    """librdkafka's "_PARTITION_EOF" event as the consumer hands it out."""

    def code(self) -> int:
        return KafkaError._PARTITION_EOF


@dataclass
class Record:
    """One message on the world's broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    timestamp_ms: int
    eof: bool = False
    marker: bool = False  # a transaction's commit marker: an offset, no message

    def error(self) -> Any:
        return EndOfPartition() if self.eof else None

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)


class Message:
    """A ``Record`` as ``confluent_kafka.Message`` (methods, not attributes)."""

    def __init__(self, record: Record) -> None:
        self._record = record

    def topic(self) -> str:
        return self._record.topic

    def partition(self) -> int:
        return self._record.partition

    def offset(self) -> int:
        return self._record.offset

    def key(self) -> bytes | None:
        return self._record.key

    def value(self) -> bytes | None:
        return self._record.value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._record.headers

    def timestamp(self) -> tuple[int, int]:
        return self._record.timestamp()

    def error(self) -> Any:
        return self._record.error()


def end_of(topic: str, partition: int, end: int) -> Message:
    """The event librdkafka hands out when a partition is read to its end (its offset: the end)."""
    return Message(Record(topic, partition, end, None, None, None, 0, eof=True))


@dataclass
class World:
    """A broker in memory, shared by the loops of a test."""

    partitions: dict[str, int] = field(default_factory=dict)
    log: dict[tuple[str, int], list[Record]] = field(default_factory=lambda: defaultdict(list))
    group_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # committed by the workers' group

    def append(self, topic: str, partition: int, key, value, headers, timestamp_ms: int) -> Record:
        records = self.log[(topic, partition)]
        record = Record(topic, partition, len(records), key, value, list(headers or []) or None, timestamp_ms)
        records.append(record)
        return record

    def partition_of(self, topic: str, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions[topic]

    def records(self, topic: str) -> list[Record]:
        return [record for (name, _p), records in sorted(self.log.items()) if name == topic for record in records]


class FakeProducer:
    """A transactional producer: what a transaction produced reaches the world when it commits."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pending: list[tuple[str, int, Any, Any, Any, Any]] = []
        self.offsets: list[TopicPartition] = []
        self.in_transaction = False
        # the next commit fails: "fenced" (a newer worker took over: fatal) or "abortable" (the broker was
        # away longer than the transaction may take)
        self.fail_commit: str | None = None

    def init_transactions(self, timeout: float = 0) -> None:
        return None

    def begin_transaction(self) -> None:
        assert not self.in_transaction, "a transaction is already open"
        self.in_transaction = True

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None, headers=None, **_: Any) -> None:
        assert self.in_transaction, "produced outside a transaction"
        if partition < 0:
            partition = self.world.partition_of(topic, key)
        self.pending.append((topic, partition, key, value, headers, on_delivery))

    def send_offsets_to_transaction(self, positions, group_metadata, timeout: float = 0) -> None:
        self.offsets = list(positions)

    def commit_transaction(self, timeout: float = 0) -> None:
        if self.fail_commit:
            failure, self.fail_commit = self.fail_commit, None
            if failure == "fenced":
                raise KafkaException(KafkaError(KafkaError._FENCED, "fenced by a newer worker", fatal=True))
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "the broker did not answer", txn_requires_abort=True)
            )
        for topic, partition, key, value, headers, on_delivery in self.pending:
            record = self.world.append(topic, partition, key, value, headers, NOW_MS)
            if on_delivery is not None:
                on_delivery(None, Message(record))
        for position in self.offsets:
            self.world.group_offsets[(position.topic, position.partition)] = position.offset
        self.pending, self.offsets, self.in_transaction = [], [], False

    def abort_transaction(self, timeout: float = 0) -> None:
        self.pending, self.offsets, self.in_transaction = [], [], False

    def poll(self, timeout: float = 0) -> int:
        return 0


class FakeConsumer:
    """The loop's consumer: hands out what the test queued, then the end of every input."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.queue: list[Message] = []
        self.read: dict[tuple[str, int], int] = {}  # the next offset of each partition (Worker.pending)
        self.delivered: set[tuple[str, int]] = set()  # partitions a message was handed out of

        self.paused: set[tuple[str, int]] = set()
        self.assignment: list[TopicPartition] = []

    def memberid(self) -> str:
        return "fake-member"

    def list_topics(self, timeout: float = 0) -> Any:
        topics = {
            name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(count)))
            for name, count in self.world.partitions.items()
        }
        return SimpleNamespace(topics=topics)

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def assign(self, partitions) -> None:
        self.assignment = list(partitions)
        self.delivered.clear()

    def seek(self, partition: TopicPartition) -> None:
        self.read[(partition.topic, partition.partition)] = partition.offset

    def pause(self, partitions) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[Message]:
        taken, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return taken

    def position(self, partitions) -> list[TopicPartition]:
        """Where the consumer is: after everything ``pending`` handed out; as librdkafka, no position
        (-1001) for a partition no message was handed out of since it was assigned."""
        answers = []
        for tp in partitions:
            where = (tp.topic, tp.partition)
            answers.append(TopicPartition(*where, self.read[where] if where in self.delivered else -1001))
        return answers

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = False, timeout: float = 0):
        return 0, len(self.world.log[(partition.topic, partition.partition)])

    def offsets_for_times(self, partitions, timeout: float = 0) -> list[TopicPartition]:
        """The first offset stamped at the asked time or later (-1: none); OFFSET_END asks the end."""
        answers = []
        for tp in partitions:
            records = self.world.log[(tp.topic, tp.partition)]
            if tp.offset == OFFSET_END:
                offset = len(records)
            else:
                offset = next((r.offset for r in records if r.timestamp_ms >= tp.offset), -1)
            answers.append(TopicPartition(tp.topic, tp.partition, offset))
        return answers

    def committed(self, partitions, timeout: float = 0) -> list[TopicPartition]:
        offsets = self.world.group_offsets
        return [
            TopicPartition(tp.topic, tp.partition, offsets.get((tp.topic, tp.partition), -1001)) for tp in partitions
        ]

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def close(self) -> None:
        return None


class FakeRestoreConsumer:
    """Reads the committed state changelog of the partitions it is given, then says each ended."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.assigned: dict[int, int] = {}  # partition -> next offset

    def incremental_assign(self, partitions) -> None:
        for tp in partitions:
            self.assigned[tp.partition] = max(tp.offset, 0)

    def incremental_unassign(self, partitions) -> None:
        for tp in partitions:
            self.assigned.pop(tp.partition, None)

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[Message]:
        out: list[Message] = []
        topic = state_changelog_topic(APP_ID)
        for partition, offset in list(self.assigned.items()):
            for record in self.world.log[(topic, partition)][offset:]:
                out.append(Message(record))
            self.assigned[partition] = len(self.world.log[(topic, partition)])
            out.append(end_of(topic, partition, self.assigned[partition]))

        return out

    def close(self) -> None:
        return None


class TenantSettingsByHand:
    """Tenant settings a test sets directly (the config.tenants reader is tested on the broker)."""

    def __init__(self) -> None:
        self.by_tenant: dict[str, SyncSettings] = {}

    def get(self, tenant: str) -> SyncSettings:
        return self.by_tenant.get(tenant) or DEFAULT_SETTINGS


def worker_settings(tmp_path, store: str = "memory://", **given: Any) -> WorkerSettings:
    return WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix=""),
        tables=TableSettings(store=store, data_dir=tmp_path),
        app_id=APP_ID,
        web_enabled=False,
        **given,
    )


class Worker:
    """One worker on the world: the real loop, its fake clients, and how a test drives it."""

    def __init__(self, world: World, tmp_path, *, store: str = "memory://", **settings: Any) -> None:
        self.world = world
        self.consumer = FakeConsumer(world)
        self.restore = FakeRestoreConsumer(world)
        self.producer = FakeProducer(world)
        self.tenants = TenantSettingsByHand()
        self.stopped = False
        self.loop: ProcessingLoop = build_loop(
            worker_settings(tmp_path, store, **settings),
            load_rules(),
            tenant_settings=self.tenants,
            settings_current=lambda as_of_ms: None,
            stop_worker=self._stop,
            consumer=self.consumer,
            restore=self.restore,
            producer=self.producer,
            group_offsets=self.consumer.committed,
            changes_partitions=world.partitions[changes_topic(APP_ID)],
        )

    def _stop(self) -> None:
        self.stopped = True

    @property
    def counts(self):
        return self.loop.processing.counts

    def start(self, partitions: list[TopicPartition] | None = None) -> None:
        """Subscribe, get ``partitions`` (all of them by default) and restore their state."""
        loop = self.loop
        loop.checkpoint.start()
        loop.inputs = loop._input_names()
        loop.consumer.subscribe([], on_assign=loop._on_assign, on_revoke=loop._on_revoke)
        if partitions is None:
            partitions = every_subscribed_partition(self.world)
        loop._on_assign(self.consumer, partitions)
        while loop.status.restoring:
            loop.turn()
        for tp in partitions:  # read on from what the group committed
            self.consumer.read[(tp.topic, tp.partition)] = self.world.group_offsets.get((tp.topic, tp.partition), 0)

    def owns(self, topic: str, partition: int) -> bool:
        return any(tp.topic == topic and tp.partition == partition for tp in self.consumer.assignment)

    def pending(self) -> list[Message]:
        """What the consumer would hand out now: every record of its partitions not read yet, then the
        end of each input (paused partitions excepted)."""
        out: list[Message] = []
        for tp in self.consumer.assignment:
            where = (tp.topic, tp.partition)
            if where in self.consumer.paused:
                continue
            records = self.world.log[where]
            start = self.consumer.read.get(where, 0)
            # a transaction marker takes an offset and is never handed out (librdkafka skips it)
            handed = [Message(record) for record in records[start:] if not record.marker]
            out += handed
            if handed:
                self.consumer.delivered.add(where)

            self.consumer.read[where] = len(records)

            out.append(end_of(tp.topic, tp.partition, len(records)))

        return out

    def _holding(self) -> bool:
        return any(owned.held.by_record for owned in self.loop.owned.values())

    def step(self, *, now_ms: int = NOW_MS) -> bool:
        """One batch: what the consumer has now. Whether it held any message."""
        messages = self.pending()
        self.loop.process(messages, now=now_ms / 1000)
        self.loop.await_durable()  # a test looks at the batch once it is durable
        return any(message.error() is None for message in messages)

    def run(self, *, rounds: int = 20, now_ms: int = NOW_MS) -> None:
        """Route and decide until nothing new is left for this worker (its clock moves on a little
        each round, as a worker's does between batches)."""
        for n in range(rounds):
            if not self.step(now_ms=now_ms + n * ROUND_MS) and not self._holding():
                return
        raise AssertionError(f"the loop still had messages after {rounds} rounds")


def every_subscribed_partition(world: World) -> list[TopicPartition]:
    """Every partition a worker's consumer subscribes to: the inputs and the changes topic."""
    topics = [spec.name for spec in cdc_topics()] + [results_topic(system) for system in System]
    topics.append(changes_topic(APP_ID))
    return [TopicPartition(topic, p) for topic in topics for p in range(world.partitions[topic])]


def new_world(changes_partitions: int = 3) -> World:
    world = World()
    for name in (commands_topic(System.CRM), commands_topic(System.ACCT), AUDIT, DLQ_CDC):
        world.partitions[name] = 1
    for spec in cdc_topics():
        world.partitions[spec.name] = INPUT_PARTITIONS
    for system in System:
        world.partitions[results_topic(system)] = INPUT_PARTITIONS
    world.partitions[changes_topic(APP_ID)] = changes_partitions
    world.partitions[state_changelog_topic(APP_ID)] = changes_partitions
    return world


@pytest.fixture()
def world() -> World:
    return new_world()


@pytest.fixture()
def worker(world, tmp_path) -> Worker:
    started = Worker(world, tmp_path)
    started.start()
    return started


def put(world: World, topic: str, key: bytes | None, value: bytes | None, headers=None, *, at_ms: int | None = None):
    """A message on an input topic, on the partition its key hashes to; it reached Kafka ``at_ms``."""
    return world.append(topic, world.partition_of(topic, key), key, value, headers, at_ms or NOW_MS - 5_000)


def sent(world: World, topic: str) -> list[tuple[bytes | None, Any]]:
    """(key, JSON value) of every committed message of ``topic``."""
    return [(record.key, orjson.loads(record.value)) for record in world.records(topic) if record.value is not None]


def headers_of(world: World, topic: str) -> list[dict[str, bytes]]:
    return [dict(record.headers or []) for record in world.records(topic)]


def change(**overrides):
    event = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant": "t1",
        "system": "acct",
        "entity": "customer",
        "op": "c",
        "origin": "user",
        "ts_ms": 1,
        "before": None,
        "after": {"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
    }
    event.update(overrides)
    return orjson.dumps(event)
