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
from aiokafka import AIOKafkaConsumer, TopicPartition

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
        self._progress = asyncio.Condition()
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
            log.error("ignored tenant settings for %r at %s: %s", tenant, where, exc)

    async def run(self) -> None:
        """Follow the topic from its beginning, forever (a faust app task)."""
        # No group: aiokafka assigns every partition of the topic to this consumer.
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(record.key, record.value, f"{tp.topic}@{tp.partition}:{record.offset}")
                async with self._progress:
                    self._progress.notify_all()
        finally:
            self._consumer = None
            await consumer.stop()

    async def _positions_reached(self, ends: dict[TopicPartition, int]) -> bool:
        consumer = self._consumer
        if consumer is None:
            return False
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def wait_until_current(self, as_of_ms: int) -> None:
        """Return once every settings record written before ``as_of_ms`` has been read (or after max_wait)."""
        if as_of_ms <= self.current_as_of_ms:
            return
        async with self._check_lock:
            if as_of_ms <= self.current_as_of_ms:
                return  # another event's check covered this moment
            deadline = time.monotonic() + self.max_wait
            while self._consumer is None or not self._consumer.assignment():
                if time.monotonic() > deadline:
                    log.warning("tenant settings reader not started after %.1fs; deciding with what is known",
                                self.max_wait)
                    return
                await asyncio.sleep(0.05)
            checked_at_ms = int(time.time() * 1000)
            partitions = sorted(self._consumer.assignment())
            ends = await self._consumer.end_offsets(partitions)
            async with self._progress:
                while not await self._positions_reached(ends):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        log.warning("tenant settings reader is behind %s; deciding with what is known", self.topic)
                        return
                    try:
                        await asyncio.wait_for(self._progress.wait(), timeout=remaining)
                    except asyncio.TimeoutError:
                        pass
            self.current_as_of_ms = checked_at_ms
