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


def route(message: Any, changes_topic: str) -> OutputMessage | None:
    """A consumed message (``confluent_kafka.Message``) as a message of the changes topic, keyed by
    its tenant; None for a tombstone."""
    value = message.value()
    if value is None:
        return None
    key = message.key()
    headers = message.headers() or []
    routed = [
        *headers,
        (ORIGIN_TOPIC, message.topic().encode()),
        (ORIGIN_PARTITION, str(message.partition()).encode()),
        (ORIGIN_OFFSET, str(message.offset()).encode()),
        (ORIGIN_TIMESTAMP, str(message.timestamp()[1]).encode()),
    ]
    if key is not None:  # no header: the original had no key (an empty one is kept as empty)
        routed.append((ORIGIN_KEY, key))
    return OutputMessage(changes_topic, tenant_of(key, headers), value, routed)
