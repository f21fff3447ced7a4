"""A synced tenant (the demo's business day, through a real worker, sandboxes, capture and connectors)
as the operator meets it on the real broker: ``backfill`` twice sends nothing the target already has
(no command rejected, nothing on ``dlq.commands``), ``history`` (``explain``) finds records by their business code
with what became of each command, ``every_dead_letter`` reads every dead-letter topic, tenant settings
are checked, written and read back."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp
import orjson
import pytest

from amis.settings import AmisSettings
from cli.main import main
from common.names import System
from demo.local import APP_ID, acct_access, crm_login, local_systems
from demo.run import business_day
from ops.backfill import publish, read_system, snapshot, system_entities
from ops.deadletters import DLQ_TOPICS, every_dead_letter
from ops.history import HistoryIndex, HistoryIndexError, history
from ops.operations import TenantError, get_tenant, read_tenants, set_tenant, tenant_settings

pytestmark = pytest.mark.broker


def amis_settings(tenant: str, crm_url: str, acct_url: str) -> AmisSettings:
    client_id, secret = crm_login(tenant)
    access_code, company = acct_access(tenant)
    return AmisSettings.model_validate(
        {
            "crm_url": crm_url,
            "acct_url": acct_url,
            "crm_credentials": {tenant: {"client_id": client_id, "client_secret": secret}},
            "acct_app_id": APP_ID,
            "acct_credentials": {tenant: {"access_code": access_code, "org_company_code": company}},
        }
    )


async def backfill(amis: AmisSettings, kafka_settings, tenant: str, system: System) -> list[str]:
    """What ``lienthong backfill --tenant T --system S`` publishes; returns the event ids."""
    now = int(time.time() * 1000)
    found = [
        snapshot(tenant, system, entity, record, ts_ms=now, where=f"{system} {entity}")
        async for entity, record in read_system(amis, tenant, system, system_entities(system))
    ]
    await asyncio.to_thread(publish, kafka_settings, found)
    return [orjson.loads(item.value)["event_id"] for item in found]


def of_tenant(tenant: str, messages: list[dict]) -> list[dict]:
    return [m for m in messages if (m["key"] or "").startswith(f"{tenant}:")]


async def test_backfill_twice_on_a_synced_tenant_sends_nothing_the_target_refuses_and_explain_finds_by_code(
    worker, module_settings, kafka, tmp_path, monkeypatch, capsys
):
    tenant = f"live-{uuid.uuid4().hex[:8]}"
    async with local_systems(kafka=module_settings.kafka, data_dir=tmp_path / "systems", tenants=[tenant]) as systems:
        async with aiohttp.ClientSession() as session:
            await business_day(systems, tenant, session)
        amis = amis_settings(tenant, systems.crm.url, systems.acct.url)
        ids: set[str] = set()
        for _ in range(2):
            for system in (System.CRM, System.ACCT):
                ids |= set(await backfill(amis, module_settings.kafka, tenant, system))

        def backfills_decided(messages: list[dict]) -> bool:
            return ids <= {m["value"]["event_id"] for m in messages if m["topic"] == "audit.sync"}

        audits = await asyncio.to_thread(kafka.read, ["audit.sync"], backfills_decided, 90)
        decided = [a["value"] for a in audits if a["value"]["event_id"] in ids]
        sent = {c["command_id"]: (c["rule"], a["entity"]) for a in decided for c in a["commands"]}
        # the order proposed and turned into a voucher is not created again (SO-1: 409 IsCreatedVoucher)
        assert not [rule for rule, _ in sent.values() if rule == "SO-1"], sent

        def answered(messages: list[dict]) -> bool:
            return set(sent) <= {m["value"]["command_id"] for m in messages if m["topic"].startswith("results.")}

        results = await asyncio.to_thread(kafka.read, ["results.crm", "results.acct"], answered, 60)
    refused = [r["value"] for r in of_tenant(tenant, results) if r["value"]["status"] in ("rejected", "failed")]
    assert refused == []
    letters = list(every_dead_letter(module_settings.kafka))
    assert [letter.where for letter in letters if letter.tenant == tenant] == []

    index = HistoryIndex(module_settings.kafka, tmp_path / "index.sqlite")

    def explain(tenant: str, entity: str, identifier: str):  # what `lienthong history` (explain) finds
        return history(index, tenant, entity, identifier).explanation

    customer = await asyncio.to_thread(explain, tenant, "customer", "KH0001")
    assert {system for system, _ in customer.records} == {"acct", "crm"}
    created = [o for c in customer.changes for o in c.outcomes if o.command["rule"] == "CUS-6"]
    crm_ids = [record_id for system, record_id in customer.records if system == "crm"]
    assert [(o.status, o.target_id) for o in created] == [("applied", crm_ids[0])]
    order = await asyncio.to_thread(explain, tenant, "sale_order", "DH0001")
    assert [o.status for c in order.changes for o in c.outcomes if o.command["rule"] in ("SO-1", "SO-4")] == ["applied"]
    by_crm_id = await asyncio.to_thread(explain, tenant, "sale_order", order.records[0][1])
    assert by_crm_id.records == order.records
    # what the demo prints, as the operator types it
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path / "history"))  # the index of `explain` (history)
    capsys.readouterr()
    for entity, code in (("customer", "KH0001"), ("sale_order", "DH0001")):
        assert await asyncio.to_thread(main, ["explain", tenant, entity, code]) == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"{entity} {code} of {tenant}: ") and "applied" in shown, shown
    with pytest.raises(HistoryIndexError, match="no entity 'custmer'"):
        explain(tenant, "custmer", "KH0001")
    with pytest.raises(HistoryIndexError, match="no message of tenant 'nobody-here'"):
        explain("nobody-here", "customer", "KH0001")
    index.close()


def test_every_dead_letter_reads_both_topics(module_settings, kafka, tenant):
    kafka.produce("dlq.cdc", b"{}", key=f"{tenant}:x", headers={"error.kind": b"decode"})
    kafka.produce("dlq.commands", b"{}", key=f"{tenant}:customer:KH1", headers={"error.kind": b"http_401"})
    mine = [letter for letter in every_dead_letter(module_settings.kafka) if letter.tenant == tenant]
    assert sorted((letter.topic, letter.kind) for letter in mine) == [
        ("dlq.cdc", "decode"),
        ("dlq.commands", "http_401"),
    ]
    assert set(DLQ_TOPICS) == {"dlq.cdc", "dlq.commands"}


def test_tenant_settings_are_checked_written_and_read_back(module_settings, tenant):
    with pytest.raises(TenantError, match="is not a tenant id"):
        tenant_settings("cty:abc", "contract")
    with pytest.raises(TenantError, match="order target 'contracts'"):
        tenant_settings(tenant, "contracts")
    with pytest.raises(TenantError, match="has no settings"):
        get_tenant(module_settings.kafka, tenant)
    written = set_tenant(module_settings.kafka, tenant, "contract")
    assert written == {"schema_version": 1, "tenant": tenant, "order_target": "contract"}
    assert get_tenant(module_settings.kafka, tenant).value == written
    set_tenant(module_settings.kafka, tenant, "sale_order")
    assert read_tenants(module_settings.kafka)[tenant].as_json() == {
        "schema_version": 1,
        "tenant": tenant,
        "order_target": "sale_order",
        "valid": True,
    }
