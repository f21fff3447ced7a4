"""Agent tier: acct documents are re-keyed by order, and the aggregates agent derives CRM statuses."""

from __future__ import annotations

import orjson

from tests.agents.conftest import Feed, change, produced, sent


def voucher(voucher_id="V1", order_id="AO1", quantity=2, **more):
    return {
        "id": voucher_id,
        "code": voucher_id,
        "order_id": order_id,
        "lines": [{"line_id": "L1", "product_code": "SP1", "quantity": quantity, "amount": str(100 * quantity)}],
        **more,
    }


ORDER = {
    "id": "AO1",
    "code": "DH1",
    "crm_id": "O1",
    "revenue_status": "recorded",
    "status": "in_progress",
    "total_amount": "500",
    "lines": [{"line_id": "L1", "product_code": "SP1", "quantity": 5, "amount": "500"}],
}


async def test_the_cdc_agent_rekeys_acct_documents_by_their_order(built):
    moved = change(
        entity="sales_voucher", event_id="e-2", op="u", before=voucher(order_id="AO1"), after=voucher(order_id="AO2")
    )
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put(
            "cdc.acct.sales_voucher", change(entity="sales_voucher", event_id="e-1", after=voucher()), key=b"t1:V1"
        )
        await agent.put("cdc.acct.sales_voucher", moved, key=b"t1:V1")
        await agent.put("cdc.acct.sale_order", change(entity="sale_order", event_id="e-3", after=ORDER), key=b"t1:AO1")
    forwarded = [
        (m.key, orjson.loads(m.value)["event_id"], m.headers["lienthong.part"])
        for m in produced(built, "aggregate_inputs")
    ]
    assert forwarded == [
        (b"t1:AO1", "e-1", b"document"),
        (b"t1:AO1", "e-2", b"removal"),  # the voucher leaves its old order ...
        (b"t1:AO2", "e-2", b"document"),  # ... and counts for the new one
        (b"t1:AO1", "e-3", b"document"),
    ]
    first = produced(built, "aggregate_inputs")[1]
    assert first.value == moved, "the original bytes travel, not a re-encoding"
    assert (first.headers["origin.topic"], first.headers["origin.key"]) == (b"cdc.acct.sales_voucher", b"t1:V1")
    # decided by the aggregates agent, not here: no audit yet
    assert not produced(built, "audit.sync")


def forwarded(entity: str, event_id: str, after: dict, *, offset: int = 0) -> dict:
    """A document as the CDC agent re-keys it: the original bytes, with where they came from."""
    return {
        "value": change(entity=entity, event_id=event_id, after=after),
        "key": b"t1:AO1",
        "headers": {
            "origin.topic": f"cdc.acct.{entity}".encode(),
            "origin.partition": b"0",
            "origin.offset": str(offset).encode(),
            "origin.key": f"t1:{after['id']}".encode(),
            "lienthong.part": b"document",
        },
    }


async def test_the_aggregates_agent_derives_statuses_once_the_order_is_known(built):
    receipt = {"id": "R1", "order_id": "AO1", "amount": "500"}
    async with built.agents["aggregates"].test_context() as wrapper:
        agent = Feed(built, wrapper, "aggregates")
        for document in (
            forwarded("sales_voucher", "e-1", voucher()),
            forwarded("sale_order", "e-2", ORDER),
            forwarded("receipt", "e-3", receipt),
            forwarded("receipt", "e-3", receipt),  # a duplicate
        ):
            await agent.put(document["value"], key=document["key"], headers=document["headers"])
    commands = [c for _, c in sent(built, "commands.crm")]
    assert [c["rule"] for c in commands] == ["SO-9", "SO-11", "SO-13", "SO-10", "SO-14"]
    assert all(c["key"] == {"id": "O1", "code": "DH1"} and c["entity"] == "sale_order" for c in commands)
    assert commands[0]["fields"] == {"delivered_quantities": [{"line_id": "L1", "delivered_quantity": "2"}]}
    assert commands[3]["fields"] == {"receipted_amount": "500", "remaining_receivable": "0"}
    assert commands[4]["fields"] == {"pay_status": "paid"}
    audits = [a for _, a in sent(built, "audit.sync")]
    assert [a["event_id"] for a in audits] == ["e-1", "e-2", "e-3"]
    assert "held" in audits[0]["reason"]
    stored = built.tables.orders["t1:AO1"]
    assert stored["receipts"] == {"R1": "500"} and set(stored["vouchers"]) == {"V1"}


async def test_a_document_that_cannot_be_counted_is_dead_lettered_with_its_origin(built):
    """Dead-lettered by the aggregates agent: with the original key and bytes, not the order's key."""
    bad = forwarded("receipt", "e-9", {"id": "R9", "order_id": "AO1", "amount": 12.5}, offset=41)
    bad["headers"]["origin.partition"] = b"3"
    async with built.agents["aggregates"].test_context() as wrapper:
        agent = Feed(built, wrapper, "aggregates")
        await agent.put(bad["value"], key=bad["key"], headers=bad["headers"])
    (letter,) = produced(built, "dlq.cdc")
    assert (letter.key, letter.value) == (b"t1:R9", bad["value"])
    headers = letter.headers
    assert headers["error.kind"] == b"schema" and b"float" in headers["error.message"]
    assert (headers["origin.topic"], headers["origin.partition"], headers["origin.offset"]) == (
        b"cdc.acct.receipt",
        b"3",
        b"41",
    )


async def test_documents_that_cannot_be_counted_are_dead_lettered_whole_before_rekeying(built):
    no_order = change(entity="sales_voucher", event_id="e-1", after={"id": "V9", "lines": []})
    float_amount = change(entity="receipt", event_id="e-2", after={"id": "R9", "order_id": "AO1", "amount": 12.5})
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.acct.sales_voucher", no_order, key=b"t1:V9")
        await agent.put("cdc.acct.receipt", float_amount, key=b"t1:R9")
        await agent.put("cdc.acct.receipt", None, key=b"t1:R9")  # a Debezium tombstone: not a change
    letters = produced(built, "dlq.cdc")
    assert [(c.key, c.value, c.headers["error.kind"]) for c in letters] == [
        (b"t1:V9", no_order, b"schema"),
        (b"t1:R9", float_amount, b"schema"),
    ]
    assert b"order_id" in letters[0].headers["error.message"]
    assert not produced(built, "aggregate_inputs")
    assert not produced(built, "audit.sync")
