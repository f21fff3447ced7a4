"""Where the processor reaches into faust-streaming's (and mode's) private internals, and nowhere else.

The agents, tables and app call what this module names; faust's underscored attributes, methods
and context variables are touched here only, so an upgrade of faust-streaming is checked here:

* **The transport** (``install``): faust's aiokafka consumer, with what it takes for no offset to
  be committed unread (below).
* **Streams** (``processing_passively``): a stream that drains its channel on its own while a
  processor sees each event, as faust's ``take_events`` does (``streams.agents.batching``).
* **The current event** (``as_current_event``): the context variable behind ``faust.current_event()``.
* **Tables and stores** (``TableOnStore``, ``GlobalTableOnStore``, ``OnePartitionRocksDBStore``,
  ``active_rocksdb_databases``): the store class a table builds, a RocksDB store that keeps every
  key in one partition's database, and the databases a store has open (``streams.tables.stores``).

faust's aiokafka transport
--------------------------

faust-streaming 0.15 commits offsets its agents never saw in three ways, all reproduced here
(docs/decisions.md, "Skipped offsets after kill -9"):

1. **A partition never committed was not re-read at start-up.** While tables recover, faust drops
   the records it fetched for input partitions and relies on "seek to committed" to read them
   again; aiokafka seeks only partitions that have a committed offset. Such partitions are now
   sought to their beginning (input partitions only: changelogs are read by the recovery itself).
2. **Records delivered around a seek were lost, then committed past.** At the end of a recovery
   faust seeks the input partitions back to their committed offsets *while its fetch loop keeps
   delivering*, then clears the agents' queues. Records fetched in that window moved the
   consumer's position past what was cleared, and faust's gap logic (meant for offsets the broker
   does not return: compaction, transaction markers) counted the jump as processed. Now the fetch
   loop is *parked* from the seek until faust resumes the flow (after the clear); before fetching
   again it seeks to the committed offsets itself, in the same task that fetches, so no fetch can
   overlap it, and every batch fetched before that is dropped unread.
3. **The commit check was off by one and skipped unknown starts.** faust refused to commit past a
   hole only when the first acked offset was two or more past the committed one, and not at all
   when the committed offset was 0 or unknown. A hole is now bridged only where the broker
   itself returned no record (between two records delivered in one fetch epoch, or between the
   position after a seek and the first record), and nothing is committed unless the acked run
   starts exactly at the committed offset.

And one change for speed: faust raced every message's delivery against "flow suspended" with four
new futures per message, more than delivering it cost; the race now covers a fetched batch.

Work redone because of these is ordinary at-least-once redelivery, which the processor
deduplicates by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, cast

import faust
from aiokafka import errors as aiokafka_errors
from aiokafka.structs import TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event  # the context variable behind faust.current_event()
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ChannelT, EventT, Message, StoreT
from faust.utils.functional import consecutive_numbers
from mode.utils.aiter import aiter
from yarl import URL

YIELD_EVERY = 100

# What a fetched batch that cannot be read raises: a codec missing here, a corrupt batch, a
# decompression library refusing its input.
UNREADABLE = (
    aiokafka_errors.UnsupportedCodecError,
    aiokafka_errors.CorruptRecordException,
    ValueError,
)  # messages delivered between two returns to the event loop (health checks, timers)


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        result: Mapping[Any, int] = await self.call_thread(self._seek_to_committed_or_beginning)
        return result

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int] = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics
        never_committed = [
            tp for tp, offset in committed.items() if (offset is None or offset <= 0) and tp.topic not in changelogs
        ]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Mapping[Any, Any]:
        # Where each partition stood: a batch that raises loses the records aiokafka had already
        # taken from the partitions before it in the same call, which are then read again.
        positions = _positions(consumer)
        try:
            records: Mapping[Any, Any] = await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
            return records
        except UNREADABLE as exc:
            self._skip_unreadable(consumer, exc, positions)
            return {}

    def _skip_unreadable(self, consumer: Any, error: BaseException, positions: dict[Any, int]) -> None:
        """A fetched batch could not be read (a compression codec this worker lacks, a corrupt
        batch): stop reading the partition it came from, say so, and put the others back where
        they stood, to be read again."""
        tp = _partition_of(error)
        if tp is None:
            raise error  # not a partition's batch: nothing to skip
        fetcher = consumer._fetcher
        consumer.pause(tp)
        fetcher._records.pop(tp, None)  # the unreadable batch: left there, every fetch would raise again
        now = _positions(consumer)
        for other, position in positions.items():
            if other != tp and now.get(other) != position:
                consumer.seek(other, position)
        self.log.error(
            "cannot read %s partition %s at offset %s: %s: %s. The partition is paused and the worker goes on "
            "with the others; install what is missing (the codecs come with aiokafka[lz4,snappy,zstd]) or repair "
            "the partition, then restart the worker to read it from where it stopped.",
            tp.topic,
            tp.partition,
            positions.get(tp),
            type(error).__name__,
            error,
        )

    def verify_event_path(self, now: float, tp: TP) -> None:
        # faust's livelock check reads the partition's position, which aiokafka asserts is known; a
        # changelog partition awaiting its offset reset (none committed, none sought) has none yet.
        state = self._ensure_consumer()._fetcher._subscriptions.subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition)
        )
        if state is None or not state.has_valid_position:
            return None
        return super().verify_event_path(now, tp)


def _positions(consumer: Any) -> dict[Any, int]:
    """Each assigned partition's position (the next offset it will return), where it has one."""
    subscription = consumer._fetcher._subscriptions.subscription
    if subscription is None or subscription.assignment is None:
        return {}
    assignment = subscription.assignment
    positions = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            positions[tp] = state.position
    return positions


def _partition_of(error: BaseException) -> Any:
    """The partition whose fetched batch raised ``error``: aiokafka unpacks a partition's records in
    ``PartitionRecords._unpack_records``, whose ``tp`` names it (its errors do not)."""
    trace = error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        if frame.f_code.co_name == "_unpack_records" and "tp" in frame.f_locals:
            return frame.f_locals["tp"]
        trace = trace.tb_next
    return None


class Consumer(faust_aiokafka.Consumer):
    # Bumped whenever the consumer is parked: a batch fetched in an earlier epoch may hold records
    # from before a seek and is dropped.
    _seek_epoch = 0
    # From a rebalance or seek until faust resumes the flow: deliver no input record (changelog
    # records, which the table recovery reads, still go).
    _parked = False
    # Set when the flow resumes: the fetch loop seeks to the committed offsets before it fetches.
    _seek_before_fetch = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per input partition: the offset of the last record delivered in this epoch, and where
        # the consumer stood after its last seek (the offsets before the first record it returns
        # are ones the broker does not have)
        self._last_delivered: dict[TP, int] = {}
        self._sought_position: dict[TP, int] = {}

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _park(self) -> None:
        self._parked = True
        self._seek_epoch += 1
        self._last_delivered.clear()
        self._sought_position.clear()

    async def perform_seek(self) -> None:
        self._park()
        await super().perform_seek()

    async def seek(self, partition: TP, offset: int) -> None:
        self._park()
        await super().seek(partition, offset)

    def resume_flow(self) -> None:
        super().resume_flow()
        self._seek_before_fetch = True
        self._parked = False

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._park()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._park()
        await super().on_partitions_assigned(assigned, generation_id)

    async def _seek_here(self) -> bool:
        """Seek the input partitions to their committed offsets from the fetch loop; False when a
        park happened meanwhile (another rebalance)."""
        epoch = self._seek_epoch
        await super().perform_seek()
        changelogs = self.app.tables.changelog_topics
        positions: dict[TP, int] = {}
        for tp in self.assignment():
            if tp.topic not in changelogs:
                position = await self.position(tp)
                if position is not None:
                    positions[tp] = position
        if epoch != self._seek_epoch or self._parked:
            return False
        self._sought_position = positions
        self._last_delivered.clear()
        return True

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - driven by the worker
        """The fetch loop (faust's, parked around seeks and racing suspension once per batch)."""
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                if self._seek_before_fetch and not self._parked:
                    self._seek_before_fetch = False
                    if not await self._seek_here():
                        continue
                epoch = self._seek_epoch
                batch = [(tp, message) async for tp, message in self.getmany(timeout=1.0)]
                await self.sleep(0)
                if batch and not self.should_stop:
                    await self.wait_first(self._deliver(batch, epoch), self.suspend_flow.wait())
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise

    async def _deliver(self, batch: list[tuple[TP, Message]], epoch: int) -> None:
        callback = self.callback
        read_offset = self._read_offset
        last_delivered = self._last_delivered
        acks_enabled_for = self.app.topics.acks_enabled_for
        changelogs = self.app.tables.changelog_topics
        for delivered, (tp, message) in enumerate(batch, start=1):
            if (self._parked or epoch != self._seek_epoch) and tp.topic not in changelogs:
                # fetched before (or around) a seek: the input partition is read again from where
                # the seek puts it; changelogs, read by the table recovery itself, go on
                continue
            if delivered % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            offset = message.offset
            last = last_delivered.get(tp)
            if last is not None and offset <= last:
                continue  # delivered already in this epoch
            expected = last + 1 if last is not None else self._sought_position.get(tp)
            if expected is not None and offset > expected and acks_enabled_for(message.topic):
                # offsets the broker returned no record for (compaction, transaction markers)
                self._gap[tp].addi(expected, offset)
                self._gap[tp].merge_overlaps()
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            last_delivered[tp] = offset
            read_offset[tp] = offset

    def _new_offset(self, tp: TP) -> int | None:
        """faust's, with the check that the acked run starts exactly at the committed offset."""
        acked = self._acked[tp]
        if not acked:
            return None
        gap = self._gap[tp]
        if gap:
            top = max(acked)
            bridged = sorted(gap.overlap(0, top), key=lambda interval: interval.begin)
            if bridged:
                offsets = [offset for interval in bridged for offset in range(interval.begin, interval.end)]
                acked.extend(offsets)
                gap.chop(0, max(offsets[-1], top + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            return None  # a hole at the head: not all of it was processed yet (or was lost: a stall, not a skip)
        run = next(consecutive_numbers(acked))
        acked[: len(run)] = []
        self._acked_index[tp].difference_update(run)
        return int(run[-1]) + 1


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def install(app: Any) -> None:
    """Give ``app`` this transport for consuming (producing is unchanged)."""
    app.transport = Transport(app.conf.broker_consumer, app)


# --- streams ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def processing_passively(stream: faust.Stream, processor: Callable[[Any], Any]) -> Iterator[None]:
    """Within the block, ``stream`` drains its channel on its own and ``processor`` sees each event
    (what faust's ``Stream.take_events`` sets up before it waits for a batch); after it, the
    processor is taken off again (faust has ``add_processor`` but no way to remove one)."""
    stream.add_processor(processor)
    stream._enable_passive(cast(ChannelT, aiter(stream.channel)))
    try:
        yield
    finally:
        stream._processors.remove(processor)


# --- the current event ------------------------------------------------------------------------------


@contextlib.contextmanager
def as_current_event(event: EventT | None) -> Iterator[None]:
    """Make ``event`` faust's current event while a table is written.

    A partitioned table (and its RocksDB store) writes to the partition of the event being
    processed, which faust reads from its current event; a batch is written after the stream moved
    past its events. Global tables pick their changelog partition themselves (``event`` None).
    """
    if event is None:
        yield
        return
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


# --- tables and stores ------------------------------------------------------------------------------


class TableOnStore(faust.Table):
    """faust's table whose RocksDB store is a ``rocksdb_store`` (faust's own choice for any other URL)."""

    rocksdb_store: ClassVar[type[RocksDBStore]] = RocksDBStore

    def _new_store_by_url(self, url: str | URL) -> StoreT:
        if URL(url).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        # built as faust.tables.base.Collection._new_store_by_url builds one
        return self.rocksdb_store(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


class GlobalTableOnStore(TableOnStore, faust.GlobalTable):
    """faust's global table whose RocksDB store is a ``rocksdb_store``."""


class OnePartitionRocksDBStore(RocksDBStore):
    """faust's RocksDB store with every key in the database of one partition (``database_partition``),
    whatever the partition of the current event; reads of a key prefix in key order."""

    database_partition: ClassVar[int] = 0

    def _db(self) -> Any:
        return self._db_for_partition(self.database_partition)

    def _set(self, key: bytes, value: bytes | None) -> None:
        self._db().put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db().get(key)
        return value

    def _del(self, key: bytes) -> None:
        self._db().delete(key)

    def _contains(self, key: bytes) -> bool:
        return self._db().get(key) is not None

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """The table's keys that start with ``prefix``, read in key order from the prefix on.

        Keys are stored JSON-encoded (``"tenant:…"``): the encoded prefix without its closing quote
        is a byte prefix of every such key.
        """
        encoded = self._encode_key(prefix)[:-1]
        for key in self._db().keys(from_key=encoded):
            if not key.startswith(encoded):
                break
            if key != self.offset_key:
                yield self._decode_key(key)


def active_rocksdb_databases(store: Any) -> Iterator[Any] | None:
    """The RocksDB databases of a store's assigned partitions; None when it is not a RocksDB store."""
    databases = getattr(store, "_dbs_for_actives", None)
    return None if databases is None else cast(Iterator[Any], databases())
