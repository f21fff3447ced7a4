"""A batch on its way through the processor: what each input comes to, staged until it is durable.

Each input of a batch is *staged*: its outputs (routed messages, commands, audit records, dead
letters) are kept in ``Batch.messages`` and its state changes in the ``PartitionState`` of
its partition, so the next input sees them. An input whose outputs or state would be too large for
the broker, cannot be written as JSON, or hits a bug is dead-lettered whole instead: staging is all
or nothing per input. Nothing is sent before the batch is decided; ``streams.checkpoint`` then makes
the whole batch durable in one step. Counts and log lines about the batch (``tally``) are kept for
once it is durable, so a batch that is replayed after a crash is counted once.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from common import metrics
from common.logs import about_key
from common.names import DLQ_CDC, ORIGINAL_BYTES, SOURCE_TS_MS, TRUNCATED, System, parse_cdc_topic
from streams.core.contract import ChangeEvent, Command, Where, dead_letter_headers, dumps
from streams.core.decide import Decision
from streams.core.rules import RuleBook
from streams.outputs import OutputMessage, too_large
from streams.tables.state import PartitionState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputTopics:
    """The names (with the deployment's prefix) of the topics the processor writes."""

    commands: dict[System, str]
    audit: str
    dead_letters: str
    changes: str
    state_changelog: str


@dataclass
class Processing:
    """What deciding needs, built once by ``create_app``: the rules, where outputs go, the limits."""

    rules: RuleBook
    topics: OutputTopics
    topic_prefix: str
    default_order_target: str
    max_message_bytes: int
    counts: Counter[str] = field(default_factory=Counter)  # what the processor did, for logs and tests


class Unstageable(Exception):
    """An input's outputs or state cannot be sent or kept; ``kind`` is the dead letter's ``error.kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class Batch:
    """One batch: staged outputs and, per partition of the changes topic, its state."""

    def __init__(self, processing: Processing, now_ms: int) -> None:
        self.processing = processing
        self.now_ms = now_ms  # the worker's clock when the batch began (the core reads none)
        self.messages: list[OutputMessage] = []
        self.states: dict[int, PartitionState] = {}
        self._tallies: list[Callable[[], None]] = []
        # what the batch's inputs came to, counted once it is durable (a replayed batch counts once)
        self.counts: Counter[str] = Counter()
        self.events: Counter[tuple[str, str, str, str]] = Counter()  # (system, entity, rule, outcome)
        self.commands: Counter[tuple[str, str]] = Counter()  # (target, rule)

    def tally(self, count: Callable[[], None]) -> None:
        """Count or log what an input came to, once the batch is durable."""
        self._tallies.append(count)

    def count(self, name: str) -> None:
        self.counts[name] += 1

    def tallied(self) -> None:
        """The batch is durable: its counts and metrics, once per label set, and its log lines."""
        self.processing.counts.update(self.counts)
        for event, n in self.events.items():
            metrics.EVENTS_PROCESSED.labels(*event).inc(n)
        for command, n in self.commands.items():
            metrics.COMMANDS_EMITTED.labels(*command).inc(n)
        for count in self._tallies:
            count()
        self._tallies.clear()
        self.counts.clear()
        self.events.clear()
        self.commands.clear()

    # --- staging ------------------------------------------------------------------------------

    def decision_messages(self, decision: Decision, source_ts_ms: int | None = None) -> list[OutputMessage]:
        """A decision's commands and audit record as messages (raises ``Unstageable``)."""
        messages = [self.command_message(command, source_ts_ms) for command in decision.commands]
        audit = decision.audit
        try:
            value = dumps(audit)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise Unstageable("unserializable", f"the audit record cannot be written as JSON: {exc}") from None
        messages.append(OutputMessage(self.processing.topics.audit, audit.message_key.encode(), value))
        return messages

    def command_message(self, command: Command, source_ts_ms: int | None = None) -> OutputMessage:
        try:
            value = dumps(command)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise Unstageable("unserializable", f"{command.rule} command cannot be written as JSON: {exc}") from None
        headers = None if source_ts_ms is None else [(SOURCE_TS_MS, str(source_ts_ms).encode())]
        topic = self.processing.topics.commands[command.target]
        return OutputMessage(topic, command.message_key.encode(), value, headers)

    def stage(self, messages: list[OutputMessage], remember: Callable[[], None], *, state_values: list[Any]) -> None:
        """Accept one input: its outputs and (through ``remember``) its state changes, or neither.

        ``state_values`` are the table values the input writes that could grow past what a
        changelog message holds (a CRM record, an order's aggregate).
        """
        limit = self.processing.max_message_bytes
        large = too_large(messages, limit)
        if large is not None:
            raise Unstageable(
                "too_large",
                f"an output for {large.topic} would be {large.size} bytes; the limit is {limit} "
                "(LIENTHONG_MAX_MESSAGE_BYTES)",
            )
        for value in state_values:
            try:
                size = len(orjson.dumps(value))
            except (orjson.JSONEncodeError, TypeError) as exc:
                raise Unstageable("unserializable", f"a table value cannot be written as JSON: {exc}") from None
            if size > limit:
                raise Unstageable(
                    "too_large", f"the state this change leaves would be {size} bytes; the limit is {limit}"
                )
        remember()
        self.messages.extend(messages)

    def send(self, message: OutputMessage) -> None:
        """An output that needs no staging (a routed message)."""
        self.messages.append(message)

    def dead_letter(self, key: bytes | None, raw: bytes | None, kind: str, text: str, where: Where) -> None:
        """The original key and bytes, with the reason in headers; truncated (and said so) when the
        original itself is larger than a message may be."""
        names = parse_cdc_topic(where.topic, self.processing.topic_prefix)
        system, entity = names if names is not None else ("unknown", "unknown")

        def count() -> None:
            log.warning(
                "dead-lettered %s@%s:%s: %s: %s",
                *(where.topic, where.partition, where.offset, kind, text[:500]),
                extra=about_key(key, entity=names[1] if names else None),
            )
            metrics.DEAD_LETTERS.labels(DLQ_CDC, kind).inc()

        self.tally(count)
        self.counts[f"dead_letter.{kind}"] += 1
        self.events[(system, entity, "", "dead_letter")] += 1
        headers = dead_letter_headers(
            kind,
            text[:4000],
            topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            failed_at_ms=self.now_ms,
        )
        topic = self.processing.topics.dead_letters
        message = OutputMessage(topic, key, raw, headers)
        limit = self.processing.max_message_bytes
        if message.size > limit and raw is not None:
            room = max(0, limit - (message.size - len(raw)) - 256)
            headers = [*headers, (TRUNCATED, b"true"), (ORIGINAL_BYTES, str(len(raw)).encode())]
            message = OutputMessage(topic, (key or b"")[:1024] or None, raw[:room], headers)
        self.messages.append(message)


def count_decision(batch: Batch, change: ChangeEvent, decision: Decision) -> None:
    """Metrics of one staged decision (once the batch is durable): the event (``command`` or
    ``skipped``) and its commands."""
    for command in decision.commands:
        batch.commands[(command.target.value, command.rule)] += 1
    outcome = "command" if decision.commands else "skipped"
    batch.events[(change.system.value, change.entity, decision.audit.rule or "", outcome)] += 1


def count_event(batch: Batch, system: str, entity: str, outcome: str) -> None:
    batch.events[(system, entity, "", outcome)] += 1
