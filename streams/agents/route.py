"""Routing: every change event, result and tenant setting onto the partition of its tenant.

Producers write ``cdc.<system>.<entity>`` keyed ``<tenant>:<record id>`` and the connectors write
``results.<system>`` keyed ``<tenant>:<entity>:<key>``: a tenant's messages are spread over every
partition of every topic. The processor routes each of them, unread, onto one internal topic keyed
by the tenant (``<app id>-changes``), so that one worker owns all of a tenant's changes and state
(``streams.agents.changes``). The bytes and headers are kept; the headers gain where the message
came from (``origin.*``), its original key and when it reached Kafka (``origin.timestamp``).

The tenant is read from the key (the text before its first ``:``), or from the ``tenant`` header of
a Debezium envelope, whose key is the source table's own. A message that names no tenant goes to
the partition of the empty tenant, where it is dead-lettered with the reason like any bad input.
Tombstones (a null value, which Debezium writes after each delete for compaction) are not changes
and are not routed.
"""

from __future__ import annotations

from typing import Any

from common.names import ORIGIN_KEY, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TIMESTAMP, ORIGIN_TOPIC, TENANT
from streams.outputs import OutputMessage


def tenant_of(key: bytes | None, headers: list[tuple[str, bytes]] | None) -> bytes:
    """The tenant a message belongs to, as bytes (empty when it names none)."""
    if headers:
        for name, value in headers:
            if name == TENANT and value:
                return bytes(value)
    if not key:
        return b""
    return key.split(b":", 1)[0]


class TenantPartitions:
    """The partition of the changes topic each tenant is routed to (``partition_of``, remembered)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[bytes, int] = {}

    def __call__(self, tenant: bytes) -> int:
        partition = self._known.get(tenant)
        if partition is None:
            partition = self._known[tenant] = partition_of(tenant, self.partitions)
        return partition


def partition_of(tenant: bytes, partitions: int) -> int:
    """The partition of the changes topic a tenant's changes go to: the Java client's partitioner for
    the tenant as a key (``toPositive(murmur2(key)) % partitions``, librdkafka's ``murmur2_random``),
    so that it is the same whichever client routed it."""
    return (murmur2(tenant) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (
            (data[i4] & 0xFF)
            + ((data[i4 + 1] & 0xFF) << 8)
            + ((data[i4 + 2] & 0xFF) << 16)
            + ((data[i4 + 3] & 0xFF) << 24)
        )
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    index = length & ~3
    if extra == 3:
        h ^= (data[index + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[index + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[index] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def destination(message: Any, partition_of_tenant: TenantPartitions) -> tuple[bytes, int] | None:
    """The tenant a consumed message (``confluent_kafka.Message``) belongs to and its partition of the
    changes topic; None for a tombstone."""
    if message.value() is None:
        return None
    tenant = tenant_of(message.key(), message.headers())
    return tenant, partition_of_tenant(tenant)


def route(message: Any, changes_topic: str, tenant: bytes, partition: int) -> OutputMessage:
    """A consumed message as a message of the changes topic, keyed by its tenant, on its partition
    (``destination``): its bytes and headers, and where it came from. Built only for a message that
    is routed: one its owner decides where it is read needs none."""
    key = message.key()
    routed = [
        *(message.headers() or []),
        (ORIGIN_TOPIC, message.topic().encode()),
        (ORIGIN_PARTITION, str(message.partition()).encode()),
        (ORIGIN_OFFSET, str(message.offset()).encode()),
        (ORIGIN_TIMESTAMP, str(message.timestamp()[1]).encode()),
    ]
    if key is not None:  # no header: the original had no key (an empty one is kept as empty)
        routed.append((ORIGIN_KEY, key))
    return OutputMessage(changes_topic, tenant, message.value(), routed, partition)
