"""faust-streaming's aiokafka transport, with three fixes to how messages reach the agents.

1. **No message is skipped for good at start-up.** While a worker recovers its tables, faust drops
   the messages the consumer already fetched for partitions that are not active yet, and later
   "seeks back to committed offsets" to read them again. aiokafka's ``seek_to_committed`` only
   moves partitions that *have* a committed offset above 0, so a partition whose group never
   committed stayed where the dropped fetch left it. A partition without a committed offset is
   now sought to its beginning, which is what ``auto_offset_reset = earliest`` promises.

2. **No stale message after a seek.** faust delivers a fetched batch message by message, awaiting
   each; a rebalance or the end of a recovery can seek the partitions back in the middle of it.
   faust then went on delivering the rest of the *old* batch, and its gap logic (meant for offsets
   that compaction or transaction markers removed) took the jump from the sought offset to the
   stale message as a gap and counted every offset in between as processed: the committed offset
   moved past messages no agent ever saw. Seen after ``kill -9`` and restart as a run of skipped
   offsets with commits at the end of every partition (docs/decisions.md). Every seek now starts
   a new *epoch*; what was fetched in an earlier epoch is dropped, and the consumer fetches again
   from where the seek put it.

3. **One race per fetched batch, not per message.** faust raced every message's delivery against
   "flow suspended" with four new futures per message, which cost more than delivering the
   message (profile in docs/performance.md). The race now covers the delivery of a whole batch;
   a suspension still stops it, and the rest of the batch is fetched again after the seek that
   follows every suspension.

Work redone because of 1 or 2 is ordinary at-least-once redelivery, which the processor
deduplicates by event id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

YIELD_EVERY = 100  # messages delivered between two returns to the event loop (health checks, timers)


class AIOKafkaConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def seek_to_committed(self) -> Mapping[Any, int]:
        result: Mapping[Any, int] = await self.call_thread(self._seek_to_committed_or_beginning)
        return result

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int]:
        consumer = self._ensure_consumer()
        committed: Mapping[Any, int] = await consumer.seek_to_committed()
        never_committed = [tp for tp, offset in committed.items() if offset is None or offset <= 0]
        if never_committed:
            await consumer.seek_to_beginning(*never_committed)
        return committed


class Consumer(faust_aiokafka.Consumer):
    # Bumped by every seek (before and after it), and by every rebalance: a batch fetched in an
    # earlier epoch may hold messages from before the seek.
    _seek_epoch = 0

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return AIOKafkaConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_epoch(self) -> None:
        self._seek_epoch += 1

    async def perform_seek(self) -> None:
        self._new_epoch()
        try:
            await super().perform_seek()
        finally:
            self._new_epoch()

    async def seek(self, partition: TP, offset: int) -> None:
        self._new_epoch()
        try:
            await super().seek(partition, offset)
        finally:
            self._new_epoch()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._new_epoch()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._new_epoch()
        await super().on_partitions_assigned(assigned, generation_id)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - driven by the worker
        """The fetch loop (faust's, with fixes 2 and 3 of the module docstring)."""
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                epoch = self._seek_epoch
                batch = [(tp, message) async for tp, message in self.getmany(timeout=1.0)]
                await self.sleep(0)
                if not batch or self.should_stop or epoch != self._seek_epoch:
                    continue  # nothing, stopping, or fetched across a seek: fetch again from the new position
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
        acks_enabled_for = self.app.topics.acks_enabled_for
        for delivered, (tp, message) in enumerate(batch, start=1):
            if epoch != self._seek_epoch:
                return  # a seek moved the partitions: the rest of this batch may be stale
            if delivered % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            offset = message.offset
            last = read_offset[tp]
            if last is not None and offset < last:
                continue  # already delivered (faust drops these too)
            if last and offset - last > 1 and acks_enabled_for(message.topic):
                # offsets the broker did not return (compaction, transaction markers): not lost work
                await self._add_gap(tp, last + 1, offset)
            if self._commit_every is not None and self._n_acked >= self._commit_every:
                self._n_acked = 0
                await self.commit()
            await callback(message)
            read_offset[tp] = offset


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


def install(app: Any) -> None:
    """Give ``app`` this transport for consuming (producing is unchanged)."""
    app.transport = Transport(app.conf.broker_consumer, app)
