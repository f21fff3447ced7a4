"""Operator views over the topics: the audit trail of one record, tenant settings, reading a topic whole
(dead letters: ``ops/deadletters.py``).

confluent-kafka only; no faust app is started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from common.kafka_config import confluent_config
from common.names import AUDIT, TENANT_CONFIG
from common.settings import KafkaSettings

Header = tuple[str, str | bytes | None]


class Record(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def _headers(message: Message) -> list[Header]:
    """A consumed message's headers; the client hands them over as a list of (name, value) pairs."""
    headers = message.headers()
    if headers is None:
        return []
    if not isinstance(headers, list):
        raise TypeError(f"headers of a consumed message are a {type(headers).__name__}, not a list of pairs")
    return headers


def read_topic(kafka: KafkaSettings, topic: str, timeout: float = 10.0) -> Iterator[Record]:
    """Every message of ``topic`` now on the broker (up to its end offsets when called); no group."""
    consumer = Consumer(
        confluent_config(
            kafka,
            {
                "group.id": f"inspect-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # the processor writes in transactions, whose markers take offsets no message reaches:
                # the end-of-partition event says a partition is read to its end
                "enable.partition.eof": True,
            },
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise RuntimeError(
                f"topic {topic} not found on {kafka.bootstrap_servers}: create the contract's topics "
                "(lienthong topics create) or check LIENTHONG_TOPIC_PREFIX"
            )
        ends = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                ends[partition] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + max(timeout, 30.0)
        while ends and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF and (message.offset() or 0) >= ends.get(
                    message.partition() or 0, 0
                ):
                    ends.pop(message.partition() or 0, None)
                continue
            partition, offset = message.partition(), message.offset()

            if partition is None or offset is None:
                raise RuntimeError(f"a message of {topic} came without its partition or offset")
            yield Record(partition, offset, message.key(), message.value(), _headers(message))
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
    finally:
        consumer.close()


def audit_trail(kafka: KafkaSettings, tenant: str, entity: str, record_id: str) -> list[dict]:
    key = f"{tenant}:{entity}:{record_id}".encode()
    trail = [
        orjson.loads(record.value)
        for record in read_topic(kafka, kafka.topic_prefix + AUDIT)
        if record.key == key and record.value
    ]
    return sorted(trail, key=lambda a: a.get("ts_ms", 0))


def format_trail(trail: list[dict]) -> str:
    lines = []
    for audit in trail:
        when = datetime.fromtimestamp(audit["ts_ms"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        rules = ", ".join(audit.get("rules") or []) or "no rule"
        lines.append(
            f"{when}  {audit['system']} {audit['action']} (event {audit['event_id']}, origin {audit['origin']})"
            f"  rules: {rules}"
        )
        for command in audit.get("commands") or []:
            lines.append(
                f"    -> {command['rule']}: {command['op']} {command['target']} {command['entity']} "
                f"{command['key']}  [{command['command_id'][:12]}]"
            )
        if audit.get("reason"):
            lines.append(f"    {audit['reason']}")
    return "\n".join(lines)


def set_tenant(kafka: KafkaSettings, tenant: str, order_target: str) -> dict:
    value = {"schema_version": 1, "tenant": tenant, "order_target": order_target}
    producer = Producer(confluent_config(kafka, {"acks": "all"}))
    producer.produce(kafka.topic_prefix + TENANT_CONFIG, key=tenant.encode(), value=orjson.dumps(value))
    if producer.flush(30):
        raise RuntimeError(f"could not write tenant settings to {kafka.topic_prefix + TENANT_CONFIG}")
    return value
