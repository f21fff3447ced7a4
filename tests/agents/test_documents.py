"""Agent tier: accounting documents update their order's aggregate, and CRM gets the statuses derived."""

from __future__ import annotations

import orjson

from streams.tables.store import decode_key
from tests.agents.conftest import NOW_MS, change, put, sent


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


def stored_orders(world) -> dict[str, dict]:
    """The ``orders`` table as the state changelog holds it (the last value of each key)."""
    orders: dict[str, dict] = {}
    for record in world.records("agent-test-state-changelog"):
        table, key = decode_key(record.key)
        if table == "orders":
            orders[key] = orjson.loads(record.value)
    return orders


def test_statuses_are_derived_once_the_order_is_known_whatever_arrived_first(world, worker):
    receipt = {"id": "R1", "order_id": "AO1", "amount": "500"}
    put(world, "cdc.acct.sales_voucher", b"t1:V1", change(entity="sales_voucher", event_id="e-1", after=voucher()),
        at_ms=NOW_MS - 3000)  # fmt: skip
    worker.run()
    put(world, "cdc.acct.sale_order", b"t1:AO1", change(entity="sale_order", event_id="e-2", after=ORDER),
        at_ms=NOW_MS - 2000)  # fmt: skip
    worker.run()
    put(world, "cdc.acct.receipt", b"t1:R1", change(entity="receipt", event_id="e-3", after=receipt))
    put(world, "cdc.acct.receipt", b"t1:R1", change(entity="receipt", event_id="e-3", after=receipt))  # a duplicate
    worker.run()
    commands = [c for _, c in sent(world, "commands.crm")]
    assert [c["rule"] for c in commands] == ["SO-9", "SO-11", "SO-13", "SO-10", "SO-14"]
    assert all(c["key"] == {"id": "O1", "code": "DH1"} and c["entity"] == "sale_order" for c in commands)
    assert commands[0]["fields"] == {"delivered_quantities": [{"line_id": "L1", "delivered_quantity": "2"}]}
    assert commands[3]["fields"] == {"receipted_amount": "500", "remaining_receivable": "0"}
    assert commands[4]["fields"] == {"pay_status": "paid"}
    audits = [a for _, a in sent(world, "audit.sync")]
    assert [a["event_id"] for a in audits] == ["e-1", "e-2", "e-3"]
    assert "held" in audits[0]["reason"]
    stored = stored_orders(world)["t1:AO1"]
    assert stored["receipts"] == {"R1": "500"} and set(stored["vouchers"]) == {"V1"}


def test_a_voucher_moved_to_another_order_leaves_the_first(world, worker):
    put(world, "cdc.acct.sales_voucher", b"t1:V1", change(entity="sales_voucher", event_id="e-1", after=voucher()))
    worker.run()
    moved = change(
        entity="sales_voucher", event_id="e-2", op="u", before=voucher(order_id="AO1"), after=voucher(order_id="AO2")
    )
    put(world, "cdc.acct.sales_voucher", b"t1:V1", moved)
    worker.run()
    orders = stored_orders(world)
    assert orders["t1:AO1"]["vouchers"] == {} and set(orders["t1:AO2"]["vouchers"]) == {"V1"}
    audits = [a["event_id"] for _, a in sent(world, "audit.sync")]
    assert audits == ["e-1", "e-2:moved-from:AO1", "e-2"], "one audit record per order the change counted for"


def test_documents_that_cannot_be_counted_are_dead_lettered_with_their_origin(world, worker):
    no_order = change(entity="sales_voucher", event_id="e-1", after={"id": "V9", "lines": []})
    float_amount = change(entity="receipt", event_id="e-2", after={"id": "R9", "order_id": "AO1", "amount": 12.5})
    first = put(world, "cdc.acct.sales_voucher", b"t1:V9", no_order)
    put(world, "cdc.acct.receipt", b"t1:R9", float_amount)
    worker.run()
    letters = sorted(world.records("dlq.cdc"), key=lambda letter: letter.key)
    assert [(letter.key, letter.value, dict(letter.headers)["error.kind"]) for letter in letters] == [
        (b"t1:R9", float_amount, b"schema"),
        (b"t1:V9", no_order, b"schema"),
    ]
    headers = dict(letters[1].headers)
    assert b"order_id" in headers["error.message"]
    assert (headers["origin.topic"], headers["origin.offset"]) == (
        b"cdc.acct.sales_voucher",
        str(first.offset).encode(),
    )
    assert b"float" in dict(letters[0].headers)["error.message"]
    assert not sent(world, "audit.sync")
