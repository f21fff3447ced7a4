"""Batches of events whose offsets are committed only when the agent says they are done.

faust's ``Stream.take_events`` acks a batch in a ``finally`` when the agent asks for the next one,
or when the agent fails or stops in the middle of it: a batch whose outputs never reached the
broker could be committed (and lost). ``BatchingStream.take_batches`` is the same buffering
without that ack; the agent acks a batch (``ack_batch``) once its outputs and state are durable.
A batch that is not acked is read again after a restart (at least once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust
from faust.types import ChannelT, EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify
from mode.utils.locks import Event


class BatchingStream(faust.Stream):
    """A faust stream that can hand out batches without acking them (``App(Stream=...)``)."""

    async def take_batches(self, max_: int, within: float) -> AsyncIterator[Sequence[EventT]]:
        """Up to ``max_`` events at a time, or what arrived within ``within`` seconds; never acked here.

        Adapted from faust-streaming's ``Stream.take_events`` (same buffering, same back-pressure:
        the buffer stops filling while the agent works on a full batch), minus its acks.
        """
        events: list[EventT] = []
        buffer_full = Event()
        buffer_consumed = Event()
        buffer_consuming: Any = None
        channel_it = aiter(self.channel)

        async def add_to_buffer(value: Any) -> Any:
            nonlocal buffer_consuming
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            event = self.current_event
            if event is None:
                raise RuntimeError("take_batches found no current event")
            events.append(event)
            if len(events) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await self.wait(buffer_consumed)
            return value

        # The agent acks (ack_batch) once a batch is durable. Never turned back on: faust restarts a
        # crashed agent on the same stream, which would then ack every event as it is buffered.
        self.enable_acks = False
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(ChannelT, channel_it))
        try:
            while not self.should_stop:
                await self.wait_for_stopped(buffer_full, timeout=within)
                if events:
                    buffer_consuming = self.loop.create_future()
                    try:
                        yield list(events)
                    finally:
                        events.clear()
                        notify(buffer_consuming)
                        buffer_full.clear()
                        buffer_consumed.set()
        finally:
            self._processors.remove(add_to_buffer)

    async def ack_batch(self, events: Sequence[EventT]) -> None:
        """Mark a batch done: its offsets may now be committed.

        ``Event.ack`` (what ``Stream.ack`` does, minus the per-event sensor calls and coroutine).
        """
        for event in events:
            event.ack()
