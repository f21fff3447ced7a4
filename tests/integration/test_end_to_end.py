"""The whole loop on the real broker, as production runs it: sandboxes (speaking the public AMIS
APIs) -> capture services -> cdc.* -> worker -> commands -> connectors -> sandboxes.

A customer created in accounting appears in CRM and is linked (a CRM edit then reaches the acct
record); a CRM order proposed for revenue becomes an accounting proposal after its customer and
product; the accountant generates it, and a delivery and a receipt entered in accounting come back
as CRM statuses. Then the same with 20% 5xx and 10% 429 injected on both APIs and a third of ACT's
callbacks lost (pulled back from get_call_back_detail_error): every record written exactly once.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from common.names import System
from common.settings import KafkaSettings
from demo.local import local_systems
from demo.run import business_day
from ops.lag import read_lag
from sandboxes.faults import FaultConfig

pytestmark = pytest.mark.broker


async def settled(kafka: KafkaSettings, groups: list[str], timeout: float = 120.0) -> None:
    """Nothing of the day left in flight: the worker's group has no lag (every change and result decided)
    and neither have the connectors' (a connector commits a command's offset only once its result is on
    the broker: no retry can still write). Then the records counted are all the day wrote."""
    deadline = time.monotonic() + timeout
    while True:
        lag = await asyncio.to_thread(read_lag, kafka, groups)
        if lag and all(row.lag == 0 for row in lag):
            return
        assert time.monotonic() < deadline, f"still in flight after {timeout}s: {[row for row in lag if row.lag]}"
        await asyncio.sleep(0.2)  # paces the polling; the condition decides


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "20% 5xx + 10% 429"])
async def test_a_business_day_across_both_systems(kafka, module_settings, worker, tmp_path, tenant, faulty):
    faults = (
        {
            System.CRM: FaultConfig(error_rate=0.2, throttle_rate=0.1, retry_after_s=0.05, seed=0),
            System.ACCT: FaultConfig(
                error_rate=0.2, throttle_rate=0.1, retry_after_s=0.05, callback_drop_rate=0.3, seed=1
            ),
        }
        if faulty
        else None
    )
    async with local_systems(
        kafka=module_settings.kafka,
        data_dir=tmp_path / "systems",
        tenants=[tenant],
        faults=faults,
        connector_overrides={"backoff_base": 0.02, "backoff_cap": 0.3},
        callback_timeout=2.0,
    ) as systems:
        async with aiohttp.ClientSession() as session:
            await business_day(systems, tenant, session)
        connectors = [systems.crm.connector.group_id, systems.acct.connector.group_id]
        await settled(module_settings.kafka, [module_settings.app_id, *connectors])
        for system in System:
            counts = systems.creations(system, tenant)
            assert counts and all(n == 1 for n in counts.values()), (system, counts)
        if faulty:
            injected = sum(systems.crm.faults.counts.values()) + sum(systems.acct.faults.counts.values())
            # the faults land on whichever calls the seeded draw picks (the users', capture's or the
            # connectors'); the day synced through them, each record created once (above)
            assert injected > 0
        assert systems.crm.connector.stats["rejected"] == 0 and systems.acct.connector.stats["rejected"] == 0
        # the sync-health page says the same
        from aiohttp.test_utils import TestClient, TestServer

        from demo.dashboard import create_demo_dashboard

        client = TestClient(TestServer(create_demo_dashboard(module_settings.kafka, systems, worker_metrics=None)))
        await client.start_server()
        try:
            health = await (await client.get("/health.json")).json()
            page = await (await client.get("/")).text()
        finally:
            await client.close()
        assert health["connectors"]["acct"]["applied"] >= 4 and health["connectors"]["crm"]["applied"] >= 4
        assert set(health["lag"]) >= {module_settings.app_id} and health["messages"]["commands.acct"] >= 4
        assert "sync health" in page
