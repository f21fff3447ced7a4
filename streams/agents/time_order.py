"""Deciding a tenant's changes in the order they reached Kafka, though they arrive by many roads.

A tenant's change events come from many input partitions (every ``cdc.*`` topic has several, and
one record's events all sit on one of them), and each input is routed onto the tenant's partition of
the changes topic by whichever worker reads it (``streams.agents.route``), at its own pace. So the
changes topic holds each input's events in their order, but two inputs interleaved as their routers
happened to read them: a CRM edit of a customer can reach the owner before the accounting event that
created that customer, though it happened later.

Most decisions do not care: they read only their own record's state. The ones that do are those
that rest on another record being absent (``Decision.rests_on_absence``: an edit of a record that is
not linked yet, a document whose customer is not in the target yet, a pull of unknown customers). A
change whose decision rests on an absence is **held** — kept in the ``held`` table, nothing sent —
until every input has passed the moment the change reached Kafka, and then decided (again) with
what is known by then. Each router says how far it has passed on each input it reads: after each
batch, it writes a progress message to every partition of the changes topic (``RouterProgress``),
behind the events it routed there. An owner that reads a progress message saying input *I* passed
time *T* has therefore already read every event of *I* routed before it (``InputProgress``).

An input has passed *T* when its router routed an event of *I* that reached Kafka at *T* or later,
or found *I* read to its end at a moment when every event that reached Kafka before *T* would have
been fetched (``caught_up``: the router's clock minus the longest a fetch waits, ``FETCH_SLACK_MS``).

**Bounded**: a change is held at most ``max_wait`` (``LIENTHONG_ORDER_MAX_WAIT``) on the worker's
clock; past that it is decided with what is known, and said so in the log. That happens only when
an input has no router for that long (every worker that could read it is down or rebalancing).
**Late events**: an event that reaches Kafka with a time older than what its input had passed (a
producer whose clock is behind) is decided when it arrives, like any other. **Order per record**: a
record with held changes has every later change of its own held behind them, so that one record's
changes are always decided in their order.
"""

from __future__ import annotations

import base64
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from common.names import PROGRESS
from streams.outputs import OutputMessage
from streams.tables.state import PartitionState

log = logging.getLogger(__name__)

# How long after an event reaches Kafka a router may still be fetching it although the last fetch of
# its partition answered "nothing more": the fetch's long-poll (fetch.wait.max.ms, streams.processor)
# and a margin for the round trip and the batch in hand.
FETCH_SLACK_MS = 250


def input_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class RouterProgress:
    """A router's view of its inputs: the newest time routed from each, and whether it is read to
    its end; written as progress messages to every partition of the changes topic."""

    def __init__(self) -> None:
        self.newest: dict[str, int] = {}  # input -> newest record timestamp routed (ms)
        self.caught_up_at: dict[str, int] = {}  # input -> moment every earlier event was routed
        self.at_end: set[str] = set()  # inputs whose fetch said "nothing more" since their last event

    def routed(self, topic: str, partition: int, timestamp_ms: int) -> None:
        name = input_name(topic, partition)
        if timestamp_ms > self.newest.get(name, -1):
            self.newest[name] = timestamp_ms
        self.at_end.discard(name)

    def reached_end(self, topic: str, partition: int, consumed_at_ms: int) -> None:
        """The consumer said the input is read to its end, in the batch consumed at ``consumed_at_ms``:
        every event that reached Kafka up to the slack before was fetched, and routed in this batch
        or before."""
        name = input_name(topic, partition)
        self.at_end.add(name)
        self._caught_up(name, consumed_at_ms - FETCH_SLACK_MS)

    def drained(self, polled_at_ms: int) -> None:
        """The consumer's queue was empty when polled at ``polled_at_ms``: every input still at its end
        has routed everything that reached Kafka up to the slack before."""
        moment = polled_at_ms - FETCH_SLACK_MS
        for name in self.at_end:
            self._caught_up(name, moment)

    def _caught_up(self, name: str, moment: int) -> None:
        if moment > self.caught_up_at.get(name, -1):
            self.caught_up_at[name] = moment

    def forget(self, names: Iterable[str]) -> None:
        """Inputs revoked from this worker: their new router speaks for them."""
        for name in names:
            self.newest.pop(name, None)
            self.caught_up_at.pop(name, None)
            self.at_end.discard(name)

    def messages(self, changes_topic: str, partitions: int) -> list[OutputMessage]:
        """One progress message per partition of the changes topic (none with no inputs)."""
        names = set(self.newest) | set(self.caught_up_at)
        if not names:
            return []
        value = orjson.dumps(
            {name: max(self.newest.get(name, -1), self.caught_up_at.get(name, -1)) for name in sorted(names)}
        )
        headers = [(PROGRESS, b"1")]
        return [OutputMessage(changes_topic, None, value, headers, partition) for partition in range(partitions)]


class InputProgress:
    """An owner's view, per partition of the changes topic, of how far each input has passed."""

    def __init__(self, inputs: Iterable[str]) -> None:
        self.inputs = set(inputs)  # every input partition a router reads (streams.loop)
        self.passed_ms: dict[str, int] = {}
        self._oldest: int | None = None  # min over the inputs, kept until the next progress message

    def read(self, value: bytes) -> None:
        """A progress message of the changes topic."""
        try:
            progress = orjson.loads(value)
        except orjson.JSONDecodeError:
            log.error("ignored a progress message that is not JSON")
            return
        if not isinstance(progress, dict):
            return
        for name, moment in progress.items():
            if isinstance(moment, int) and moment > self.passed_ms.get(name, -1):
                self.passed_ms[name] = moment
                self._oldest = None

    def oldest(self) -> int:
        """The moment every input has passed (-1 while one has said nothing)."""
        if self._oldest is None:
            passed = self.passed_ms
            self._oldest = min((passed.get(name, -1) for name in self.inputs), default=-1)
        return self._oldest

    def passed(self, moment_ms: int) -> bool:
        return self.oldest() >= moment_ms


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
        """What the ``held`` table holds (recovered with the partition), in key order."""
        self.by_record.clear()
        changes = [HeldChange.from_json(key, value) for key, value in items]
        for change in sorted(changes, key=lambda change: change.offset):
            self.by_record.setdefault(change.record_key, deque()).append(change)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self.by_record.values())

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
