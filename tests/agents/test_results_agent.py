"""Agent tier: connector results complete links (X-3) and un-remember refused writes (X-2)."""

from __future__ import annotations

import orjson

from tests.agents.conftest import Feed, change, produced, sent


def result(**overrides) -> bytes:
    value = {
        "command_id": "c" * 64,
        "tenant": "t1",
        "target": "acct",
        "entity": "customer",
        "status": "applied",
        "target_id": "A77",
        "code": "KH0077",
        "error": None,
        "attempts": 1,
        "ts_ms": 1,
    }
    value.update(overrides)
    return orjson.dumps(value)


async def test_an_applied_result_links_the_crm_record_to_the_new_acct_id(built):
    """X-3: once the connector reports the acct id, a CRM update of that customer is CUS-3."""
    crm = {"id": "C77", "code": "KH0077", "name": "Khách mới"}
    async with built.agents["cdc"].test_context() as cdc, built.agents["results"].test_context() as results_wrapper:
        results = Feed(built, results_wrapper, "results")
        agent = Feed(built, cdc, "cdc")
        await agent.put("cdc.crm.customer", change(system="crm", event_id="e-1", after=crm), key=b"t1:C77")
        await results.put(result(), key=b"t1:customer:KH0077")
        updated = change(system="crm", event_id="e-2", op="u", before=crm, after=dict(crm, name="Khách mới 2"))
        await agent.put("cdc.crm.customer", updated, key=b"t1:C77")
    ((_, command),) = sent(built, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A77", "code": "KH0077"}


async def test_a_rejected_write_is_forgotten_so_the_same_change_is_sent_again(built):
    """X-2 compares with what was written; a command the target refused wrote nothing."""
    async with built.agents["cdc"].test_context() as cdc, built.agents["results"].test_context() as results_wrapper:
        results = Feed(built, results_wrapper, "results")
        agent = Feed(built, cdc, "cdc")
        await agent.put("cdc.acct.customer", change(event_id="e-1"), key=b"t1:A1")
        ((_, first),) = sent(built, "commands.crm")
        await results.put(
            result(
                command_id=first["command_id"],
                target="crm",
                status="rejected",
                target_id=None,
                code="KH0001",
                error={"kind": "validation", "message": "tax_code invalid"},
            ),
            key=b"t1:customer:KH0001",
        )
        same = change(
            event_id="e-2",
            op="u",
            before={"id": "A1", "code": "KH0001", "name": "old"},
            after={"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
        )
        await agent.put("cdc.acct.customer", same, key=b"t1:A1")
    assert [c["rule"] for _, c in sent(built, "commands.crm")] == ["CUS-6", "CUS-8"]


async def test_an_unreadable_result_is_dead_lettered(built):
    async with built.agents["results"].test_context() as results_wrapper:
        results = Feed(built, results_wrapper, "results")
        await results.put(b"[]", key=b"t1:x")
        await results.put(result(status="maybe"), key=b"t1:y")
    kinds = [call.headers["error.kind"] for call in produced(built, "dlq.cdc")]
    assert kinds == [b"schema", b"schema"]


async def test_a_rejected_write_keyed_by_id_is_forgotten_too(built):
    """INV-4 commands name the CRM request by id only (acct crm_id): their refusal is forgotten as well."""
    approved = change(
        entity="invoice",
        event_id="e-1",
        op="u",
        before={"id": "AI1", "crm_id": "HD1", "status": "proposed"},
        after={"id": "AI1", "crm_id": "HD1", "status": "approved"},
    )
    async with built.agents["cdc"].test_context() as cdc, built.agents["results"].test_context() as results_wrapper:
        results = Feed(built, results_wrapper, "results")
        agent = Feed(built, cdc, "cdc")
        await agent.put("cdc.acct.invoice", approved, key=b"t1:AI1")
        ((_, first),) = sent(built, "commands.crm")
        assert first["rule"] == "INV-4" and first["key"] == {"id": "HD1", "code": None}
        await results.put(
            result(
                command_id=first["command_id"],
                target="crm",
                entity="invoice",
                status="rejected",
                target_id="HD1",
                code=None,
                error={"kind": "http_409", "message": "locked"},
            ),
            key=b"t1:invoice:HD1",
        )
        again = change(
            entity="invoice",
            event_id="e-2",
            op="u",
            before={"id": "AI1", "crm_id": "HD1", "status": "proposed"},
            after={"id": "AI1", "crm_id": "HD1", "status": "approved"},
        )
        await agent.put("cdc.acct.invoice", again, key=b"t1:AI1")
    assert [c["rule"] for _, c in sent(built, "commands.crm")] == ["INV-4", "INV-4"]
