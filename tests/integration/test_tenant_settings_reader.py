"""The worker's reader of ``config.tenants``, on the real broker: a setting written a moment before
a batch is decided is in force for it, though the reader's own fetches answer "nothing new" only
every ``POLL_MS``; and the reader stays current when the broker cannot be asked its ends."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from common.kafka_config import aiokafka_config, confluent_config
from common.names import TENANT_CONFIG
from streams.core.sync_settings import DEFAULT_SETTINGS
from streams.settings import WorkerSettings
from streams.tables.tenants import TenantSettings, TopicEnds

pytestmark = pytest.mark.broker


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _started(reader: TenantSettings) -> asyncio.Task[None]:
    running = asyncio.create_task(reader.run())
    await reader.wait_until_current(_now_ms())
    return running


async def _each_setting_is_read_before_the_next_batch(settings: WorkerSettings, reader: TenantSettings) -> None:
    producer = Producer(confluent_config(settings.kafka))
    topic = settings.kafka.topic_prefix + TENANT_CONFIG
    running = await _started(reader)
    try:
        for n in range(20):
            tenant = f"reader-{n}"
            target = "contract" if n % 2 else "sale_order"
            producer.produce(topic, orjson.dumps({"order_target": target}), tenant.encode())
            producer.flush(10)
            # the newest change of the next batch reached the broker just after the setting
            await reader.wait_until_current(_now_ms())
            assert reader.get(tenant) is not DEFAULT_SETTINGS, f"setting {n} was not read before the batch"
            assert reader.get(tenant).order_target == target
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_setting_written_just_before_a_batch_is_in_force_for_it(module_settings):
    reader = TenantSettings(
        aiokafka_config(module_settings.kafka),
        module_settings.kafka.topic_prefix + TENANT_CONFIG,
        ends=TopicEnds(AdminClient(confluent_config(module_settings.kafka))),
    )
    await _each_setting_is_read_before_the_next_batch(module_settings, reader)


async def test_without_the_brokers_ends_the_readers_own_fetches_still_tell(module_settings):
    def unanswered(topic: str, partitions: list[int]) -> dict[int, int]:
        raise TimeoutError(f"no answer for {topic}")

    reader = TenantSettings(
        aiokafka_config(module_settings.kafka), module_settings.kafka.topic_prefix + TENANT_CONFIG, ends=unanswered
    )
    await _each_setting_is_read_before_the_next_batch(module_settings, reader)
