"""Tenant settings from the compacted ``config.tenants`` topic, read whole by every worker.

Contract: "a change applies to the events that follow it". The reader follows the topic in the
background with a long poll (a new setting is answered at once), and knows how current it is:
when every partition's last fetch answered at time *t* and the reader had read up to that
partition's end, every settings record written before *t* has been read. Before a batch is
decided, ``wait_until_current(t)`` makes sure that is so for the batch's newest event: when the
fetch answers are not that recent, it asks the broker the topic's ends (``TopicEnds``, one round
trip on a connection no fetch waits on) and returns once the reader has read to them.

Why not fetch answers alone, with a short poll: a fetch every 10 ms, in aiokafka's Python on the
worker's event loop, cost an idle worker ~6 % of a core and held the GIL the processing loop needs
(docs/performance.md); a live batch asks once, in about half a millisecond.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for type checkers

from streams.core.rules import RuleBook
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings, parse_tenant_settings

log = logging.getLogger(__name__)


# How long the reader's fetch waits for new settings before answering "nothing new" (a new setting
# is answered at once): how old its own proof of being current may be when a batch asks for one.
POLL_MS = 250
# How often a batch waiting for the reader looks again (the reader's next answer comes on new data).
WAIT_STEP_S = 0.002
# How often the reader asks whether the topic exists, while it does not.
TOPIC_CHECK_S = 0.5


class TopicEnds:
    """Where each asked partition of a topic ends now, from an admin client: its connection carries no
    fetch, so the answer never waits behind a long poll (about half a millisecond on a local broker)."""

    def __init__(self, admin: AdminClient, timeout: float = 5.0) -> None:
        self.admin = admin
        self.timeout = timeout

    def __call__(self, topic: str, partitions: list[int]) -> dict[int, int]:
        asked = {TopicPartition(topic, partition): OffsetSpec.latest() for partition in partitions}
        answers = self.admin.list_offsets(asked, request_timeout=self.timeout)
        return {tp.partition: future.result(timeout=self.timeout + 1).offset for tp, future in answers.items()}


class TenantSettings:
    """Every tenant's settings in memory, kept current by ``run()``."""

    def __init__(
        self,
        kafka: Mapping[str, Any],
        topic: str,
        *,
        max_wait: float = 5.0,
        rules: RuleBook | None = None,
        ends: Callable[[str, list[int]], dict[int, int]] | None = None,
    ) -> None:
        self.kafka = dict(kafka)  # aiokafka client arguments: common.kafka_config.aiokafka_config
        self.topic = topic
        # the broker's end offsets of the topic's partitions, asked now (blocking; run off the event
        # loop): None waits for the reader's own fetch answers alone
        self.ends = ends
        self.max_wait = max_wait
        self.rules = rules  # rule ids switched off are checked against it
        self.by_tenant: dict[str, SyncSettings] = {}
        self.current_as_of_ms = 0  # every record written before this moment has been read
        self._consumer: AIOKafkaConsumer | None = None
        self._next_offset: dict[int, int] = {}  # partition -> offset after the last record read

    def get(self, tenant: str) -> SyncSettings:
        return self.by_tenant.get(tenant) or DEFAULT_SETTINGS

    def _apply(self, key: bytes | None, value: bytes | None, where: str) -> None:
        tenant = (key or b"").decode("utf-8", "replace")
        if not tenant:
            log.error("ignored tenant settings without a key at %s", where)
            return
        if value is None:
            self.by_tenant.pop(tenant, None)
            return
        try:
            self.by_tenant[tenant] = parse_tenant_settings(tenant, value, self.rules)
            log.info("tenant %s settings: %s", tenant, self.by_tenant[tenant].document())
        except ValueError as exc:
            # Not the previous settings, not a guess: the defaults, as for a tenant without settings.
            self.by_tenant.pop(tenant, None)
            log.error("invalid tenant settings for %r at %s (%s): the tenant uses the defaults", tenant, where, exc)

    async def run(self) -> None:
        """Follow the topic from its beginning, forever (a faust app task)."""
        # No group: aiokafka assigns every partition of the topic to this consumer. Subscribed only
        # once the topic exists: subscribed before, it would see the topic only at its next metadata
        # refresh (``metadata_max_age_ms``, 5 minutes) and apply no setting until then.
        consumer = AIOKafkaConsumer(
            **self.kafka,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=POLL_MS,
        )
        await consumer.start()
        try:
            await self._exists(consumer)
        except BaseException:
            await consumer.stop()
            raise
        consumer.subscribe([self.topic])
        self._consumer = consumer
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    for record in records:
                        self._apply(record.key, record.value, f"{tp.topic}@{tp.partition}:{record.offset}")
                        self._next_offset[tp.partition] = record.offset + 1
                await self._read_to_positions(consumer)
                self._advance(consumer)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _read_to_positions(self, consumer: AIOKafkaConsumer) -> None:
        """The fetch position also moves past offsets compaction removed: read to there."""
        for tp in consumer.assignment():
            position = await consumer.position(tp)
            if position > self._next_offset.get(tp.partition, 0):
                self._next_offset[tp.partition] = position

    async def _exists(self, consumer: AIOKafkaConsumer) -> None:
        """Return once the broker lists the topic (a fresh metadata request every ``TOPIC_CHECK_S``;
        the worker's start-up says which topics are missing, ``common.topic_wait``)."""
        while True:
            try:
                if self.topic in await consumer.topics():
                    return
            except KafkaError as exc:
                log.debug("the broker did not list its topics: %s", exc)
            await asyncio.sleep(TOPIC_CHECK_S)

    def _advance(self, consumer: AIOKafkaConsumer) -> None:
        """Move ``current_as_of_ms`` to the oldest "last fetch answered" over the partitions, when
        the reader had read each of them up to the end that answer reported."""
        partitions = consumer.assignment()
        if not partitions:
            return
        as_of = None
        for tp in partitions:
            highwater = consumer.highwater(tp)
            answered_ms = consumer.last_poll_timestamp(tp)
            if highwater is None or answered_ms is None or self._next_offset.get(tp.partition, 0) < highwater:
                return  # not read to the end of what the broker has: not current as of anything newer
            as_of = answered_ms if as_of is None else min(as_of, answered_ms)
        if as_of is not None and as_of > self.current_as_of_ms:
            self.current_as_of_ms = as_of

    async def wait_until_current(self, as_of_ms: int) -> None:
        """Return once every settings record written before ``as_of_ms`` has been read.

        At most ``max_wait`` seconds; past that the decision goes ahead with what is known, with a
        warning (the reader cannot reach the broker, or lags).
        """
        if as_of_ms <= self.current_as_of_ms:
            return
        deadline = time.monotonic() + self.max_wait
        asked = False
        while True:
            if self._consumer is not None:
                self._advance(self._consumer)  # the fetcher's latest answers, without waiting for the loop
                if as_of_ms > self.current_as_of_ms and not asked:
                    asked = await self._ask_ends(self._consumer, as_of_ms, deadline)
            if as_of_ms <= self.current_as_of_ms:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "tenant settings from %s not confirmed current within %.1fs; deciding with what is known",
                    self.topic,
                    self.max_wait,
                )
                # one warning per stall, not one per batch: count this moment as checked
                self.current_as_of_ms = max(self.current_as_of_ms, as_of_ms)
                return
            await asyncio.sleep(WAIT_STEP_S)

    async def _ask_ends(self, consumer: AIOKafkaConsumer, as_of_ms: int, deadline: float) -> bool:
        """Ask the broker the topic's ends now and wait until the reader has read to them: then every
        record written before the moment asked has been read. Whether it was asked (not when this
        worker's clock has not reached ``as_of_ms`` yet, nor without ``ends``: the fetch answers tell)."""
        asked_ms = int(time.time() * 1000)
        partitions = sorted(tp.partition for tp in consumer.assignment())
        if self.ends is None or asked_ms < as_of_ms or not partitions:
            return False
        try:
            ends = await asyncio.get_running_loop().run_in_executor(None, self.ends, self.topic, partitions)
        except (KafkaException, TimeoutError) as exc:  # the fetch answers still tell, a poll later
            log.debug("could not ask the ends of %s: %s", self.topic, exc)
            return True
        while any(self._next_offset.get(partition, 0) < end for partition, end in ends.items()):
            if time.monotonic() > deadline:
                return True
            await self._read_to_positions(consumer)
            await asyncio.sleep(WAIT_STEP_S)
        self.current_as_of_ms = max(self.current_as_of_ms, asked_ms)
        return True
