"""The whole loop on the real broker: sandboxes -> CDC -> worker -> commands -> connectors -> sandboxes.

A customer created in accounting appears in CRM and is linked (a CRM edit then reaches the acct
record); a CRM order proposed for revenue appears in accounting after its customer and product; a
delivery and a receipt entered in accounting come back as CRM statuses. Then the same with 20% 5xx
and 10% 429 injected on both sides: every record written exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import aiohttp
import orjson
import pytest

from connectors.local import User, local_systems
from connectors.sandbox.faults import FaultConfig

pytestmark = pytest.mark.broker


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def creations(store, tenant: str) -> dict[tuple[str, str], int]:
    """How many times each (entity, code) was created in a sandbox, from its own change events."""
    counts: dict[tuple[str, str], int] = {}
    for row in store._db.execute("SELECT value FROM outbox ORDER BY seq"):
        event = orjson.loads(row[0])
        if event["tenant"] == tenant and event["op"] == "c":
            key = (event["entity"], str(event["after"].get("code")))
            counts[key] = counts.get(key, 0) + 1
    return counts


async def business_day(systems, tenant: str, session: aiohttp.ClientSession) -> None:
    crm, acct = User(systems, "crm", tenant, session), User(systems, "acct", tenant, session)

    # 1. CUS-6: an accountant creates a customer; it appears in CRM and the two are linked
    await acct.save("customer", {"code": "KH0001", "name": "Công ty ABC", "tax_code": "0101234567"})
    crm_customer = await eventually(lambda: systems.crm.store.by_code(tenant, "customer", "KH0001"),
                                    what="KH0001 in CRM")
    assert crm_customer["name"] == "Công ty ABC"
    # ... linked: a CRM edit of it (CUS-3, only for linked customers) reaches the acct record
    await crm.save("customer", {"id": crm_customer["id"], "phone": "0901000001"})
    await eventually(lambda: (systems.acct.store.by_code(tenant, "customer", "KH0001") or {}).get("phone")
                     == "0901000001", what="CUS-3 in acct")

    # 2. a CRM-only customer and product; an order proposed for revenue (SO-4 with X-4 dependencies)
    await crm.save("customer", {"code": "KH0002", "name": "Cửa hàng B"})
    await crm.save("product", {"code": "SP01", "name": "Bút bi", "unit": "cái", "unit_price": "5000"})
    order = {"code": "DH0001", "customer_code": "KH0002", "revenue_status": "draft", "status": "not_started",
             "total_amount": "50000",
             "lines": [{"line_id": "L1", "product_code": "SP01", "quantity": 10, "unit_price": "5000",
                        "amount": "50000"}]}
    saved = await crm.save("sale_order", order)
    await crm.save("sale_order", {"id": saved["id"], "revenue_status": "proposed"})
    acct_order = await eventually(lambda: systems.acct.store.by_code(tenant, "sale_order", "DH0001"),
                                  what="DH0001 in acct")
    assert acct_order["crm_id"] == saved["id"] and acct_order["customer_code"] == "KH0002"
    assert systems.acct.store.by_code(tenant, "customer", "KH0002") is not None  # sent first
    assert systems.acct.store.by_code(tenant, "product", "SP01") is not None

    # 3. a delivery and a receipt in accounting come back as CRM statuses (SO-9, SO-13, SO-10, SO-14)
    await acct.save("sales_voucher", {"code": "XK0001", "order_id": acct_order["id"],
                                      "lines": [{"line_id": "L1", "product_code": "SP01", "quantity": 4,
                                                 "amount": "20000"}]})
    await acct.save("receipt", {"code": "PT0001", "order_id": acct_order["id"], "amount": "20000"})

    def crm_order_statuses():
        record = systems.crm.store.by_code(tenant, "sale_order", "DH0001") or {}
        ready = record.get("pay_status") == "partially_paid" and record.get("delivery_status") == "delivering"
        return record if ready else None

    crm_order = await eventually(crm_order_statuses, what="derived statuses in CRM")
    assert crm_order["delivered_quantities"] == [{"line_id": "L1", "delivered_quantity": "4"}]
    assert crm_order["receipted_amount"] == "20000" and crm_order["remaining_receivable"] == "30000"
    assert crm_order["lines"][0]["product_code"] == "SP01"  # the order's own lines are untouched


@pytest.mark.parametrize("faulty", [False, True], ids=["clean", "20% 5xx + 10% 429"])
async def test_a_business_day_across_both_systems(kafka, module_settings, worker, tmp_path, tenant, faulty):
    faults = {system: FaultConfig(error_rate=0.2, throttle_rate=0.1, retry_after_s=0.05, seed=n)
              for n, system in enumerate(("crm", "acct"))} if faulty else None
    async with local_systems(bootstrap_servers=module_settings.bootstrap_servers,
                             topic_prefix=module_settings.topic_prefix, data_dir=tmp_path / "systems",
                             tenants=[tenant], faults=faults,
                             connector_overrides={"backoff_base": 0.02, "backoff_cap": 0.3}) as systems:
        async with aiohttp.ClientSession() as session:
            await business_day(systems, tenant, session)
        await asyncio.sleep(2)  # let late retries and echoes settle before counting
        for local in (systems.crm, systems.acct):
            counts = creations(local.store, tenant)
            assert counts and all(n == 1 for n in counts.values()), (local.system, counts)
        if faulty:
            injected = sum(systems.crm.faults.counts.values()) + sum(systems.acct.faults.counts.values())
            assert injected > 0 and systems.acct.connector.stats["retries"] + systems.crm.connector.stats["retries"] > 0
        assert systems.crm.connector.stats["rejected"] == 0 and systems.acct.connector.stats["rejected"] == 0
