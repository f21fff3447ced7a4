"""The processing loop: one librdkafka consumer, one transactional producer, one batch at a time.

Each worker runs one ``ProcessingLoop`` in a thread of its own (``streams.app`` starts and stops it
with the faust worker). Its consumer, in the group ``<app id>``, reads two kinds of partitions that
the group spreads over its workers:

* **inputs** — every ``cdc.<system>.<entity>`` and ``results.<system>`` partition: each message is
  routed, unread, to its tenant's partition of the changes topic (``streams.agents.route``), and the
  router's progress follows it there (``streams.agents.time_order``) — or, when this worker owns that
  partition, decided at once (``streams.agents.changes``, "decided where it is read");
* **the changes topic** — each partition is owned by one worker, which holds the state of its
  tenants (``streams.tables``) and decides their changes (``streams.agents.changes``).

A batch is whatever the consumer has (up to ``LIENTHONG_BATCH_SIZE`` messages): routed and decided,
then made durable in one transaction with its offsets (``streams.checkpoint``). **Pipelined**: while a
batch's transaction commits (round trips to the broker, on a thread of its own), the next batch is
read and decided, reading the committing batch's state changes as if they were in the store; it is
handed to the transaction only once the one before has committed. When that one fails, the next is
dropped with it and both are read again; a rebalance waits for the committing batch first.

Group membership, partition assignment and rebalancing are librdkafka's. When the group gives a
worker a partition of the changes topic, that partition stays paused until its store has read its
changelog to the end (``Restoring``); then its held changes are loaded and it is resumed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from common import metrics
from streams.agents.batch import Batch, Processing
from streams.agents.changes import Deferred, Owned, Routed, decide_routed, release_held
from streams.agents.route import TenantPartitions, destination, route
from streams.agents.time_order import ARRIVAL_SLACK_MS, PROBE_INTERVAL_MS, HeldChanges, InputsAnswer, InputsPassed
from streams.checkpoint import BatchNotDurable, Checkpoint
from streams.tables.state import PartitionState
from streams.tables.store import PartitionStore, Stores

log = logging.getLogger(__name__)

# How long one consume call waits for a batch that does not fill (librdkafka's consume waits this
# long unless it fills): every change of such a batch waits it, twice (routed, then decided). 50 ms
# gave p50/p99 585/1470 ms at 1,600 changes/s offered; 10 ms gives 159/354 (docs/performance.md).
POLL_S = 0.01
# Changelog messages a restoring partition reads per turn of the loop (inputs keep moving meanwhile).
RESTORE_CHUNK = 10_000


@dataclass
class LoopConfig:
    """What the loop needs besides its clients: where it reads and how it batches."""

    input_topics: list[str]  # with the deployment's prefix
    changes_topic: str
    changelog_topic: str
    changes_partitions: int
    batch_size: int
    order_max_wait_s: float


@dataclass
class LoopStatus:
    """What ``/readyz`` and the metrics read of the loop (from another thread: plain values)."""

    assignments: int = 0  # how many times the group assigned this worker its partitions
    owned: set[int] = field(default_factory=set)
    restoring: set[int] = field(default_factory=set)
    running: bool = False
    stopped: bool = False
    ready: bool = False  # every partition of the first assignment restored (logged "Worker ready")


@dataclass
class Committing:
    """A batch handed to the transaction, not yet known to be durable."""

    batch: Batch
    first_offsets: dict[tuple[str, int], int]  # where it began, to read it again
    messages: int
    changes: int
    routed_here: bool  # it routed changes to a partition this worker owns: readable once it commits
    done: Future[None]


def first_offsets(messages: list[Any]) -> dict[tuple[str, int], int]:
    """Where ``messages`` begin, per partition (to read them again)."""
    begun: dict[tuple[str, int], int] = {}
    for message in messages:
        if message.error() is None:
            begun.setdefault((message.topic(), message.partition()), message.offset())
    return begun


class GroupOffsets:
    """The offsets the group has committed, as the broker has them now: what the loop asks of the
    inputs while changes are held (``streams.agents.time_order``).

    Asked without ``require_stable``: the broker answers the offsets last committed and leaves out a
    transaction still in flight, where a consumer's ``committed()`` under ``read_committed`` waits
    for it to end — in a backlog that is nearly always this worker's own batch, committing while the
    next is decided (35 ms a question, a fifth of the loop's time: docs/performance.md). Offsets
    older than the truth can only make an input look behind, never passed."""

    def __init__(self, admin: AdminClient, group: str) -> None:
        self.admin = admin
        self.group = group

    def __call__(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        asked = [ConsumerGroupTopicPartitions(self.group, partitions)]
        futures = self.admin.list_consumer_group_offsets(asked, require_stable=False, request_timeout=timeout)
        answer: list[TopicPartition] = futures[self.group].result().topic_partitions
        return answer


class Restoring:
    """Reads a partition's state changelog into its store before the partition is decided again."""

    def __init__(self, consumer: Consumer, changelog_topic: str) -> None:
        self.consumer = consumer  # assigned, not subscribed: no group
        self.topic = changelog_topic
        self.stores: dict[int, PartitionStore] = {}

    def start(self, stores: Iterable[PartitionStore]) -> None:
        starting = []
        for store in stores:
            self.stores[store.partition] = store
            offset = store.changelog_offset
            starting.append(
                TopicPartition(self.topic, store.partition, offset + 1 if offset >= 0 else OFFSET_BEGINNING)
            )
        if starting:
            self.consumer.incremental_assign(starting)

    def stop(self, partitions: Iterable[int]) -> None:
        stopping = [TopicPartition(self.topic, p) for p in partitions if self.stores.pop(p, None) is not None]
        if stopping:
            self.consumer.incremental_unassign(stopping)

    def read(self, limit: int) -> list[int]:
        """Apply up to ``limit`` changelog messages; the partitions restored to their end."""
        if not self.stores:
            return []
        done: list[int] = []
        writes: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        last: dict[int, int] = {}
        for message in self.consumer.consume(limit, POLL_S):
            error = message.error()
            partition = message.partition()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and partition in self.stores:
                    done.append(partition)
                else:
                    log.warning("restoring %s: %s", self.topic, error)
                continue
            if partition not in self.stores:
                continue
            writes[partition].append((message.key() or b"", message.value()))
            last[partition] = message.offset() or 0
        for partition, changes in writes.items():
            self.stores[partition].write(changes, last[partition])
        for partition in done:
            self.stop([partition])
        return done


class ProcessingLoop:
    """Route, decide, commit — until ``stop()``."""

    def __init__(
        self,
        *,
        config: LoopConfig,
        processing: Processing,
        consumer: Consumer,
        restore_consumer: Consumer,
        checkpoint: Checkpoint,
        group_offsets: Callable[[list[TopicPartition], float], list[TopicPartition]],
        stores: Stores,
        tenant_settings: Any,
        settings_current: Callable[[int], None],
        stop_worker: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.processing = processing
        self.consumer = consumer
        self.member_id: str | None = None  # in the group (set at each assignment)
        self.restoring = Restoring(restore_consumer, config.changelog_topic)
        self.checkpoint = checkpoint
        self.group_offsets = group_offsets  # the group's committed offsets (``GroupOffsets``)
        self.stores = stores
        self.tenant_settings = tenant_settings
        self.settings_current = settings_current  # waits until settings written before a moment are read
        self.stop_worker = stop_worker
        self.clock = clock
        self.status = LoopStatus()
        self.owned: dict[int, Owned] = {}
        self.inputs: set[tuple[str, int]] = set()  # every input partition (topic, partition)
        self._stop = threading.Event()
        self._last_probe_ms = 0
        self._changes_read_to: dict[int, int] = {}  # changes partitions read to their end: that end
        self._partition_of = TenantPartitions(config.changes_partitions)
        # owned partitions whose changes read on the inputs are decided at once: read to their end since
        # they were assigned (or a batch was read again), so that nothing routed earlier is still unread
        self._direct: set[int] = set()
        # one transaction at a time, on a thread of its own, while the loop decides the next batch
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lienthong-commit")
        self._committing: Committing | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """The loop (a thread of its own); a batch that cannot be made durable stops the worker."""
        self.status.running = True
        try:
            self.checkpoint.start()
            self.inputs = self._input_names()
            self.consumer.subscribe(
                [*self.config.input_topics, self.config.changes_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
            while not self._stop.is_set():
                self.turn()
            self.await_durable()
        except Exception:
            log.critical(
                "the processing loop failed; the worker stops and reads the batch again when restarted", exc_info=True
            )
            self.stop_worker()
            raise
        finally:
            self.status.running = False
            self.status.stopped = True
            self._close()

    def _close(self) -> None:
        self._committer.shutdown(wait=True)  # a transaction still committing ends before the stores close
        for client in (self.consumer, self.restoring.consumer):
            try:
                client.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing a consumer: %s", exc)
        self.stores.close()

    def _input_names(self) -> set[tuple[str, int]]:
        metadata = self.consumer.list_topics(timeout=30)
        names = set()
        for topic in self.config.input_topics:
            described = metadata.topics.get(topic)
            if described is None or described.error is not None:
                raise RuntimeError(f"topic {topic} does not exist: run `lienthong topics create` first")
            names |= {(topic, partition) for partition in described.partitions}
        return names

    # --- rebalancing (called by librdkafka inside consume) --------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        changes = [tp.partition for tp in partitions if tp.topic == self.config.changes_topic]
        # this member's id in the group, read here, in the consumer's own thread, for the lag exporter's
        # election (common.metrics): asked from another thread it is a round trip to librdkafka's
        self.member_id = consumer.memberid()
        consumer.assign(partitions)
        self._direct.difference_update(changes)
        if changes:
            consumer.pause([TopicPartition(self.config.changes_topic, p) for p in changes])
            self.restoring.start(self.stores.assign(p) for p in changes)
            self.status.restoring |= set(changes)
        self.status.assignments += 1
        metrics.REBALANCES.labels("worker").inc()
        if not changes:
            self._maybe_ready()
        by_topic: dict[str, list[int]] = defaultdict(list)
        for tp in partitions:
            by_topic[tp.topic].append(tp.partition)
        log.info(
            "assigned %d partition(s), %d of the changes topic to restore: %s",
            len(partitions),
            len(changes),
            "; ".join(f"{topic} {','.join(map(str, sorted(ps)))}" for topic, ps in sorted(by_topic.items())),
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the committing batch ends first: its offsets belong to this generation of the group, and its
        # state goes to stores about to close
        self.await_durable()
        changes = [tp.partition for tp in partitions if tp.topic == self.config.changes_topic]
        self.restoring.stop(changes)
        for partition in changes:
            self.owned.pop(partition, None)
            self._changes_read_to.pop(partition, None)
            self._direct.discard(partition)

            self.stores.revoke(partition)
            self.status.owned.discard(partition)
            self.status.restoring.discard(partition)
        log.info("revoked %d partition(s)", len(partitions))

    def _restored(self, partitions: list[int]) -> None:
        for partition in partitions:
            store = self.stores.open.get(partition)
            if store is None:
                continue
            held = HeldChanges()
            state = PartitionState(store, self.tenant_settings, self.processing.default_order_target)
            held.load(state.items_with_prefix("held", ""))
            self.owned[partition] = Owned(inputs=InputsPassed(), held=held)
            self.status.restoring.discard(partition)
            self.status.owned.add(partition)
            log.info("partition %d of the changes topic restored (%d held changes): deciding", partition, len(held))
        self.consumer.resume([TopicPartition(self.config.changes_topic, p) for p in partitions])
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if not self.status.restoring and not self.status.ready:
            self.status.ready = True
            log.info("Worker ready: deciding the changes of partition(s) %s", sorted(self.status.owned))

    # --- one turn -------------------------------------------------------------------------------

    def turn(self) -> None:
        """Restore a little, take a batch, make it durable."""
        if self.status.restoring:
            done = self.restoring.read(RESTORE_CHUNK)
            if done:
                self._restored(done)
        # librdkafka's consume waits its whole timeout unless the batch fills: that wait is what lets a
        # batch grow with the load, and a transaction per batch costs a few round trips whatever its size
        size = self.config.batch_size
        if self._committing is None:
            messages = self.consumer.consume(size, POLL_S)
        else:
            # A full batch waiting (a backlog) is decided while the one before commits, and so is any
            # batch when the one before routed nothing to a partition this worker owns. Otherwise the
            # next batch waits for that commit, which makes what it routed readable here: deciding
            # meanwhile would read those changes (mostly held ones) a batch later.
            messages = self.consumer.consume(size, 0)
            # read again: a rebalance inside consume (librdkafka calls _on_revoke there) waits for the
            # committing batch and leaves none
            committing = self._committing
            if len(messages) < size:
                if (
                    committing is not None
                    and committing.routed_here
                    and not self.await_durable(first_offsets=first_offsets(messages))
                ):
                    return
                messages += self.consumer.consume(size - len(messages), POLL_S)
        self.process(messages, now=self.clock())

    def process(self, messages: list[Any], *, now: float) -> None:
        """Route and decide one batch, then make it durable."""
        config = self.config
        batch = Batch(self.processing, int(now * 1000))
        consumed: set[tuple[str, int]] = set()
        begun = first_offsets(messages)  # where the batch began, to read it again
        at_end: dict[tuple[str, int], int] = {}  # partitions the consumer said are read to their end

        decided: dict[int, list[Any]] = defaultdict(list)
        direct: dict[int, list[tuple[Any, bytes]]] = defaultdict(list)  # (input message, its tenant)
        read_to_end: list[int] = []
        routed_here = False  # a change routed to a partition this worker owns (read once the batch commits)
        newest_ms = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    consumed.add((message.topic(), message.partition()))
                    at_end[(message.topic(), message.partition())] = message.offset()
                    if message.topic() == config.changes_topic:
                        self._changes_read_to[message.partition()] = message.offset()
                        read_to_end.append(message.partition())

                else:
                    log.warning("consumer: %s", error)
                continue
            topic, partition = message.topic(), message.partition()
            consumed.add((topic, partition))
            if topic == config.changes_topic:
                if message.value() is not None:
                    decided[partition].append(message)
                    newest_ms = max(newest_ms, message.timestamp()[1])
                continue
            bound = destination(message, self._partition_of)
            if bound is None:
                continue
            tenant, to = bound
            if to in self._direct:
                direct[to].append((message, tenant))
                newest_ms = max(newest_ms, message.timestamp()[1])
            else:
                batch.send(route(message, config.changes_topic, tenant, to))
                routed_here = routed_here or to in self.owned
        if newest_ms:
            # tenant settings written before the newest change reached the broker apply to the batch
            self.settings_current(newest_ms)
        changes = 0  # change events and results decided: the batch's size as users count it
        for partition, owned in self.owned.items():
            state = self._state(batch, partition)
            for message in decided.get(partition, ()):
                routed = Routed.of(message.key(), message.value(), message.headers() or [], message.offset())
                owned.deferred.read_back(routed.where)
                decide_routed(batch, state, owned, routed)
                changes += 1
            for message, tenant in direct.get(partition, ()):
                routed = Routed.read_directly(tenant, message)
                try:
                    decide_routed(batch, state, owned, routed, direct=True)
                    changes += 1
                except Deferred as deferred:  # it would be held: routed, and its record's next ones behind it
                    batch.send(route(message, config.changes_topic, tenant, partition))
                    routed_here = True
                    owned.deferred.add(routed.where, deferred.record_key)
        self._release_held(batch)
        self._direct.update(p for p in read_to_end if p in self.owned)
        # The consumer's positions, not the offsets after the last messages: a position moves past the
        # transaction markers that follow the last message of a transactional partition (the changes
        # topic), so a drained group shows no lag.
        # A partition read to its end commits its end: a consumer that has not consumed a message since
        # it was assigned has no position, though the end is past a transaction marker it skipped.
        positions = []
        for position in self.consumer.position([TopicPartition(t, p) for t, p in consumed]) if consumed else []:
            end = at_end.get((position.topic, position.partition), -1)
            if end > position.offset:
                position = TopicPartition(position.topic, position.partition, end)
            if position.offset >= 0:
                positions.append(position)

        # what each state writes, fixed before the next batch reads its values
        state_changed = [bool(state.sealed()) for state in batch.states.values()]
        if not self.await_durable(then=batch, first_offsets=begun):
            return  # the batch before failed: this one is dropped with it, both are read again
        if not batch.messages and not positions and not any(state_changed):
            return
        group_metadata = self.consumer.consumer_group_metadata()
        self._committing = Committing(
            batch,
            begun,
            len(messages),
            changes,
            routed_here,
            self._committer.submit(self.checkpoint.make_durable, batch, positions, group_metadata),
        )

    def await_durable(
        self, *, then: Batch | None = None, first_offsets: dict[tuple[str, int], int] | None = None
    ) -> bool:
        """Wait until the committing batch is durable, then count it; whether it is.

        ``then``: the batch decided meanwhile, on top of its state (``first_offsets``: where it began).
        A committing batch that failed is read again from where it began, and ``then`` with it."""
        committing, self._committing = self._committing, None
        if committing is None:
            return True
        try:
            committing.done.result()
        except BatchNotDurable as failed:
            # Nothing of the batch is visible and its offsets are not committed.
            if failed.retriable:
                log.warning("the batch is read again: %s", failed)
                self._read_again({**(first_offsets or {}), **committing.first_offsets})
                return False
            log.critical("a batch could not be made durable; the worker stops and reads it again when restarted")
            self.stop_worker()
            raise
        if then is not None:
            for state in then.states.values():
                state.committing = None  # in the store now
        committing.batch.tallied()
        counts = self.processing.counts
        counts["messages"] += committing.messages
        counts["batches"] += 1 if committing.messages else 0
        if committing.changes:
            metrics.BATCH_SIZE.observe(committing.changes)
        return True

    def _read_again(self, first_offsets: dict[tuple[str, int], int]) -> None:
        """After an aborted transaction: the consumer back to where the batch began, the held changes as
        the stores have them (the stores were not written: nothing of the batch was), and how far the
        inputs passed asked again."""
        for (topic, partition), offset in first_offsets.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner reads it from the commit
                log.info("not reading %s@%s again here: %s", topic, partition, exc)
        default = self.processing.default_order_target
        # changes routed in the dropped batches are read back as anything routed: until each partition
        # is read to its end again, its tenants' changes are routed too
        self._direct.clear()
        for partition, owned in self.owned.items():
            state = PartitionState(self.stores.open[partition], self.tenant_settings, default)
            owned.held.load(state.items_with_prefix("held", ""))
            owned.deferred.clear()
            # what it knew the inputs had passed counted changes of the batch as decided: ask again
            owned.inputs = InputsPassed()

    # --- time order (streams.agents.time_order) -----------------------------------------------------

    def _release_held(self, batch: Batch) -> None:
        """Ask how far the inputs are (while changes are held), then decide the held changes they passed
        or that waited too long."""
        holding = [partition for partition, owned in self.owned.items() if owned.held.by_record]
        if not holding:
            return
        if batch.now_ms - self._last_probe_ms >= PROBE_INTERVAL_MS:
            self._last_probe_ms = batch.now_ms
            newest = max(self.owned[partition].held.newest_ms() for partition in holding)
            self._ask_inputs(min(newest, batch.now_ms - ARRIVAL_SLACK_MS), holding)
        positions = self.consumer.position([TopicPartition(self.config.changes_topic, p) for p in holding])
        for position in positions:
            # a partition with nothing new since it was assigned has no position: its end, as read
            read = max(position.offset, self._changes_read_to.get(position.partition, -1))
            self.owned[position.partition].inputs.read_to(read)

        max_wait_ms = int(self.config.order_max_wait_s * 1000)
        for partition in holding:
            release_held(batch, self._state(batch, partition), self.owned[partition], max_wait_ms)

    def _ask_inputs(self, at_ms: int, holding: list[int]) -> None:
        """Whether every input has routed and committed every event stamped before ``at_ms``; if so, each
        holding partition counts it once read to the end it has then.

        Asked in this order: the inputs' ends, then the group's committed offsets (``GroupOffsets``:
        transactions in flight left out) — an input committed to its end has routed everything stamped
        before ``at_ms`` and is not asked more; then, for the others only, the first offset stamped
        ``at_ms`` or later (the broker looks each partition's time index up); the changes topic's ends
        last, so that a router's transaction committed between these questions is within them (asked
        before the committed offsets, its routed changes could lie beyond the end the owner reads to,
        though the offsets say they were routed)."""
        if at_ms < 0:
            return
        inputs = sorted(self.inputs)
        consumer = self.consumer
        try:
            ends = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.offsets_for_times([TopicPartition(t, p, OFFSET_END) for t, p in inputs], 10)
            }
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in self.group_offsets([TopicPartition(t, p) for t, p in inputs], 10)
            }
            # asked nothing more, an input is behind unless committed to its end
            answer = InputsAnswer(at_ms=at_ms, first_at_or_after={}, ends=ends, committed=committed)
            behind = [TopicPartition(t, p, at_ms) for t, p in answer.behind()]
            if behind:
                first = consumer.offsets_for_times(behind, 10)
                answer = dataclasses.replace(
                    answer, first_at_or_after={(tp.topic, tp.partition): tp.offset for tp in first}
                )
            if answer.behind():
                return
            changes = [TopicPartition(self.config.changes_topic, p, OFFSET_END) for p in holding]
            changes_ends = consumer.offsets_for_times(changes, 10)
        except KafkaException as exc:
            log.warning("could not ask the broker how far the inputs are (held changes wait): %s", exc)
            return
        for tp in changes_ends:
            self.owned[tp.partition].inputs.answered(at_ms, tp.offset)

    def _state(self, batch: Batch, partition: int) -> PartitionState:
        state = batch.states.get(partition)
        if state is None:
            store = self.stores.open[partition]
            committing = self._committing.batch.states.get(partition) if self._committing is not None else None
            state = PartitionState(
                store, self.tenant_settings, self.processing.default_order_target, committing=committing
            )
            batch.states[partition] = state
        return state
