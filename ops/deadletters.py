"""``lienthong dlq list|show|replay``: dead letters, filtered by reason, time and tenant, shown whole, replayed.

A dead letter (``docs/contract.md``, "Dead letters") is the original message's key and bytes with
the reason in headers: ``error.kind``, ``error.message``, ``origin.topic|partition|offset``,
``failed.at_ms``. Replay writes the selected letters back to their ``origin.topic`` with their key
and bytes (plus a ``replayed.from`` header). Replaying is idempotent downstream: a change event keeps
its ``event_id``, so the processor drops it as a duplicate once it has been processed; a command keeps
its ``command_id``, which the connector applies once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from common.kafka_config import confluent_config, unreachable
from common.names import (
    DLQ_CDC,
    DLQ_COMMANDS,
    ERROR_KIND,
    ERROR_MESSAGE,
    FAILED_AT_MS,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    REPLAYED_FROM,
    TRUNCATED,
)
from common.settings import KafkaSettings
from common.topic_wait import watermarks
from ops.operations import Record, _headers, read_topic

DLQ_TOPICS = (DLQ_CDC, DLQ_COMMANDS)


class DeadLetterError(RuntimeError):
    """A user's mistake (an unknown topic, a bad time, no such letter); the message says what to do."""


@dataclass(frozen=True)
class DeadLetter:
    topic: str  # without the deployment's prefix
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name and value is not None:
                return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return None

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def kind(self) -> str:
        return self.header(ERROR_KIND) or "?"

    @property
    def message(self) -> str:
        return self.header(ERROR_MESSAGE) or ""

    @property
    def origin(self) -> str | None:
        return self.header(ORIGIN_TOPIC)

    @property
    def failed_at_ms(self) -> int | None:
        text = self.header(FAILED_AT_MS)
        return int(text) if text and text.isdigit() else None

    @property
    def tenant(self) -> str | None:
        """The tenant: the value's ``tenant`` when it is a JSON object that says one, else the key's first part."""
        try:
            value = orjson.loads(self.value) if self.value else None
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict) and isinstance(value.get("tenant"), str):
            return str(value["tenant"])
        if self.key and b":" in self.key:
            return self.key.split(b":", 1)[0].decode("utf-8", "replace")
        return None


@dataclass(frozen=True)
class Filters:
    kind: str | None = None
    tenant: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def accept(self, letter: DeadLetter) -> bool:
        if self.kind is not None and letter.kind != self.kind:
            return False
        if self.tenant is not None and letter.tenant != self.tenant:
            return False
        when = letter.failed_at_ms
        if self.since_ms is not None and (when is None or when < self.since_ms):
            return False
        return not (self.until_ms is not None and (when is None or when > self.until_ms))


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str, *, now: float | None = None) -> int:
    """``2h``, ``30m``, ``7d`` (that long ago), an ISO date or date-time (UTC unless it says), or epoch ms."""
    text = text.strip()
    now = time.time() if now is None else now
    relative = _RELATIVE.match(text)
    if relative:
        return int((now - float(relative.group(1)) * _UNIT[relative.group(2)]) * 1000)
    if text.isdigit() and len(text) >= 12:
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(
            f"cannot read the time {text!r}: give an ISO date or time (2026-11-28, 2026-11-28T09:30), "
            "a span ago (30m, 2h, 7d) or epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def check_topic(topic: str) -> str:
    if topic not in DLQ_TOPICS:
        raise DeadLetterError(f"{topic!r} is not a dead-letter topic; use one of {', '.join(DLQ_TOPICS)}")
    return topic


def _letter(topic: str, record: Record) -> DeadLetter:
    return DeadLetter(topic, record.partition, record.offset, record.key, record.value, record.headers)


def dead_letters(kafka: KafkaSettings, topic: str, filters: Filters = Filters()) -> Iterator[DeadLetter]:
    """The letters of ``topic`` now on the broker that pass ``filters``, in partition order."""
    check_topic(topic)
    try:
        for record in read_topic(kafka, kafka.topic_prefix + topic):
            letter = _letter(topic, record)
            if filters.accept(letter):
                yield letter
    except KafkaException as exc:
        raise DeadLetterError(_unreachable(kafka, exc)) from None
    except RuntimeError as exc:
        raise DeadLetterError(f"{exc}: are the topics created (lienthong topics create)?") from None


def every_dead_letter(
    kafka: KafkaSettings, topics: Iterable[str] | None = None, filters: Filters = Filters()
) -> Iterator[DeadLetter]:
    """The letters of ``topics`` (default: every dead-letter topic, ``DLQ_TOPICS``) that pass ``filters``,
    topic after topic, each in partition order."""
    for topic in topics or DLQ_TOPICS:
        yield from dead_letters(kafka, topic, filters)


def _unreachable(kafka: KafkaSettings, exc: Exception) -> str:
    return unreachable(kafka, exc)


def parse_where(text: str, topic: str | None) -> tuple[str, int, int]:
    """``dlq.cdc:2:17``, or ``2:17`` with ``--topic``."""
    parts = text.rsplit(":", 2)
    try:
        if len(parts) == 3:
            return check_topic(parts[0]), int(parts[1]), int(parts[2])
        if len(parts) == 2:
            return check_topic(topic or DLQ_CDC), int(parts[0]), int(parts[1])
    except ValueError:
        pass
    raise DeadLetterError(f"{text!r} names no dead letter: give TOPIC:PARTITION:OFFSET as `lienthong dlq list` shows")


def dead_letter(kafka: KafkaSettings, topic: str, partition: int, offset: int, timeout: float = 10.0) -> DeadLetter:
    """The one letter at ``topic:partition:offset``."""
    name = kafka.topic_prefix + check_topic(topic)
    consumer = Consumer(
        confluent_config(
            kafka,
            {
                "group.id": "lienthong-dlq-show",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        metadata = consumer.list_topics(name, timeout=timeout).topics.get(name)
        if metadata is None or metadata.error is not None:
            raise DeadLetterError(f"topic {name} not found on {kafka.bootstrap_servers}: lienthong topics create")
        if partition not in metadata.partitions:
            raise DeadLetterError(f"{name} has partitions 0..{len(metadata.partitions) - 1}, not {partition}")
        low, high = watermarks(consumer, TopicPartition(name, partition), timeout)
        if not low <= offset < high:
            raise DeadLetterError(
                f"no dead letter at {topic}:{partition}:{offset} (partition {partition} holds offsets "
                f"{low}..{high - 1}); `lienthong dlq list --topic {topic}` shows them"
            )
        consumer.assign([TopicPartition(name, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            return DeadLetter(
                topic, partition, message.offset() or 0, message.key(), message.value(), _headers(message)
            )
        raise DeadLetterError(f"the broker did not hand over {topic}:{partition}:{offset} within {timeout:g}s")
    except KafkaException as exc:
        raise DeadLetterError(_unreachable(kafka, exc)) from None
    finally:
        consumer.close()


def replay(
    kafka: KafkaSettings,
    letters: Iterable[DeadLetter],
    *,
    progress: Callable[[DeadLetter], None] = lambda letter: None,
    timeout: float = 30.0,
) -> tuple[int, list[str]]:
    """Write each letter back to its ``origin.topic``; returns (replayed, letters skipped with why)."""
    from ops.lag import LagError
    from ops.publishing import Publisher

    letters = list(letters)
    try:
        publisher = Publisher(kafka, {letter.origin for letter in letters if letter.origin})
    except LagError as exc:
        raise DeadLetterError(f"cannot replay: {exc}") from None
    skipped: list[str] = []
    replayed = 0
    for letter in letters:
        origin = letter.origin
        if not origin:
            skipped.append(f"{letter.where}: no {ORIGIN_TOPIC} header")
        elif letter.header(TRUNCATED) == "true":
            skipped.append(f"{letter.where}: truncated (only the first bytes were kept)")
        else:
            publisher.produce(
                origin,
                letter.key,
                letter.value,
                headers=[(REPLAYED_FROM, f"{kafka.topic_prefix}{letter.where}".encode())],
            )
            replayed += 1
        progress(letter)
    problem = publisher.unacknowledged(timeout)
    if problem is not None:
        raise DeadLetterError(
            f"the broker did not take every replayed letter ({problem}); "
            "replaying again is safe: duplicates are dropped downstream"
        )
    return replayed, skipped


def describe_letter(letter: DeadLetter) -> dict[str, Any]:
    """One letter whole, for ``dlq show``: where, headers, key and the original value (JSON when it is)."""
    try:
        value: Any = orjson.loads(letter.value) if letter.value else None
    except orjson.JSONDecodeError:
        value = (letter.value or b"").decode("utf-8", "backslashreplace")
    when = letter.failed_at_ms
    return {
        "where": letter.where,
        "kind": letter.kind,
        "message": letter.message,
        "origin": f"{letter.origin}:{letter.header(ORIGIN_PARTITION)}:{letter.header(ORIGIN_OFFSET)}",
        "failed_at": datetime.fromtimestamp(when / 1000, tz=UTC).isoformat() if when else None,
        "tenant": letter.tenant,
        "key": letter.key.decode("utf-8", "backslashreplace") if letter.key is not None else None,
        "headers": {
            k: (v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else v) for k, v in letter.headers
        },
        "value": value,
    }
