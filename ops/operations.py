"""Operator views over the topics: the audit trail of one record, tenant settings, reading a topic whole
(dead letters: ``ops/deadletters.py``).

confluent-kafka only; no faust app is started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from common.kafka_config import confluent_config, unreachable
from common.names import AUDIT, TENANT_CONFIG
from common.settings import KafkaSettings
from common.topic_wait import watermarks
from streams.core.rules import ORDER_TARGETS, load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings, parse_tenant_settings
from streams.core.validation import TENANT_ID

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
            low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
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


class TenantError(RuntimeError):
    """A tenant name or setting the contract refuses, or settings that cannot be read; one line."""


def tenant_settings(tenant: str, order_target: str) -> dict[str, Any]:
    """The ``config.tenants`` value for ``tenant``, checked as the contract's tenant rule and the worker
    check it (docs/contract.md, "Tenant settings"); ``TenantError`` naming what is wrong."""
    if not TENANT_ID.fullmatch(tenant):
        raise TenantError(
            f"tenant {tenant!r} is not a tenant id: 1 to 64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (docs/contract.md)"
        )
    if order_target not in ORDER_TARGETS:
        raise TenantError(f"order target {order_target!r}: expected one of {', '.join(ORDER_TARGETS)}")
    value = {"schema_version": 1, "tenant": tenant, "order_target": order_target}
    try:
        parse_tenant_settings(tenant, orjson.dumps(value))  # what the worker will make of it
    except ValueError as exc:
        raise TenantError(f"tenant {tenant}: {exc}") from None
    return value


def set_tenant(
    kafka: KafkaSettings, tenant: str, order_target: str | None = None, *, settings: SyncSettings | None = None
) -> dict[str, Any]:
    """Write the tenant's settings (checked first) to ``config.tenants``; returns what was written.

    ``settings`` (from a file, ``ops.settings_file``) replace the ones in force; ``order_target`` alone
    changes only that: settings of version 2 in force keep the rest and go to the next revision."""
    if settings is not None:
        value = settings.document()
    else:
        if order_target is None:
            raise TenantError("nothing to set: give --order-target or --file")
        value = tenant_settings(tenant, order_target)
        in_force = read_tenants(kafka).get(tenant)
        if in_force is not None and in_force.settings is not None and in_force.settings.schema_version >= 2:
            current = in_force.settings
            value = current.model_copy(
                update={"order_target": order_target, "revision": current.revision + 1}
            ).document()
    topic = kafka.topic_prefix + TENANT_CONFIG
    producer = Producer(confluent_config(kafka, {"acks": "all", "message.timeout.ms": 15000}))
    errors: list[str] = []
    producer.produce(
        topic,
        key=tenant.encode(),
        value=orjson.dumps(value),
        on_delivery=lambda error, _message: errors.append(str(error)) if error is not None else None,
    )
    if producer.flush(30) or errors:
        raise TenantError(
            f"could not write tenant settings to {topic} on {kafka.bootstrap_servers} "
            f"({'; '.join(errors) or 'no answer'}): start the broker or create the topics "
            "(lienthong topics create)"
        )
    return value


@dataclass(frozen=True)
class StoredTenantSettings:
    """A tenant's settings record on ``config.tenants`` as the worker reads it: ``value`` when valid,
    else ``problem`` (the worker then puts the tenant on the defaults). Not the worker's reader of
    them (``streams.tables.tenants.TenantSettings``)."""

    tenant: str
    value: dict[str, Any] | None
    problem: str | None = None
    settings: SyncSettings | None = None  # ``value`` read as the worker reads it

    def as_json(self) -> dict[str, Any]:
        if self.value is not None:
            return {"tenant": self.tenant, **self.value, "valid": True}
        return {"tenant": self.tenant, "valid": False, "problem": self.problem, "applies": "the defaults"}


def read_tenants(kafka: KafkaSettings) -> dict[str, StoredTenantSettings]:
    """Every tenant with settings on ``config.tenants`` (its last value; a tombstone removes it)."""
    topic = kafka.topic_prefix + TENANT_CONFIG
    rules = load_rules()  # a rule switched off must exist and be switchable, as the worker checks
    found: dict[str, StoredTenantSettings] = {}
    try:
        for record in read_topic(kafka, topic):
            if record.key is None:
                continue  # the worker ignores a setting without a key
            tenant = record.key.decode(errors="replace")
            if record.value is None:
                found.pop(tenant, None)
                continue
            try:
                settings = parse_tenant_settings(tenant, record.value, rules)
                found[tenant] = StoredTenantSettings(tenant, settings.document(), settings=settings)
            except ValueError as exc:
                found[tenant] = StoredTenantSettings(tenant, None, str(exc))
    except KafkaException as exc:
        raise TenantError(unreachable(kafka, exc)) from None
    except RuntimeError as exc:
        raise TenantError(f"{exc}: start the broker or create the topics (lienthong topics create)") from None
    return dict(sorted(found.items()))


def get_tenant(kafka: KafkaSettings, tenant: str) -> StoredTenantSettings:
    """One tenant's settings; ``TenantError`` when it has none (it then follows the worker's default)."""
    if not TENANT_ID.fullmatch(tenant):
        raise TenantError(f"tenant {tenant!r} is not a tenant id (docs/contract.md)")
    found = read_tenants(kafka).get(tenant)
    if found is None:
        raise TenantError(
            f"tenant {tenant} has no settings on {kafka.topic_prefix + TENANT_CONFIG}: it follows "
            "LIENTHONG_DEFAULT_ORDER_TARGET (sale_order unless configured); set them with "
            f"`lienthong tenant set {tenant} --order-target sale_order|contract`"
        )
    return found


def settings_in_force(kafka: KafkaSettings, tenant: str) -> SyncSettings:
    """The settings the worker decides the tenant's changes with: its valid record on ``config.tenants``,
    else the defaults (no record, or an invalid one: the worker uses the defaults then too)."""
    found = read_tenants(kafka).get(tenant)
    return found.settings if found is not None and found.settings is not None else DEFAULT_SETTINGS
