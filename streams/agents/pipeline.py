"""What every agent does with a batch: stage each event's outputs and state, then make them durable.

An agent takes a batch (``BatchingStream.take_batches``) and, event by event, decides with the core
and *stages* the result in a ``Batch``: the outputs (commands, audit record, dead letters,
re-keyed documents) and the state changes (through ``BatchState``, so the next event of the batch
sees them). An event whose outputs or state would be too large for the broker, cannot be written
as JSON, or hits a bug is dead-lettered whole instead: staging is all or nothing per event.

``Batch.finish`` then makes the batch durable in the order that keeps it at least once:

1. every output is sent and acknowledged by the broker (one wait for the batch);
2. the state changes are written to the tables, one write per key;
3. the table changelogs are flushed to the broker;

and only then does the agent ack the batch, which lets faust commit its offsets. A crash before
that replays the batch from the last commit: the same decisions, the same command ids (the
connectors skip what they applied), the same audit records again.

A batch with a decision that rests on another record's state being absent (no link yet, no CRM
record known: ``Decision.rests_on_absence``) is decided again if, once decided, the worker's
global tables turn out not to have read what other workers had written to them
(``GlobalTablesCatchUp.read_others_writes``). Since nothing is sent before ``finish``, the first
decisions leave no trace but the time they took: what they would count and log (``tally``) is
counted only for the decisions the batch keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.types import EventT

from common import metrics
from common.logs import about_key
from common.names import System
from streams.core.contract import ChangeEvent, Command, dead_letter_headers, dumps
from streams.core.decide import Decision
from streams.core.errors import BadInput
from streams.core.rules import RuleBook
from streams.faust_adapter import as_current_event
from streams.outputs import OutputMessage, Outputs
from streams.tables import AFTER_OUTPUTS, LINKS_FIRST, PROCESSED_MARKERS, BatchState, Tables
from streams.tables.catch_up import GlobalTablesCatchUp
from streams.tables.tenants import TenantSettings
from streams.topics import DLQ_CDC, parse_cdc_topic

log = logging.getLogger(__name__)

# The worker's exit status when a batch cannot be made durable (EX_SOFTWARE).
EXIT_BATCH_NOT_DURABLE = 70

# Headers of a document re-keyed for the aggregates agent: where it was read, under which key, and
# which part of it the message is (streams.core.aggregates.aggregate_inputs).
ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, ORIGIN_KEY = (
    "origin.topic",
    "origin.partition",
    "origin.offset",
    "origin.key",
)
PART = "lienthong.part"

# Header of a command: when the change it comes from happened in its source system (the change
# event's ``ts_ms``): the connector measures the end-to-end sync latency from it.
SOURCE_TS_MS = "lienthong.source_ts_ms"

# Header names of a dead letter whose original was too large to keep whole.
TRUNCATED = "dlq.truncated"
ORIGINAL_BYTES = "dlq.original_bytes"


@dataclass(frozen=True)
class OutputTopics:
    """The names (with the deployment's prefix) of the topics the agents write."""

    commands: dict[System, str]
    audit: str
    dead_letters: str
    aggregate_inputs: str


@dataclass
class AgentDeps:
    """Everything the agents need, built once by ``create_app``: one object instead of parameter lists."""

    rules: RuleBook
    tables: Tables
    tenants: TenantSettings
    outputs: Outputs
    topics: OutputTopics
    topic_prefix: str
    default_order_target: str
    batch_size: int
    batch_wait: float
    counts: Counter[str] = field(default_factory=Counter)  # what the agents did, for logs and metrics
    # after a rebalance, the global tables read up to their changelogs' ends first (None: no rebalances)
    catch_up: GlobalTablesCatchUp | None = None
    # What a batch that cannot be made durable does to the worker (run_batches): stop it at once.
    stop_worker: Callable[[], None] = field(default=lambda: _exit_now())


@dataclass(frozen=True, slots=True)
class Where:
    """Where an input came from: what a dead letter's ``origin.*`` headers say."""

    topic: str
    partition: int
    offset: int


def _exit_now() -> None:
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_DURABLE)


class Unstageable(Exception):
    """An event's outputs or state cannot be sent or kept; ``kind`` is the dead letter's ``error.kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def _json(value: Any, what: str) -> bytes:
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise Unstageable("unserializable", f"{what} cannot be written as JSON: {exc}") from None


class Batch:
    """One batch on its way through an agent: staged outputs and the batch's view of the tables."""

    def __init__(self, deps: AgentDeps) -> None:
        self.deps = deps
        self.state = BatchState(deps.tables, deps.tenants, deps.default_order_target)
        self.messages: list[OutputMessage] = []
        self.now_ms = int(time.time() * 1000)
        self.rests_on_absence = False  # a decision of the batch does (Decision.rests_on_absence)
        self._tallies: list[Callable[[], None]] = []  # counts and logs, for once the batch is kept

    def tally(self, count: Callable[[], None]) -> None:
        """Count (metrics, ``deps.counts``) or log what an event came to, once the batch is durable:
        a batch decided again counts its events once."""
        self._tallies.append(count)

    def count(self, name: str) -> None:
        counts = self.deps.counts
        self._tallies.append(lambda: counts.update((name,)))

    # --- staging ------------------------------------------------------------------------------

    def decision_messages(self, decision: Decision, source_ts_ms: int | None = None) -> list[OutputMessage]:
        """A decision's commands and audit record as messages (raises ``Unstageable``)."""
        topics = self.deps.topics
        self.rests_on_absence = self.rests_on_absence or decision.rests_on_absence
        messages = [self.command_message(command, source_ts_ms) for command in decision.commands]
        audit = decision.audit
        try:
            value = dumps(audit)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise Unstageable("unserializable", f"the audit record cannot be written as JSON: {exc}") from None
        messages.append(OutputMessage(topics.audit, audit.message_key.encode(), value))
        return messages

    def command_message(self, command: Command, source_ts_ms: int | None = None) -> OutputMessage:
        try:
            value = dumps(command)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise Unstageable("unserializable", f"{command.rule} command cannot be written as JSON: {exc}") from None
        headers = None if source_ts_ms is None else [(SOURCE_TS_MS, str(source_ts_ms).encode())]
        return OutputMessage(self.deps.topics.commands[command.target], command.message_key.encode(), value, headers)

    def stage(self, messages: list[OutputMessage], remember: Callable[[], None], *, state_values: list[Any]) -> None:
        """Accept one event: its outputs and (through ``remember``) its state changes, or neither.

        ``state_values`` are the table values the event writes that could grow past what a
        changelog message holds (a CRM record, an order's aggregate).
        """
        outputs = self.deps.outputs
        too_large = outputs.fits(messages)
        if too_large is not None:
            raise Unstageable(
                "too_large",
                f"an output for {too_large.topic} would be {too_large.size} bytes; the limit is "
                f"{outputs.max_message_bytes} (LIENTHONG_MAX_MESSAGE_BYTES)",
            )
        for value in state_values:
            size = len(_json(value, "a table value"))
            if size > outputs.max_message_bytes:
                raise Unstageable(
                    "too_large",
                    f"the state this change leaves would be {size} bytes; the limit is {outputs.max_message_bytes}",
                )
        remember()
        self.messages.extend(messages)

    @contextlib.contextmanager
    def or_dead_letter(self, event: EventT, key: bytes | None, where: Where) -> Iterator[None]:
        """Stage an event within the block, or dead-letter its bytes under ``key`` (as read at
        ``where``) with why: bad input (``BadInput``), outputs or state that cannot be kept
        (``Unstageable``), or a bug, which must not stop the stream."""
        try:
            yield
        except (BadInput, Unstageable) as failed:
            self.dead_letter(key, event.value, failed.kind, failed.message, where)
        except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
            log.exception("failed on %s@%s:%s (key %r)", where.topic, where.partition, where.offset, event.message.key)
            self.dead_letter(key, event.value, "internal", f"{type(exc).__name__}: {exc}", where)

    def dead_letter(self, key: bytes | None, raw: bytes | None, kind: str, text: str, where: Where) -> None:
        """The original key and bytes, with the reason in headers; truncated (and said so) when the
        original itself is larger than a message may be."""
        names = parse_cdc_topic(where.topic, self.deps.topic_prefix)
        system, entity = names if names is not None else ("unknown", "unknown")

        def count() -> None:
            log.warning(
                "dead-lettered %s@%s:%s: %s: %s",
                *(where.topic, where.partition, where.offset, kind, text[:500]),
                extra=about_key(key, entity=names[1] if names else None),
            )
            self.deps.counts[f"dead_letter.{kind}"] += 1
            metrics.DEAD_LETTERS.labels(DLQ_CDC, kind).inc()
            metrics.EVENTS_PROCESSED.labels(system, entity, "", "dead_letter").inc()

        self.tally(count)
        headers = dead_letter_headers(
            kind,
            text[:4000],
            topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            failed_at_ms=self.now_ms,
        )
        message = OutputMessage(self.deps.topics.dead_letters, key, raw, headers)
        limit = self.deps.outputs.max_message_bytes
        if message.size > limit and raw is not None:
            room = max(0, limit - (message.size - len(raw)) - 256)
            headers = [*headers, (TRUNCATED, b"true"), (ORIGINAL_BYTES, str(len(raw)).encode())]
            message = OutputMessage(self.deps.topics.dead_letters, (key or b"")[:1024] or None, raw[:room], headers)
        self.messages.append(message)

    # --- durability ------------------------------------------------------------------------------

    async def finish(self) -> None:
        """Make the batch durable: the links it learnt, its outputs, what it remembers having sent
        and seen, then that it was processed, each acknowledged by the broker before the next
        (``streams.tables`` says why in this order); then apply the state to the tables. A step
        with nothing to send costs nothing."""
        outputs = self.deps.outputs
        global_tables = self.deps.tables.global_tables()
        for table in global_tables:
            outputs.follow(*table.changelog_tp())
        persisted: dict[tuple[str, int], int] = {}
        for messages in (
            self.state.changelog(LINKS_FIRST),
            self.messages,
            self.state.changelog(AFTER_OUTPUTS),
            self.state.changelog(PROCESSED_MARKERS),
        ):
            for message in messages:
                outputs.send(message)
            persisted.update(await outputs.delivered())
        for table in global_tables:  # what it need not wait to read back (GlobalTablesCatchUp)
            table.wrote(outputs.followed(*table.changelog_tp()))
        self.state.write_to_stores(persisted)
        for count in self._tallies:
            count()


async def run_batches(
    stream: Any, deps: AgentDeps, name: str, process: Callable[[Batch, EventT], None], *, applies_matrix: bool = True
) -> None:
    """An agent's loop: take a batch, stage each event (``process``), make the batch durable, ack it.

    ``applies_matrix``: the agent decides changes by the matrix, so tenant settings apply to its
    batches and its decisions may rest on an absence (the results agent only learns from results).

    A batch that cannot be made durable (the broker refuses its messages or stays away longer than
    ``LIENTHONG_DELIVERY_TIMEOUT``) stops the worker process at once: faust would restart the agent
    on the events after it, and later acks would let its offsets be committed unprocessed. Run
    again, the worker reads the batch again.
    """
    try:
        await _run_batches(stream, deps, name, process, applies_matrix=applies_matrix)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.critical(
            "%s: a batch could not be made durable; the worker stops and reads it again when restarted",
            name,
            exc_info=True,
        )
        deps.stop_worker()
        raise


async def _run_batches(
    stream: Any, deps: AgentDeps, name: str, process: Callable[[Batch, EventT], None], *, applies_matrix: bool
) -> None:
    async for events in stream.take_batches(deps.batch_size, deps.batch_wait):
        started = time.perf_counter()
        waited_ms = time.time() * 1000 - min(event.message.timestamp for event in events) * 1000
        catch_up = deps.catch_up
        if catch_up is not None:
            with stream.buffering_freely():
                await catch_up.wait()
        if applies_matrix:
            # Tenant settings written before the newest event of the batch reached the broker apply to it.
            await deps.tenants.wait_until_current(max(int(event.message.timestamp * 1000) for event in events))
        ends = None
        if catch_up is not None and applies_matrix:
            ends = catch_up.request_ends()  # in case a decision rests on an absence
            await asyncio.sleep(0)  # the request leaves before the batch is decided
        batch = decide_batch(deps, events, process)
        if batch.rests_on_absence and catch_up is not None:
            with stream.buffering_freely():
                behind = await catch_up.read_others_writes(ends)
            if behind:  # decided without other workers' writes it has read since: decide with them
                log.info(
                    "%s: a batch of %d rested on an absent link or CRM record and other workers' writes were "
                    "unread: decided again with them",
                    name,
                    len(events),
                )
                batch = decide_batch(deps, events, process)
                deps.counts[f"{name}.decided_again"] += 1
                metrics.BATCHES_DECIDED_AGAIN.labels(name).inc()
        decided = time.perf_counter()
        await batch.finish()
        await stream.ack_batch(events)
        deps.counts[f"{name}.events"] += len(events)
        metrics.BATCH_SIZE.observe(len(events))
        deps.counts[f"{name}.batches"] += 1
        log.debug(
            "%s: batch of %d (the oldest waited %.0f ms to be taken) decided in %.1f ms, durable in %.1f ms",
            name,
            len(events),
            waited_ms,
            (decided - started) * 1000,
            (time.perf_counter() - decided) * 1000,
        )


def decide_batch(deps: AgentDeps, events: Any, process: Callable[[Batch, EventT], None]) -> Batch:
    batch = Batch(deps)
    for event in events:
        with as_current_event(event):  # its partition's store, for the tables it reads
            process(batch, event)
    return batch


def where_of(event: EventT) -> Where:
    message = event.message
    return Where(message.topic, message.partition, message.offset)


def header(event: EventT, name: str) -> bytes | None:
    value = (event.headers or {}).get(name)
    return value if isinstance(value, bytes) or value is None else str(value).encode()


def rekeyed_headers(event: EventT, where: Where, part: str) -> list[tuple[str, bytes]]:
    """The headers of a document re-keyed for the aggregates agent: the original's own, where it was
    read and under which key, and which part of the document the message is (``origin_of``)."""
    original = [(name, value if isinstance(value, bytes) else str(value).encode())
                for name, value in (event.headers or {}).items()]  # fmt: skip
    return [
        *original,
        (ORIGIN_TOPIC, where.topic.encode()),
        (ORIGIN_PARTITION, str(where.partition).encode()),
        (ORIGIN_OFFSET, str(where.offset).encode()),
        (ORIGIN_KEY, event.message.key or b""),
        (PART, part.encode()),
    ]


def origin_of(event: EventT) -> tuple[Where, bytes | None, str | None]:
    """Where the CDC agent read a re-keyed document, under which key, and which part of it this is
    (``rekeyed_headers``); where the headers do not say, the message's own position."""
    message = event.message

    def text(name: str) -> str:
        return (header(event, name) or b"").decode("utf-8", "replace")

    where = Where(
        text(ORIGIN_TOPIC) or message.topic,
        int(text(ORIGIN_PARTITION) or message.partition),
        int(text(ORIGIN_OFFSET) or message.offset),
    )
    part = header(event, PART)
    return where, header(event, ORIGIN_KEY), None if part is None else part.decode()


def count_duplicate(batch: Batch, change: ChangeEvent, of: str) -> None:
    """An event already processed (its ``event_id`` is among ``of``'s recent ones): dropped, said and counted."""
    log.info(
        "dropped duplicate event %s of %s",
        change.event_id,
        of,
        extra=about(tenant=change.tenant, entity=change.entity, record_id=change.record_id),
    )
    batch.count("duplicate")
    count_event(batch, change.system.value, change.entity, "duplicate")


def count_decision(batch: Batch, change: ChangeEvent, decision: Decision, name: str) -> None:
    """Counts of one staged decision (once the batch is durable): ``name`` in the agents' counts, and
    the metrics of the event (``command`` or ``skipped``) and of its commands."""
    batch.count(name)

    def count() -> None:
        for command in decision.commands:
            metrics.COMMANDS_EMITTED.labels(command.target.value, command.rule).inc()
        outcome = "command" if decision.commands else "skipped"
        metrics.EVENTS_PROCESSED.labels(change.system.value, change.entity, decision.audit.rule or "", outcome).inc()

    batch.tally(count)


def count_event(batch: Batch, system: str, entity: str, outcome: str) -> None:
    batch.tally(lambda: metrics.EVENTS_PROCESSED.labels(system, entity, "", outcome).inc())
