"""Deciding a tenant's changes in the order they reached Kafka, though they arrive by many roads.

A tenant's change events come from many input partitions (every ``cdc.*`` topic has several, and
one record's events all sit on one of them), and each input is routed onto the tenant's partition of
the changes topic by whichever worker reads it, at its own pace (``streams.agents.route``). So the
changes topic holds each input's events in their order, but two inputs interleaved as their routers
happened to read them: a CRM edit of a customer can reach the owner before the accounting event that
created that customer, though it happened later.

Most decisions do not care: they read only their own record's state. The ones that do are those
that rest on another record being absent (``Decision.rests_on_absence``: an edit of a record that is
not linked yet, a document whose customer is not in the target yet, a pull of unknown customers). A
change whose decision rests on an absence is **held** — kept in the ``held`` table, nothing sent —
until every input has passed the moment the change reached Kafka (its record timestamp *T*), and is
then decided (again) with what is known by then.

**How the owner knows the inputs passed T** (``InputsPassed``). It asks the broker, about every
input partition: the first offset whose timestamp is *T* or later (or the end, when there is none),
and the offset the group has committed (as last committed: a transaction in flight is left out,
not waited for — ``streams.loop.GroupOffsets``). A router commits an input's offset in the same
transaction as the changes it routed from it (``streams.checkpoint``), so an input whose committed
offset has reached that first offset has routed every event that reached Kafka before *T*, onto the
changes topic, committed. Once the owner has then read its partition of the changes topic to the end it had
after the question, it has read them all, and every change held with a time up to *T* is decided.
The changes topic's end is asked after the committed offsets, so that a router's transaction that
commits between the questions is within it; the first offsets at *T* only of the inputs not committed
to their end. Nothing is written for it — no progress messages, no chatter on an idle system — and it
costs three or four requests to the broker, asked only while changes are held, at most every
``PROBE_INTERVAL_MS``.

*T* is asked no later than ``ARRIVAL_SLACK_MS`` before the worker's clock: an event stamped before *T*
by its producer may reach the broker up to that much later (linger, retries).

**Bounded**: a change is held at most ``max_wait`` (``LIENTHONG_ORDER_MAX_WAIT``) on the worker's
clock; past that it is decided with what is known, and said so in the log. That happens only when
an input has had no router that long (every worker that could read it down or rebalancing) or the
broker cannot be asked. **Late events**: an event that reaches Kafka with a time older than what its
input had passed (a producer whose clock is behind) is decided when it arrives, like any other.
**Order per record**: a record with held changes has every later change of its own held behind
them, so that one record's changes are always decided in their order.
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.core.contract import ChangeEvent
from streams.tables.state import PartitionState

log = logging.getLogger(__name__)

# How long after its producer stamped it an event may still reach the broker (the producer's linger
# and a round trip; the capture services send each change at once).
ARRIVAL_SLACK_MS = 50
# How often an owner with held changes asks the broker how far the inputs are (three or four requests).
PROBE_INTERVAL_MS = 50


@dataclass(frozen=True)
class InputsAnswer:
    """The broker's answer about every input partition at one moment, for a time ``at_ms``."""

    at_ms: int  # the time asked about
    first_at_or_after: Mapping[tuple[str, int], int]  # input -> first offset stamped at_ms or later; -1: none
    ends: Mapping[tuple[str, int], int]  # input -> its end offset
    committed: Mapping[tuple[str, int], int]  # input -> the group's committed offset (-1: none)

    def behind(self) -> list[tuple[str, int]]:
        """The inputs that have not routed (and committed) every event stamped before ``at_ms``.

        An input not in ``first_at_or_after`` was not asked (committed to its end); a first offset
        asked after the end counts no further than that end."""
        late = []
        for where, end in self.ends.items():
            first = self.first_at_or_after.get(where, -1)
            needed = end if first < 0 else min(first, end)
            if max(self.committed.get(where, -1), 0) < needed:
                late.append(where)
        return late


class InputsPassed:
    """An owner's knowledge, per partition of the changes topic, of the time every input has passed:
    confirmed once the partition is read to the end it had when the broker answered."""

    def __init__(self) -> None:
        self.passed_ms = -1  # every change stamped up to this time has been read on this partition
        # answers waiting for the partition to be read to where it ended: (time, end), oldest first
        self._pending: list[tuple[int, int]] = []

    def answered(self, at_ms: int, changes_end: int) -> None:
        """Every input passed ``at_ms``; it counts once this partition is read to ``changes_end``.

        An answer never replaces an earlier one: under steady traffic each new end is further on, and
        the earlier answer is the one the owner is about to reach."""
        if at_ms > self.passed_ms and (not self._pending or at_ms > self._pending[-1][0]):
            self._pending.append((at_ms, changes_end))

    def read_to(self, position: int) -> None:
        """The owner's consumer is at ``position`` on this partition."""
        while self._pending and position >= self._pending[0][1]:
            self.passed_ms = max(self.passed_ms, self._pending.pop(0)[0])

    def passed(self, moment_ms: int) -> bool:
        return moment_ms <= self.passed_ms


@dataclass(frozen=True, slots=True)
class HeldChange:
    """A routed message whose decision waits for the inputs to pass its time."""

    held_key: str  # its key in the ``held`` table
    record_key: str  # the record it changes: its later changes wait behind it
    timestamp_ms: int  # when it reached Kafka
    held_at_ms: int  # the worker's clock when it was first held
    value: bytes
    headers: list[tuple[str, bytes]]
    offset: int  # where it was on the changes topic
    # ``value`` decoded when it was held: not decoded again when it is released. None once recovered
    # from the table, where only the bytes are kept.
    event: ChangeEvent | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "record_key": self.record_key,
            "timestamp_ms": self.timestamp_ms,
            "held_at_ms": self.held_at_ms,
            "value": base64.b64encode(self.value).decode(),
            "headers": [[name, base64.b64encode(value).decode()] for name, value in self.headers],
            "offset": self.offset,
        }

    @classmethod
    def from_json(cls, held_key: str, value: dict[str, Any]) -> HeldChange:
        return cls(
            held_key=held_key,
            record_key=value["record_key"],
            timestamp_ms=value["timestamp_ms"],
            held_at_ms=value["held_at_ms"],
            value=base64.b64decode(value["value"]),
            headers=[(name, base64.b64decode(raw)) for name, raw in value["headers"]],
            offset=value["offset"],
        )


def held_key(tenant: str, offset: int) -> str:
    """A held change's key: its tenant first (as every key), then its place on the changes topic."""
    return f"{tenant}:{offset:020d}"


class HeldChanges:
    """The held changes of one partition, in memory over the ``held`` table, in the order they came."""

    def __init__(self) -> None:
        self.by_record: dict[str, deque[HeldChange]] = {}

    def load(self, items: Iterable[tuple[str, Any]]) -> None:
        """What the ``held`` table holds (recovered with the partition)."""
        self.by_record.clear()
        changes = [HeldChange.from_json(key, value) for key, value in items]
        for change in sorted(changes, key=lambda change: change.offset):
            self.by_record.setdefault(change.record_key, deque()).append(change)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self.by_record.values())

    def newest_ms(self) -> int:
        """The latest time among the held changes (-1: none held)."""
        return max((change.timestamp_ms for queue in self.by_record.values() for change in queue), default=-1)

    def holds(self, record_key: str) -> bool:
        return record_key in self.by_record

    def hold(self, state: PartitionState, change: HeldChange) -> None:
        self.by_record.setdefault(change.record_key, deque()).append(change)
        state.set("held", change.held_key, change.to_json())

    def due(self, passed_ms: int, held_since_ms: int) -> list[HeldChange]:
        """The first held change of each record whose time every input passed (``passed_ms``) or that
        was held before ``held_since_ms``, in the order they came."""
        due = [
            queue[0]
            for queue in self.by_record.values()
            if queue[0].timestamp_ms <= passed_ms or queue[0].held_at_ms <= held_since_ms
        ]
        return sorted(due, key=lambda change: change.offset)

    def release(self, state: PartitionState, change: HeldChange) -> None:
        """``change``, the first of its record, is decided: out of the table and the queue."""
        queue = self.by_record[change.record_key]
        queue.popleft()
        if not queue:
            del self.by_record[change.record_key]
        state.delete("held", change.held_key)
