"""Validation at the edge: what a change event must be before anything is decided from it.

Every refusal is a ``BadInput`` whose message names the field, the value and what was expected, so
that the person reading the dead letter knows what to fix.
"""

from __future__ import annotations

import orjson
import pytest

from streams.core.contract import decode_change_event
from streams.core.decide import decide
from streams.core.errors import BadInput
from tests.fakes import TS_MS, FakeState


def raw_event(**overrides) -> dict:
    event = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant": "cty-abc",
        "system": "acct",
        "entity": "receipt",
        "op": "c",
        "ts_ms": TS_MS,
        "before": None,
        "after": {"id": "R1", "code": "PT1", "order_id": "AO1", "amount": "500"},
    }
    event.update(overrides)
    return event


def decode(event: dict, *, key: bytes | None = b"cty-abc:R1", entity: str = "receipt", raw: bytes | None = None):
    return decode_change_event(
        raw if raw is not None else orjson.dumps(event),
        topic_system=event.get("system", "acct"),
        topic_entity=entity,
        topic=f"cdc.acct.{entity}",
        partition=1,
        offset=7,
        key=key,
    )


def refused(event: dict, **kwargs) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode(event, **kwargs)
    return caught.value


def test_a_good_event_passes_with_its_key() -> None:
    event = decode(raw_event())
    assert (event.tenant, event.record_id) == ("cty-abc", "R1")


@pytest.mark.parametrize(
    "tenant",
    ["T:evil143", "cty abc", "", "-leading-dash", "x" * 65, "Công-ty", "\ufffd\ufffd\x00", 42],
)
def test_a_tenant_that_could_reach_other_keys_is_refused(tenant) -> None:
    bad = refused(raw_event(tenant=tenant), key=f"{tenant}:R1".encode() if isinstance(tenant, str) else b"x")
    assert bad.kind == "schema"
    assert "tenant" in bad.message and repr(tenant)[:30] in bad.message
    assert "no ':'" in bad.message  # what is expected
    assert bad.message.endswith('(JSON pointer "/tenant")')  # where, as a JSON Schema validator says it


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("NaN", "decimal string"),
        ("Infinity", "decimal string"),
        ("-Infinity", "decimal string"),
        ("1e999999", "no exponent"),
        ("abc", "decimal string"),
        ("١٢٣", "ASCII digits"),  # Arabic-Indic digits
        (1.5, "never a JSON float"),
        ({"v": 1}, "decimal string"),
        ([1], "decimal string"),
        (True, "decimal string"),
        ("1" * 25, "decimal string"),
        (10**19 * 100, "never a JSON float"),  # JSON integers past 64 bits are read as floats
    ],
)
def test_an_amount_that_is_not_a_decimal_is_refused_naming_the_field_and_the_value(amount, expected) -> None:
    raw = orjson.dumps(raw_event(after={"id": "R1", "order_id": "AO1", "amount": "<amount>"}))
    if isinstance(amount, int) and not isinstance(amount, bool) and amount > 2**63:
        raw = raw.replace(b'"<amount>"', str(amount).encode())
        amount = float(amount)
    else:
        raw = raw.replace(b'"<amount>"', orjson.dumps(amount))
    bad = refused(raw_event(), raw=raw)
    assert bad.kind == "schema"
    assert "after.amount" in bad.message and repr(amount)[:20] in bad.message
    assert expected in bad.message


@pytest.mark.parametrize("amount", ["500", "-12.5", "0.0001", 200000, "99999999999999999999"])
def test_decimal_strings_and_integers_are_amounts(amount) -> None:
    assert decode(raw_event(after={"id": "R1", "order_id": "AO1", "amount": amount})).record["amount"] == amount


def test_amounts_of_lines_and_prices_are_checked_too() -> None:
    order = {
        "id": "O1",
        "code": "DH1",
        "customer_code": "KH1",
        "total_amount": "10",
        "lines": [{"line_id": "L1", "product_code": "SP1", "quantity": 2.5, "unit_price": "4", "amount": "NaN"}],
    }
    bad = refused(raw_event(system="crm", entity="sale_order", after=order), entity="sale_order", key=b"cty-abc:O1")
    assert "after.lines[0].amount" in bad.message
    order["lines"][0]["amount"] = "10"
    assert decode(raw_event(system="crm", entity="sale_order", after=order), entity="sale_order", key=b"cty-abc:O1")
    order["lines"][0]["quantity"] = "2,5"
    bad = refused(raw_event(system="crm", entity="sale_order", after=order), entity="sale_order", key=b"cty-abc:O1")
    assert "after.lines[0].quantity" in bad.message and "JSON number" in bad.message


@pytest.mark.parametrize(
    ("where", "field"),
    [("line", "vat_amount"), ("line", "discount_amount_oc"), ("order", "exchange_rate"), ("order", "sale_amount")],
)
def test_the_money_a_proposal_is_computed_from_is_never_a_float(where, field) -> None:
    line = {"line_id": "L1", "product_code": "SP1", "quantity": 1, "amount": "10", "vat_rate": "10"}
    order = {"id": "O1", "code": "DH1", "currency": "USD", "lines": [line]}
    (line if where == "line" else order)[field] = 0.1
    bad = refused(raw_event(system="crm", entity="sale_order", after=order), entity="sale_order", key=b"cty-abc:O1")
    assert field in bad.message and "never a JSON float" in bad.message
    (line if where == "line" else order)[field] = "0.1"
    assert decode(raw_event(system="crm", entity="sale_order", after=order), entity="sale_order", key=b"cty-abc:O1")


@pytest.mark.parametrize("record_id", [{"x": 1}, True, [1, 2], 1.5, "", "a\nb", "x" * 257])
def test_a_record_id_must_be_a_string_or_an_integer(record_id) -> None:
    bad = refused(raw_event(after={"id": record_id, "order_id": "AO1", "amount": "1"}), key=None)
    assert bad.kind == "schema"
    assert "id" in bad.message


def test_an_integer_id_is_its_text() -> None:
    event = decode(raw_event(after={"id": 17, "order_id": "AO1", "amount": "1"}), key=b"cty-abc:17")
    assert event.record_id == "17"


@pytest.mark.parametrize(
    "key",
    [None, b"", b"cty-abc:R2", b"other:R1", b"\xff\xfe\x00", b"cty-abc:R1" + b"x" * 10_000],
)
def test_a_key_that_does_not_name_the_record_is_refused(key) -> None:
    bad = refused(raw_event(), key=key)
    assert bad.kind == "key"
    assert "'cty-abc:R1'" in bad.message and "<tenant>:<record id>" in bad.message


def test_a_debezium_key_is_the_tables_primary_key_and_is_not_compared() -> None:
    payload = {
        "op": "c",
        "before": None,
        "after": {"id": "R1", "order_id": "AO1", "amount": "1"},
        "source": {"ts_ms": TS_MS, "lsn": 1234, "txId": 77, "table": "receipts"},
    }
    event = decode_change_event(
        orjson.dumps({"payload": payload}),
        topic_system="acct",
        topic_entity="receipt",
        topic="cdc.acct.receipt",
        partition=0,
        offset=3,
        headers={"tenant": b"cty-abc"},
        key=b'{"id":"R1"}',
    )
    assert event.tenant == "cty-abc"


def test_a_debezium_tenant_header_of_other_bytes_is_refused() -> None:
    payload = {"op": "c", "after": {"id": "C1", "code": "KH1"}, "source": {"ts_ms": TS_MS, "lsn": 1}}
    with pytest.raises(BadInput) as caught:
        decode_change_event(
            orjson.dumps({"payload": payload}),
            topic_system="acct",
            topic_entity="customer",
            headers={"tenant": b"\xff\xfe\x00"},
            key=b"anything",
        )
    assert "tenant" in caught.value.message


def debezium(lsn: int, *, offset: int, after: dict | None = None) -> bytes:
    payload = {
        "op": "u",
        "before": {"id": "C1", "code": "KH1", "name": "a"},
        "after": after or {"id": "C1", "code": "KH1", "name": "b"},
        "source": {
            "connector": "postgresql",
            "name": "erp",
            "db": "acct",
            "schema": "public",
            "table": "customers",
            "ts_ms": TS_MS,
            "lsn": lsn,
            "txId": 9,
        },
    }
    return orjson.dumps({"payload": payload})


def test_a_change_debezium_sends_again_keeps_its_event_id() -> None:
    """Debezium re-sends changes after a Connect restart (at least once), at new offsets: the event
    id comes from where the connector read the change, so the repeat is a duplicate."""

    def decoded(raw: bytes, offset: int):
        return decode_change_event(
            raw,
            topic_system="acct",
            topic_entity="customer",
            topic="cdc.acct.customer",
            partition=0,
            offset=offset,
            headers={"tenant": b"cty-abc"},
        )

    first, again = decoded(debezium(100, offset=5), 5), decoded(debezium(100, offset=912), 912)
    later = decoded(debezium(101, offset=913), 913)
    assert first.event_id == again.event_id and first.event_id.startswith("dbz-")
    assert later.event_id != first.event_id
    state = FakeState()
    assert decide(first, state, __import__("streams.core.rules", fromlist=["load_rules"]).load_rules(), now_ms=0)


def test_without_a_source_position_the_event_id_is_the_message_position() -> None:
    payload = {"op": "c", "after": {"id": "C1", "code": "KH1"}, "source": {"ts_ms": TS_MS}}
    event = decode_change_event(
        orjson.dumps({"payload": payload}),
        topic_system="acct",
        topic_entity="customer",
        topic="cdc.acct.customer",
        partition=2,
        offset=40,
        headers={"tenant": b"cty-abc"},
    )
    assert event.event_id == "cdc.acct.customer:2:40"


WHERE = "event 'e-1' on cdc.acct.receipt@1:7: "
MONEY = 'must be a decimal string like "12.5" (ASCII digits, no exponent) or an integer'


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("codes", "KH1", "after.codes = 'KH1' must be a list of codes"),
        ("codes", ["", "KH2"], "after.codes[0] = '' must be 1 to 256 printable characters"),
        ("lines", "L1", "after.lines = 'L1' must be a list of objects"),
        ("lines", [1], "after.lines[0] = 1 must be an object"),
        ("order_id", {"a": 1}, "after.order_id = {'a': 1} must be a string or an integer (a record id or code)"),
        (
            "status",
            [1],
            "after.status = [1] must be a string, a number, a boolean or null (a state), never an object or a list",
        ),
        ("amount", 1.5, f"after.amount = 1.5 {MONEY}; money is never a JSON float"),
        ("lines", [{"line_id": "L1", "quantity": "x"}], f"after.lines[0].quantity = 'x' {MONEY}, or a JSON number"),
        ("amount", "x" * 78, f"after.amount = '{'x' * 78}' {MONEY}"),  # a value shown whole: 80 characters
        ("amount", "x" * 79, f"after.amount = '{'x' * 76}... {MONEY}"),  # longer: its first 77, then "..."
    ],
)
def test_a_dead_letters_reason_says_where_which_field_its_value_and_what_was_expected(field, value, says) -> None:
    bad = refused(raw_event(after={"id": "R1", "order_id": "AO1", "amount": "500", field: value}))
    assert bad.kind == "schema"
    assert bad.message.startswith(WHERE) and says in bad.message, bad.message
    # ... and ends with what was expected, then where in the document, as a JSON Schema validator names it
    pointer = "/" + says.split(" = ")[0].replace("[", ".").replace("]", "").replace(".", "/")
    assert bad.message.endswith(f'{says.rsplit(" must ", 1)[1]} (JSON pointer "{pointer}")'), bad.message


def test_an_event_id_that_is_not_printable_is_refused_naming_it() -> None:
    bad = refused(raw_event(event_id="e\n1"))
    assert bad.kind == "schema"
    assert bad.message.endswith(
        "event_id 'e\\n1' must be 1 to 256 printable characters (JSON pointer \"/event_id\")"
    ), bad.message


@pytest.mark.parametrize(("key", "shown"), [(None, "no key"), (b"cty-abc:R2", "key b'cty-abc:R2'")])
def test_a_wrong_key_is_shown_in_the_reason(key, shown) -> None:
    bad = refused(raw_event(), key=key)
    assert bad.message.startswith(f"{WHERE}{shown}, but the event is for 'cty-abc:R1'"), bad.message
