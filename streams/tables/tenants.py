"""Tenant settings from the compacted ``config.tenants`` topic, read whole by every worker.

Contract: "a change applies to the events that follow it". The reader follows the topic in the
background; before an event is decided, ``wait_until_current(t)`` makes sure every settings record
written before time ``t`` (the event's broker timestamp) has been read: it asks the broker for the
topic's end offsets once per such moment and waits until the reader has passed them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

log = logging.getLogger(__name__)

ORDER_TARGETS = ("sale_order", "contract")


def parse_tenant_settings(tenant: str, raw: bytes) -> dict[str, Any]:
    """A ``config.tenants`` value -> settings dict; ValueError says what is wrong."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if value.get("schema_version", 1) != 1:
        raise ValueError(f"schema_version {value.get('schema_version')!r}; this processor reads version 1")
    if value.get("order_target") not in (None, *ORDER_TARGETS):
        raise ValueError(f"order_target {value.get('order_target')!r}; expected one of {', '.join(ORDER_TARGETS)}")
    if value.get("tenant") not in (None, tenant):
        raise ValueError(f"value names tenant {value.get('tenant')!r} but the key is {tenant!r}")
    return value


class TenantSettings:
    """Every tenant's settings in memory, kept current by ``run()``."""

    def __init__(self, bootstrap_servers: str, topic: str, *, max_wait: float = 5.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.max_wait = max_wait
        self.by_tenant: dict[str, dict[str, Any]] = {}
        self.current_as_of_ms = 0  # every record written before this moment has been read
        self._consumer: AIOKafkaConsumer | None = None
        self._next_offset: dict[int, int] = {}  # partition -> offset after the last record read
        self._check_lock = asyncio.Lock()

    def get(self, tenant: str) -> dict[str, Any]:
        return self.by_tenant.get(tenant) or {}

    def _apply(self, key: bytes | None, value: bytes | None, where: str) -> None:
        tenant = (key or b"").decode("utf-8", "replace")
        if not tenant:
            log.error("ignored tenant settings without a key at %s", where)
            return
        if value is None:
            self.by_tenant.pop(tenant, None)
            return
        try:
            self.by_tenant[tenant] = parse_tenant_settings(tenant, value)
            log.info("tenant %s settings: %s", tenant, self.by_tenant[tenant])
        except ValueError as exc:
            # Not the previous settings, not a guess: the defaults, as for a tenant without settings.
            self.by_tenant.pop(tenant, None)
            log.error("invalid tenant settings for %r at %s (%s): the tenant uses the defaults", tenant, where, exc)

    async def run(self) -> None:
        """Follow the topic from its beginning, forever (a faust app task)."""
        # No group: aiokafka assigns every partition of the topic to this consumer.
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(record.key, record.value, f"{tp.topic}@{tp.partition}:{record.offset}")
                        self._next_offset[tp.partition] = record.offset + 1
                # The fetch position also moves past offsets compaction removed; ask for it, briefly.
                for tp in consumer.assignment():
                    try:
                        position = await asyncio.wait_for(consumer.position(tp), timeout=0.2)
                    except TimeoutError:
                        continue
                    if position > self._next_offset.get(tp.partition, 0):
                        self._next_offset[tp.partition] = position
        finally:
            self._consumer = None
            await consumer.stop()

    async def wait_until_current(self, as_of_ms: int) -> None:
        """Return once every settings record written before ``as_of_ms`` has been read.

        At most ``max_wait`` seconds; past that the decision goes ahead with what is known, with a
        warning, and the moment counts as checked (one slow check, not one per event).
        """
        if as_of_ms <= self.current_as_of_ms:
            return
        async with self._check_lock:
            if as_of_ms <= self.current_as_of_ms:
                return  # another event's check covered this moment
            checked_at_ms = int(time.time() * 1000)
            try:
                await asyncio.wait_for(self._read_up_to_now(), timeout=self.max_wait)
            except TimeoutError:
                log.warning(
                    "tenant settings from %s not read up to now within %.1fs; deciding with what is known",
                    self.topic,
                    self.max_wait,
                )
            except Exception:  # the broker could not be asked: decide with what is known
                log.exception("could not check that tenant settings are current")
            self.current_as_of_ms = checked_at_ms

    async def _read_up_to_now(self) -> None:
        while self._consumer is None or not self._consumer.assignment():
            await asyncio.sleep(0.05)
        consumer = self._consumer
        ends = await consumer.end_offsets(sorted(consumer.assignment()))
        starts = await consumer.beginning_offsets(sorted(ends))
        # Offsets this reader has passed, by its own count: a partition is read up to its end
        # offset when the record before it was seen (or the partition holds nothing).
        while any(end > starts[tp] and self._next_offset.get(tp.partition, 0) < end for tp, end in ends.items()):
            await asyncio.sleep(0.02)
