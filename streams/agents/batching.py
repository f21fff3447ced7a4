"""Batches of events whose offsets are committed only when the agent says they are done.

faust's ``Stream.take_events`` acks a batch in a ``finally`` when the agent asks for the next one,
or when the agent fails or stops in the middle of it: a batch whose outputs never reached the
broker could be committed (and lost). ``BatchingStream.take_batches`` is the same buffering
without that ack; the agent acks a batch (``ack_batch``) once its outputs and state are durable.
A batch that is not acked is read again after a restart (at least once).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import faust
from faust.types import EventT
from mode.utils.locks import Event

from streams.faust_adapter import processing_passively


class BatchingStream(faust.Stream):
    """A faust stream that can hand out batches without acking them (``App(Stream=...)``)."""

    _room: Event | None = None
    _buffer_freely = False

    @contextlib.contextmanager
    def buffering_freely(self) -> Iterator[None]:
        """While the agent waits for its global tables, take every event that arrives, past ``max_``.

        faust reads the tables' changelogs in the loop that fills this stream: a stream that stopped
        taking events would stop that loop, and the tables would never catch up.
        """
        self._buffer_freely = True
        if self._room is not None:
            self._room.set()
        try:
            yield
        finally:
            self._buffer_freely = False

    async def take_batches(self, max_: int, within: float) -> AsyncIterator[Sequence[EventT]]:
        """Batches of at most ``max_`` events, never acked here.

        The stream keeps buffering while the agent works on a batch (up to ``max_`` events, then it
        waits), and the next batch is whatever arrived meanwhile: batches grow with the load and an
        event arriving at an idle agent is taken at once. ``within`` is how often an idle agent
        wakes to see whether it should stop.

        Built on the same stream machinery as faust-streaming's ``Stream.take_events``, minus its
        acks (module docstring).
        """
        pending: list[EventT] = []
        arrived = Event()
        room = self._room = Event()
        room.set()

        async def add_to_buffer(value: Any) -> Any:
            event = self.current_event
            if event is None:
                raise RuntimeError("take_batches found no current event")
            pending.append(event)
            arrived.set()
            if len(pending) >= max_ and not self._buffer_freely:
                room.clear()
                await self.wait(room)
            return value

        # The agent acks (ack_batch) once a batch is durable. Never turned back on: faust restarts a
        # crashed agent on the same stream, which would then ack every event as it is buffered.
        self.enable_acks = False
        with processing_passively(self, add_to_buffer):
            while not self.should_stop:
                if not pending:
                    await self.wait_for_stopped(arrived, timeout=within)
                    if not pending:
                        arrived.clear()
                        continue
                batch = pending[:max_]
                del pending[:max_]
                if not pending:
                    arrived.clear()
                room.set()
                yield batch

    async def ack_batch(self, events: Sequence[EventT]) -> None:
        """Mark a batch done: its offsets may now be committed.

        ``Event.ack`` (what ``Stream.ack`` does, minus the per-event sensor calls and coroutine).
        """
        for event in events:
            event.ack()
