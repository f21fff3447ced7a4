"""Decide nothing on a global table that has not read what other workers wrote to it.

A worker that is not the one assigned a global table's changelog partition reads it as a faust
*standby*, and faust resumes the agents before standbys are read (``faust.tables.recovery``:
"Recovery complete", then "Starting standby partitions"). A worker that has just joined, or
restarted, would then decide events with a copy of ``links``, ``written`` and ``crm_records`` that
lacks what other workers wrote: a CRM edit whose customer another worker linked a moment ago is
"not linked", and is never sent (docs/reliability.md, finding 3).

``GlobalTablesCatchUp`` closes that window: after each assignment, the agents' next batch first
waits until every global table has read what other workers wrote to its changelog before the end
offset it had then (this worker's own messages it applied when it wrote them). At most
``max_wait`` seconds: past that (a changelog too long to read in time, a broker away) the worker
decides with what it has and says so in its log.

Outside rebalances the copies lag the other workers' writes by a fetch (milliseconds). That matters
only to a decision that rests on something being absent: a CRM edit whose customer another worker
linked a moment ago is "not linked" (X-3, CUS-3), an order's customer "not in acct yet" (X-4).
For a batch with such a decision, ``read_others_writes`` fetches the changelogs' end offsets and
waits until this worker has read every message other workers wrote before them (its own it
applied when it wrote them, ``OwnWritesGlobalTable.others_unread``); if it read any meanwhile, the
agent decides the batch again (``streams.agents.pipeline``). Nothing of a batch is sent before it
is decided, so deciding it again has no side effect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from faust.types import TP

log = logging.getLogger(__name__)

READ_POLL_S = 0.002  # a batch waits for other workers' writes a fetch away: poll often
# What asking for end offsets can raise when nothing to wait for can be known (the broker away).
END_OFFSETS_UNKNOWN = (TimeoutError, KafkaError)


class FollowsChangelog(Protocol):
    name: str
    others_read: int

    def changelog_tp(self) -> TP: ...

    def changelog_read_until(self) -> int: ...

    def others_unread(self, end: int) -> int: ...


EndOffsets = Callable[[list[TP]], Awaitable[Mapping[TP, int]]]


class BrokerEndOffsets:
    """The end offsets of changelog partitions, from a client of the worker's own event loop.

    faust's consumer answers ``highwaters`` from its own thread, behind its fetches: 0.25 to 1.2 s a
    request under load (measured with the benchmark), which a batch would wait each time it rests
    on an absence. A client with no group and no subscription answers in a round trip.
    """

    def __init__(self, kafka: Mapping[str, Any]) -> None:
        self.kafka = dict(kafka)  # aiokafka client arguments (common.kafka_config.aiokafka_config)
        self._consumer: AIOKafkaConsumer | None = None
        self._starting = asyncio.Lock()

    async def __call__(self, tps: list[TP]) -> Mapping[TP, int]:
        async with self._starting:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(**self.kafka, group_id=None, enable_auto_commit=False)
                await consumer.start()
                self._consumer = consumer
        ends = await self._consumer.end_offsets([TopicPartition(tp.topic, tp.partition) for tp in tps])
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class GlobalTablesCatchUp:
    """One per worker: ``rebalanced()`` on each assignment, ``wait()`` before each batch is decided."""

    def __init__(self, tables: Iterable[FollowsChangelog], end_offsets: EndOffsets, *, max_wait: float) -> None:
        self.tables = list(tables)
        self.end_offsets = end_offsets
        self.max_wait = max_wait
        self._rebalanced = False
        self._catching_up: asyncio.Future[None] | None = None

    def rebalanced(self) -> None:
        self._rebalanced = True

    async def wait(self) -> None:
        if self._rebalanced and (self._catching_up is None or self._catching_up.done()):
            self._rebalanced = False
            self._catching_up = asyncio.ensure_future(self._catch_up())
        if self._catching_up is not None and not self._catching_up.done():
            # every agent of the worker waits for the same catch-up
            await asyncio.shield(self._catching_up)

    async def _catch_up(self) -> None:
        started = time.monotonic()
        try:
            ends = await self.request_ends()
        except END_OFFSETS_UNKNOWN as exc:  # nothing to wait for that can be known
            log.warning("global tables: end offsets unknown after the rebalance (%s); deciding with what is known", exc)
            return
        unread = self._others_unread(ends)
        if not unread:
            return
        log.info("global tables catching up before deciding: %s", _describe(unread))
        if await self._wait_until_read(ends, started, "of the rebalance"):
            log.info("global tables caught up in %.1fs", time.monotonic() - started)

    async def _wait_until_read(self, ends: Mapping[TP, int], started: float, since: str) -> bool:
        """Wait until the tables have read the other workers' messages before ``ends``, at most until
        ``max_wait`` after ``started``; False (and a warning) if they have not by then."""
        while unread := self._others_unread(ends):
            if time.monotonic() - started > self.max_wait:
                log.warning(
                    "global tables did not read other workers' writes within %.0fs %s (%s); deciding with what is "
                    "known (LIENTHONG_GLOBAL_TABLES_MAX_WAIT)",
                    self.max_wait,
                    since,
                    _describe(unread),
                )
                return False
            await asyncio.sleep(READ_POLL_S)
        return True

    def request_ends(self) -> asyncio.Future[Mapping[TP, int]]:
        """Ask for the global changelogs' end offsets now, for ``read_others_writes``.

        Asked as a batch begins, the answer travels while the batch is decided: the batch waits for it
        only when it needs it, and not for the round trip.
        """
        tps = [table.changelog_tp() for table in self.tables]
        ends = asyncio.ensure_future(asyncio.wait_for(self.end_offsets(tps), self.max_wait))
        # a batch that needs no answer leaves it; its failure is not an error then
        ends.add_done_callback(lambda done: done.cancelled() or done.exception())
        return ends

    async def read_others_writes(self, ends_requested: Awaitable[Mapping[TP, int]] | None = None) -> bool:
        """Wait until every global table has read what other workers wrote to it before the end offsets
        ``ends_requested`` (or asked now) say, at most ``max_wait``; True if it read any of that since
        the call began, or while waiting.

        Called right after a batch is decided (synchronously, with no changelog read in between),
        True says the batch was decided without some of it.
        """
        read_before = self._others_read()
        started = time.monotonic()
        try:
            ends = await (ends_requested if ends_requested is not None else self.request_ends())
        except END_OFFSETS_UNKNOWN as exc:
            log.warning("global tables: end offsets unknown (%s); deciding with what is known", exc)
            return self._others_read() != read_before
        await self._wait_until_read(ends, started, "of deciding on an absence")
        return self._others_read() != read_before

    def _others_read(self) -> int:
        return sum(table.others_read for table in self.tables)

    def _others_unread(self, ends: Mapping[TP, int]) -> dict[str, int]:
        found = {}
        for table in self.tables:
            count = table.others_unread(ends.get(table.changelog_tp(), 0))
            if count:
                found[table.name] = count
        return found


def _describe(unread: Mapping[str, int]) -> str:
    return ", ".join(f"{name}: {count} unread" for name, count in unread.items())
