"""The commands a connector has taken from the broker and not finished: their order and their offsets.

Commands with one message key run one after another, in offset order; different keys run
concurrently. An offset may be committed only once it and every earlier offset of its partition
are done (at least once): a command left for the next run (``Stopping``) keeps its offset, and
everything after it, uncommitted.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable

from confluent_kafka import Message, TopicPartition


class Stopping(Exception):
    """The connector is stopping before this command could finish: leave it for the next run."""


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (the client types them optional: only a
    message it produced itself, or an error event, lacks them)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(
            f"a consumed message without a position: topic {topic}, partition {partition}, offset {offset}"
        )
    return topic, partition, offset


class InFlight:
    """Runs each taken command after the one before it with the same key, and knows which offsets
    of each partition are done, so what may be committed."""

    def __init__(self) -> None:
        self._tails: dict[bytes, asyncio.Task[None]] = {}
        self._offsets: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._done_up_to: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        # where the consumer said a partition ends: past the transaction markers the worker's commits
        # leave after the last command, which no message reaches (their offsets are never done)
        self._ends: dict[tuple[str, int], int] = {}

    def count(self) -> int:
        """Commands taken and not done."""
        return sum(len(offsets) for offsets in self._offsets.values())

    def start(self, message: Message, work: Callable[[Message], Awaitable[bool]]) -> None:
        """Run ``work(message)`` once the previous command with its key has ended. ``work`` answers
        whether the command is done (False: left for the next run, its offset stays in flight)."""
        topic, partition, offset = position(message)
        self._offsets[(topic, partition)].add(offset)
        key = message.key() or b""
        previous = self._tails.get(key)
        task = asyncio.create_task(self._after(previous, message, work))
        self._tails[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tails.get(key) is done:
                self._tails.pop(key, None)

        task.add_done_callback(forget)

    async def _after(
        self, previous: asyncio.Task[None] | None, message: Message, work: Callable[[Message], Awaitable[bool]]
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # one key: one after another
        topic, partition, offset = position(message)
        tp = (topic, partition)
        if not await work(message):
            return
        self._offsets[tp].discard(offset)
        self._done_up_to[tp] = max(self._done_up_to.get(tp, -1), offset)

    async def finish(self) -> None:
        """Wait until every command taken has ended (a graceful stop)."""
        if self._tails:
            await asyncio.gather(*self._tails.values(), return_exceptions=True)

    def reached_end(self, topic: str, partition: int, end: int) -> None:
        """The consumer read the partition to ``end``: every command before it was taken."""
        self._ends[(topic, partition)] = max(self._ends.get((topic, partition), -1), end)

    def to_commit(self) -> list[TopicPartition] | None:
        """The offsets to commit (each partition's next after its done prefix; its end once every
        command taken is done), or None when they are what was last committed."""
        offsets = []
        for tp in {*self._done_up_to, *self._ends}:
            pending = self._offsets[tp]
            after_done = max(self._done_up_to.get(tp, -1) + 1, self._ends.get(tp, -1))
            next_offset = min(pending) if pending else after_done
            if next_offset >= 0:
                offsets.append(TopicPartition(tp[0], tp[1], next_offset))

        wanted = {(o.topic, o.partition): o.offset for o in offsets}
        if not offsets or wanted == self._committed:
            return None
        return offsets

    def committed(self, offsets: list[TopicPartition]) -> None:
        """``offsets`` (from ``to_commit``) are on the broker."""
        self._committed = {(o.topic, o.partition): o.offset for o in offsets}
