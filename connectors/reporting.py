"""What a connector produces: the result of each command on ``results.<system>``, and a copy of each
command that could not be applied (rejected, failed, unreadable) on ``dlq.commands`` with the
reason in headers. Each is produced and acknowledged by the broker before the command's offset
may be committed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import orjson
from confluent_kafka import Message, Producer

from common import metrics
from common.delivery import produce_acknowledged
from common.names import DLQ_COMMANDS, SOURCE_TS_MS, System, results_topic
from connectors.in_flight import position
from streams.core.contract import Command, Result, ResultError, dead_letter_headers

# The connector's log lines keep one logger name, whichever of its modules writes them: operators
# filter by it (docs/deploy.md shows one).
log = logging.getLogger("connectors.runner")

# How a command ended: the values of the contract's ``Result.status`` (mypy checks each is one of them).
ResultStatus = Literal["applied", "duplicate", "rejected", "failed"]


@dataclass
class Outcome:
    status: ResultStatus
    target_id: str | None = None
    code: str | None = None
    error: ResultError | None = None
    attempts: int = 0


def source_ts_ms(message: Message, command: Command) -> int:
    """When the change behind a command happened: its header, else when the command was decided."""
    for header in message.headers() or []:
        name, value = header[0], header[1]
        if name == SOURCE_TS_MS and value:
            try:
                return int(value)
            except ValueError:
                break
    return command.ts_ms


class ResultReporter:
    """Produces the results and dead letters of one connector (``system``) with its producer."""

    def __init__(self, producer: Producer, *, system: System, topic_prefix: str) -> None:
        self.producer = producer
        self.system = system
        self.prefix = topic_prefix

    async def report(self, message: Message, command: Command, outcome: Outcome) -> None:
        """The command's result; a rejected or failed one is dead-lettered too."""
        result = Result(
            command_id=command.command_id,
            tenant=command.tenant,
            target=command.target,
            entity=command.entity,
            status=outcome.status,
            target_id=outcome.target_id or command.key.id,
            code=outcome.code or command.key.code,
            error=outcome.error,
            attempts=outcome.attempts,
            ts_ms=int(time.time() * 1000),
        )
        log.info(
            "%s %s after %s attempt(s)%s",
            outcome.status,
            command.op.value,
            outcome.attempts,
            f": {outcome.error.kind}: {outcome.error.message[:300]}" if outcome.error else "",
        )
        await self._produce(
            self.prefix + results_topic(self.system),
            message.key(),
            orjson.dumps(result.model_dump(mode="json")),
        )
        metrics.CONNECTOR_RESULTS.labels(self.system, outcome.status).inc()
        if outcome.status == "applied":
            metrics.observe_sync_latency(self.system, source_ts_ms(message, command))
        if outcome.status in ("rejected", "failed"):
            await self.dead_letter(
                message,
                outcome.error.kind if outcome.error else outcome.status,
                outcome.error.message if outcome.error else outcome.status,
            )

    async def dead_letter(self, message: Message, kind: str, text: str) -> None:
        """The consumed message as it came, to ``dlq.commands``, with why (``kind``, ``text``) in headers."""
        topic, partition, offset = position(message)
        log.warning("dead-lettered %s@%s:%s to %s: %s: %s", topic, partition, offset, DLQ_COMMANDS, kind, text[:300])
        headers = dead_letter_headers(
            kind, text, topic=topic, partition=partition, offset=offset, failed_at_ms=int(time.time() * 1000)
        )
        await self._produce(self.prefix + DLQ_COMMANDS, message.key(), message.value(), headers)
        metrics.DEAD_LETTERS.labels(DLQ_COMMANDS, kind).inc()

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list | None = None) -> None:
        """Produce and wait until the broker has it (the offset is committed only after)."""
        await produce_acknowledged(self.producer, topic, key, value, headers)
