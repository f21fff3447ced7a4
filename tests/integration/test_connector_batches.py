"""The accounting connector writes commands it takes together in one call, as the ACT Open API allows
(``save_dictionary``: up to 200 records, §2.5), each command still with its own result. Topics of its
own (a module of its own), so that only these commands are on them."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from streams.core.contract import dumps
from tests.integration.test_connector import accounting, command, created, results_for, run_connector

pytestmark = pytest.mark.broker


@pytest.mark.parametrize(("products", "calls"), [(105, 1), (250, 2)])
async def test_dictionary_commands_taken_together_go_200_a_call_each_with_its_own_result(
    kafka, module_settings, tmp_path, tenant, products, calls
):
    """The connector takes a full call's worth at once and writes them in one save_dictionary (up to 200
    a call, §2.5); every command still has its own result, applied with the record's id."""
    commands = [command(tenant, "product", f"SP{n:03d}", {"name": f"Hàng {n}"}) for n in range(products)]
    for c in commands:
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    path = "/apir/sync/actopen/save_dictionary"
    before = REGISTRY.get_sample_value(
        "lienthong_api_calls_total", {"system": "acct", "endpoint": path, "status": "200"}
    )
    async with accounting(module_settings, tmp_path, tenant) as (store, _server, settings):
        # Every command is on the broker before the connector starts, but on a loaded machine its
        # fetches of the topic's partitions came more than the default 0.25 s apart (CI: 2 calls for
        # 105): a linger that covers them makes the count of calls the batching's, not the machine's.
        settings["batch_linger"] = 2.0
        await run_connector(settings, until=lambda: len(created(store, tenant)) >= products)
        assert sorted(created(store, tenant)) == [c.key.code for c in commands]  # each once
    after = REGISTRY.get_sample_value(
        "lienthong_api_calls_total", {"system": "acct", "endpoint": path, "status": "200"}
    )
    assert (after or 0) - (before or 0) == calls  # the connector's own count of its calls (its /metrics)
    results = results_for(kafka, tenant, products)
    assert len(results) == products and {r["status"] for r in results} == {"applied"}
    assert len({r["target_id"] for r in results}) == products
