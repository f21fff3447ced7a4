"""Validation at each documented limit (docs/contract.md, "What is checked"): the last value accepted
and the first refused, on both sides, so that no limit can move without a test saying so.

Ids and codes: 1 to 256 printable characters, or an integer. Money: at most 20 digits before the
point and 10 after, or an integer below 10^20. Tenants: 1 to 64 characters. Accounting receipts and
vouchers: ``order_id`` an id like any other; revenue entries' amounts money like any other.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.contract import ChangeEvent, decode_change_event
from streams.core.errors import BadInput
from streams.core.validation import check_record
from tests.fakes import TS_MS


def event(entity: str = "receipt", system: str = "acct", **after: Any) -> dict[str, Any]:
    record = {"id": "R1", "order_id": "AO1", "amount": "500"} if entity == "receipt" else {"id": "R1"}
    return {"schema_version": 1, "event_id": "e-1", "tenant": "cty-abc", "system": system, "entity": entity,
            "op": "c", "ts_ms": TS_MS, "before": None, "after": record | after}  # fmt: skip


def decode(document: dict[str, Any]) -> ChangeEvent:
    record_id = (document.get("after") or {}).get("id")
    return decode_change_event(
        orjson.dumps(document),
        topic_system=document["system"],
        topic_entity=document["entity"],
        topic=f"cdc.{document['system']}.{document['entity']}",
        partition=0,
        offset=0,
        key=f"{document['tenant']}:{record_id}".encode(),
    )


def refused(document: dict[str, Any]) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode(document)
    assert caught.value.kind == "schema", caught.value.message
    return caught.value


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "9" * 20,
        "-" + "9" * 20,
        "0." + "9" * 10,
        "9" * 20 + "." + "9" * 10,
        "-" + "9" * 20 + "." + "9" * 10,
        "0",
        "-0.1",
    ],
)
def test_twenty_digits_before_the_point_and_ten_after_are_money(amount) -> None:
    assert decode(event(amount=amount)).record["amount"] == amount


@pytest.mark.parametrize(
    "amount",
    ["9" * 21, "-" + "9" * 21, "1" + "0" * 20, "0." + "9" * 11, "1." + "0" * 11, "9" * 21 + ".5", "1.5" + "0" * 10,
     ".5", "5.", "-", "", "1e5", "+1"],
)  # fmt: skip
def test_twenty_one_digits_before_the_point_or_eleven_after_are_refused(amount) -> None:
    bad = refused(event(amount=amount))
    assert "after.amount" in bad.message and "decimal string" in bad.message


def check(**record: Any) -> None:
    """The check itself, for values JSON cannot carry to it (orjson reads integers past 64 bits as floats)."""
    check_record({"id": "R1", **record}, "after", "here")


@pytest.mark.parametrize("amount", [10**20 - 1, -(10**20 - 1), 0, 2**63 - 1])
def test_an_integer_below_ten_to_the_twenty_is_money(amount) -> None:
    check(amount=amount)
    check(lines=[{"quantity": amount, "amount": amount}])


@pytest.mark.parametrize("amount", [10**20, -(10**20), 10**20 + 1, 10**30])
def test_an_integer_of_ten_to_the_twenty_or_more_is_refused(amount) -> None:
    with pytest.raises(BadInput, match=r"after\.amount"):
        check(amount=amount)
    with pytest.raises(BadInput, match=r"after\.lines\[0\]\.quantity"):
        check(lines=[{"quantity": amount}])


def test_a_quantity_may_be_a_finite_json_number_below_ten_to_the_twenty() -> None:
    check(lines=[{"quantity": 2.5}, {"quantity": 9.999e19}, {"quantity": -9.999e19}])
    for quantity in (1e20, -1e20, float("inf"), float("nan")):
        with pytest.raises(BadInput, match=r"quantity"):
            check(lines=[{"quantity": quantity}])
    with pytest.raises(BadInput, match="never a JSON float"):
        check(lines=[{"amount": 2.5}])


@pytest.mark.parametrize("amount", [1.5, "1" * 21, "0." + "1" * 11, "NaN", [1], {"v": 1}, True])
def test_revenue_entries_amounts_are_money(amount) -> None:
    contract = {"revenue_entries": [{"id": "E1", "amount": "10", "status": "proposed"}, {"id": "E2", "amount": amount}]}
    bad = refused(event("contract", **contract))
    assert "after.revenue_entries[1].amount" in bad.message
    contract["revenue_entries"][1]["amount"] = "-" + "9" * 20 + "." + "9" * 10
    assert decode(event("contract", **contract))


# --- ids and codes -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 255, 256])
def test_an_id_of_one_to_256_characters_is_accepted(length) -> None:
    record_id = "é" * length  # characters, not bytes
    assert decode(event(id=record_id, code="C" * length)).record_id == record_id
    document = event()
    document["event_id"] = "e" * length
    assert decode(document).event_id == "e" * length


@pytest.mark.parametrize("length", [0, 257, 1000])
@pytest.mark.parametrize("field", ["id", "code", "crm_id", "order_id", "customer_code"])
def test_an_id_of_no_character_or_more_than_256_is_refused(field, length) -> None:
    bad = refused(event(**{field: "x" * length}))
    if field == "id" and length == 0:
        assert "the record has no 'id'" in bad.message
    else:
        assert f"after.{field} = " in bad.message and "1 to 256 printable characters" in bad.message


@pytest.mark.parametrize("length", [0, 257])
def test_the_ids_of_lines_and_revenue_entries_are_checked_too(length) -> None:
    bad = refused(event("sales_voucher", order_id="AO1", lines=[{"line_id": "L1"}, {"line_id": "L" * length}]))
    assert "after.lines[1].line_id = " in bad.message
    bad = refused(event("contract", revenue_entries=[{"id": "x" * length, "amount": "1"}]))
    assert "after.revenue_entries[0].id = " in bad.message


@pytest.mark.parametrize("length", [0, 257])
def test_an_event_id_of_no_character_or_more_than_256_is_refused(length) -> None:
    document = event()
    document["event_id"] = "e" * length
    bad = refused(document)
    assert "event_id" in bad.message


@pytest.mark.parametrize("order_id", [[1], {"id": "AO1"}, True, False, 1.5, "", "a\nb", "x" * 257])
@pytest.mark.parametrize("entity", ["receipt", "sales_voucher"])
def test_an_order_id_is_an_id(entity, order_id) -> None:
    bad = refused(event(entity, order_id=order_id))
    assert "after.order_id = " in bad.message


@pytest.mark.parametrize("order_id", ["AO1", 7, "x" * 256])
def test_an_order_id_may_be_a_string_or_an_integer(order_id) -> None:
    assert decode(event(order_id=order_id)).record["order_id"] == order_id


@pytest.mark.parametrize("length", [1, 64])
def test_a_tenant_of_one_to_64_characters_is_accepted(length) -> None:
    document = event()
    document["tenant"] = "t" * length
    assert decode(document).tenant == "t" * length


@pytest.mark.parametrize("length", [0, 65])
def test_a_tenant_of_no_character_or_more_than_64_is_refused(length) -> None:
    document = event()
    document["tenant"] = "t" * length
    assert "tenant" in refused(document).message


# --- what the rules read: states and lists ---------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "field"),
    [("invoice", "status"), ("sale_order", "revenue_status"), ("contract", "status"), ("contract", "delivery_status"),
     ("sales_voucher", "einvoice_published"), ("sales_voucher", "invoice_no"), ("sales_voucher", "invoice_date")],
)  # fmt: skip
@pytest.mark.parametrize("value", [[], ["proposed"], {}, {"v": "proposed"}])
def test_a_state_is_never_an_object_or_a_list(entity, field, value) -> None:
    bad = refused(event(entity, order_id="AO1", **{field: value}))
    assert f"after.{field} = " in bad.message and "never an object or a list" in bad.message


@pytest.mark.parametrize("value", ["proposed", "", 3, True, None])
def test_a_state_may_be_any_json_scalar(value) -> None:
    assert decode(event("contract", status=value, revenue_status=value)).record["status"] == value


@pytest.mark.parametrize(
    ("entity", "field", "value", "named"),
    [("sales_voucher", "lines", 5, "after.lines = "), ("sales_voucher", "lines", ["L1"], "after.lines[0] = "),
     ("price_policy", "prices", {"price": "1"}, "after.prices = "),
     ("price_policy", "prices", [1], "after.prices[0] = "),
     ("contract", "revenue_entries", "E1", "after.revenue_entries = "),
     ("price_policy", "category_codes", "LH1", "after.category_codes = "),
     ("price_policy", "category_codes", [["LH1"]], "after.category_codes[0] = "),
     ("price_policy", "category_codes", ["x" * 257], "after.category_codes[0] = "),
     ("customer", "codes", {"KH1": 1}, "after.codes = "), ("customer", "codes", [None], "after.codes[0] = "),
     ("customer", "codes", [True], "after.codes[0] = ")],
)  # fmt: skip
def test_a_list_the_rules_walk_is_a_list_of_what_they_expect(entity, field, value, named) -> None:
    document = event(entity, order_id="AO1", **{field: value})
    if entity == "customer":
        document["action"] = "pull"
    assert named in refused(document).message


def test_lists_of_what_the_rules_expect_are_accepted() -> None:
    assert decode(event("price_policy", category_codes=["LH1", 2], prices=[{"product_code": "SP1", "price": "1"}]))
    assert decode(event("customer", codes=[]))
    assert decode(event("sales_voucher", order_id="AO1", lines=[{"line_id": "L1", "quantity": 1}], invoice_no=None))
