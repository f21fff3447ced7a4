"""Agent tier: connector results complete links (X-3) and un-remember refused writes (X-2)."""

from __future__ import annotations

import orjson

from tests.agents.conftest import NOW_MS, change, put, sent


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


def test_an_applied_result_links_the_crm_record_to_the_new_acct_id(world, worker):
    """X-3: once the connector reports the acct id, a CRM update of that customer is CUS-3."""
    crm = {"id": "C77", "code": "KH0077", "name": "Khách mới"}
    put(world, "cdc.crm.customer", b"t1:C77", change(system="crm", event_id="e-1", after=crm), at_ms=NOW_MS - 3000)
    put(world, "results.acct", b"t1:customer:KH0077", result(), at_ms=NOW_MS - 2000)
    worker.run()
    updated = change(system="crm", event_id="e-2", op="u", before=crm, after=dict(crm, name="Khách mới 2"))
    put(world, "cdc.crm.customer", b"t1:C77", updated, at_ms=NOW_MS - 1000)
    worker.run()
    ((_, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A77", "code": "KH0077"}


def test_a_rejected_write_is_forgotten_so_the_same_change_is_sent_again(world, worker):
    """X-2 compares with what was written; a command the target refused wrote nothing."""
    put(world, "cdc.acct.customer", b"t1:A1", change(event_id="e-1"))
    worker.run()
    ((_, first),) = sent(world, "commands.crm")
    refused = result(
        command_id=first["command_id"],
        target="crm",
        status="rejected",
        target_id=None,
        code="KH0001",
        error={"kind": "validation", "message": "tax_code invalid"},
    )
    put(world, "results.crm", b"t1:customer:KH0001", refused)
    worker.run()
    same = change(
        event_id="e-2",
        op="u",
        before={"id": "A1", "code": "KH0001", "name": "old"},
        after={"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
    )
    put(world, "cdc.acct.customer", b"t1:A1", same)
    worker.run()
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6", "CUS-8"]


def test_an_unreadable_result_or_one_of_another_tenant_is_dead_lettered(world, worker):
    put(world, "results.acct", b"t1:x", b"[]")
    put(world, "results.acct", b"t1:y", result(status="maybe"))
    put(world, "results.acct", b"t1:customer:KH0077", result(tenant="t2"))  # under t1's key: refused
    worker.run()
    letters = world.records("dlq.cdc")
    assert sorted(dict(letter.headers)["error.kind"] for letter in letters) == [b"schema", b"schema", b"schema"]
    assert any(b"tenant 't2'" in dict(letter.headers)["error.message"] for letter in letters)


def test_a_rejected_write_keyed_by_id_is_forgotten_too(world, worker):
    """INV-4 commands name the CRM request by id only (acct crm_id): their refusal is forgotten as well."""
    approved = change(
        entity="invoice",
        event_id="e-1",
        op="u",
        before={"id": "AI1", "crm_id": "HD1", "status": "proposed"},
        after={"id": "AI1", "crm_id": "HD1", "status": "approved"},
    )
    put(world, "cdc.acct.invoice", b"t1:AI1", approved)
    worker.run()
    ((_, first),) = sent(world, "commands.crm")
    assert first["rule"] == "INV-4" and first["key"] == {"id": "HD1", "code": None}
    refused = result(
        command_id=first["command_id"],
        target="crm",
        entity="invoice",
        status="rejected",
        target_id="HD1",
        code=None,
        error={"kind": "http_409", "message": "locked"},
    )
    put(world, "results.crm", b"t1:invoice:HD1", refused)
    worker.run()
    again = change(
        entity="invoice",
        event_id="e-2",
        op="u",
        before={"id": "AI1", "crm_id": "HD1", "status": "proposed"},
        after={"id": "AI1", "crm_id": "HD1", "status": "approved"},
    )
    put(world, "cdc.acct.invoice", b"t1:AI1", again)
    worker.run()
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["INV-4", "INV-4"]
