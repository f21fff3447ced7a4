"""The money of every proposal the accounting connector sends is right and complete, and adds up.

A CRM order is read as the CRM capture reads it (``crm_mapping.from_crm``), decided by the core
(SO-4 / CT-4 / QUO-1: the command carries the order's fields) and written by ``ActWriter``: what is
checked is the ``save`` voucher the writer hands to the ACT client (and, for the issue's example,
what the accounting sandbox received over HTTP). ``amis-apis.md`` §2.6: money fields come in pairs,
``*_oc`` in the order's currency and plain in VND; the header's totals are those of its lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from amis import crm_mapping
from amis.acct_client import ActClient, ActCredentials
from amis.errors import Refused
from amis.ledger import LocalWrites, WriteLedger
from amis.money import MoneyError, percent, proposal_money, share, to_vnd
from connectors.writers import ActWriter
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from streams.core.contract import Command
from streams.core.decide import decide
from streams.core.rules import load_rules
from tests.fakes import FakeState, event

T = "cty-abc"
RULES = load_rules()
HEADER_PAIRS = ("total_sale_amount", "total_discount_amount", "total_vat_amount", "total_amount")


class SavingClient:
    """The ACT client as far as the writer uses it for a proposal: what ``save`` was given is kept."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def clock(self) -> float:
        return time.time()

    async def save(self, tenant: str, vouchers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.saved.extend(vouchers)
        return []  # queued, no answer per voucher: the results come by callback


def D(value: Any) -> Decimal:
    """A JSON number of the wire as the decimal it spells (a float's shortest text, never its binary value)."""
    assert not isinstance(value, bool) and isinstance(value, (int, float)), value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def command_for(crm_order: dict[str, Any], *, entity: str = "sale_order", **contract: Any) -> Command:
    """The command the core sends for a CRM order (or quote) proposed for revenue, read as CRM capture reads it;
    ``contract`` adds fields in the contract's names (as a producer other than CRM may)."""
    resource = "quote" if entity == "quote" else "sale_order"
    record = {**crm_mapping.from_crm(resource, crm_order), **contract}
    state = FakeState()
    state.order_targets[T] = "contract" if entity == "contract" else "sale_order"
    if entity == "quote":
        ev = event("crm", "quote", "c", tenant=T, after=record)
    else:
        before = {**record, "revenue_status": "draft"}
        ev = event("crm", "sale_order", "u", tenant=T, before=before, after={**record, "revenue_status": "proposed"})
    decision = decide(ev, state, RULES, now_ms=1_764_201_600_000)
    (command,) = [c for c in decision.commands if c.entity == entity]
    return command


def voucher_of(command: Command, ledger: WriteLedger, **writer: Any) -> dict[str, Any]:
    client = SavingClient()
    # contracts and quotes are the sandbox's voucher types (9001, 9002): written with extensions on
    writer.setdefault("extensions", command.entity != "sale_order")
    asyncio.run(ActWriter(client, LocalWrites(ledger), **writer).apply(command))  # type: ignore[arg-type]
    (voucher,) = client.saved
    return voucher


@pytest.fixture(scope="module")
def ledger(tmp_path_factory) -> WriteLedger:
    return WriteLedger(tmp_path_factory.mktemp("ledger") / "acct-shared.sqlite")


# --- the issue's example ------------------------------------------------------------------------

ISSUE_ORDER = {
    "id": 9,
    "sale_order_no": "DH0001",
    "account_code": "KH0001",
    "account_name": "Công ty TNHH ABC",
    "currency_type": "VND",
    "exchange_rate": 1,
    "sale_order_amount": 2200000,
    "revenue_status": "Bản nháp",
    "sale_order_product_mappings": [
        {
            "id": 31,
            "product_code": "SP01",
            "amount": 2,
            "price": 1000000,
            "to_currency": 2000000,
            "tax_percent": "10%",
            "tax": 200000,
            "total": 2200000,
        }
    ],
}


def assert_issue_voucher(voucher: dict[str, Any]) -> None:
    (line,) = voucher["detail"]
    assert (line["amount"], line["amount_oc"], line["vat_rate"]) == (2000000, 2000000, 10)
    assert (line["vat_amount"], line["vat_amount_oc"]) == (200000, 200000)
    assert (line["quantity"], line["unit_price"], line["inventory_item_code"]) == (2, 1000000, "SP01")
    assert voucher["total_sale_amount"] == voucher["total_sale_amount_oc"] == 2000000
    assert voucher["total_vat_amount"] == voucher["total_vat_amount_oc"] == 200000
    assert voucher["total_discount_amount"] == voucher["total_discount_amount_oc"] == 0
    assert voucher["total_amount"] == voucher["total_amount_oc"] == 2200000
    assert voucher["account_object_name"] == "Công ty TNHH ABC" and voucher["account_object_code"] == "KH0001"
    assert (voucher["currency_id"], voucher["exchange_rate"], voucher["discount_type"]) == ("VND", 1, 0)


def test_the_issues_order_becomes_a_voucher_whose_lines_and_total_agree(ledger):
    voucher = voucher_of(command_for(ISSUE_ORDER), ledger, branches={T: "b7f0c1e2-branch"})
    assert_issue_voucher(voucher)
    assert voucher["branch_id"] == "b7f0c1e2-branch"


def test_without_a_branch_setting_no_branch_is_sent(ledger):
    voucher = voucher_of(command_for(ISSUE_ORDER), ledger, branches={"another-tenant": "b-other"})
    assert "branch_id" not in voucher  # ACT books it to the company's default branch


async def test_the_issues_order_reaches_the_accounting_sandbox_as_computed(tmp_path):
    """Over HTTP: the proposal ACT keeps is the one checked above (JSON numbers, nothing lost on the way)."""
    store = ActStore(tmp_path / "acct.sqlite")
    store.save_dictionary_item(T, {"dictionary_type": 1, "account_object_code": "KH0001", "is_customer": True}, "ui")
    store.save_dictionary_item(T, {"dictionary_type": 3, "inventory_item_code": "SP01"}, "ui")
    app_id = "app-money"
    sandbox = TestServer(create_acct_sandbox(store, app_id=app_id, credentials={f"{app_id}:acc3ss": T}))
    await sandbox.start_server()
    session = aiohttp.ClientSession()
    ledger = WriteLedger(tmp_path / "shared.sqlite")
    try:
        client = ActClient(str(sandbox.make_url("")), session, app_id, {T: ActCredentials(SecretStr("acc3ss"), "01")})
        pending = await ActWriter(client, LocalWrites(ledger), branches={T: "b-1"}).apply(command_for(ISSUE_ORDER))
        deadline = time.monotonic() + 5
        while store.proposal(T, pending.org_refid) is None and time.monotonic() < deadline:  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
        found = store.proposal(T, pending.org_refid)  # type: ignore[union-attr]
        assert found is not None, "the sandbox kept no proposal"
        assert_issue_voucher(found[0])
        assert found[0]["branch_id"] == "b-1"
    finally:
        await session.close()
        await sandbox.close()
        ledger.close()
        store.close()


# --- discounts, currencies, refusals ------------------------------------------------------------


def crm_line(n: int, price: int | str, qty: int, tax: str | None, **more: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"id": n, "product_code": f"SP{n}", "amount": qty, "price": price, **more}
    if tax is not None:
        line["tax_percent"] = tax
    return line


def crm_order(*lines: dict[str, Any], currency: str = "VND", rate: Any = 1) -> dict[str, Any]:
    return {
        "id": 10,
        "sale_order_no": "DH0010",
        "account_code": "KH0001",
        "account_name": "Khách",
        "currency_type": currency,
        "exchange_rate": rate,
        "sale_order_product_mappings": list(lines),
    }


def test_per_line_discounts_lower_the_vat_base_and_travel_in_the_header(ledger):
    order = crm_order(
        crm_line(1, 1000000, 1, "10%", discount_percent="5%"),  # 50,000 off, VAT on 950,000
        crm_line(2, 300000, 2, "8%", discount=100000),  # 100,000 off, VAT on 500,000
    )
    voucher = voucher_of(command_for(order), ledger)
    assert voucher["discount_type"] == 1
    assert [line["vat_amount"] for line in voucher["detail"]] == [95000, 40000]
    assert [line["amount"] for line in voucher["detail"]] == [1000000, 600000]
    assert voucher["total_discount_amount"] == voucher["total_discount_amount_oc"] == 150000
    assert voucher["total_amount"] == 1600000 - 150000 + 135000
    # §2.6 lists no discount of a line: none is sent
    assert all(not {"discount_rate", "discount_amount", "discount_amount_oc"} & set(line) for line in voucher["detail"])


def test_a_discount_on_the_whole_order_is_shared_over_the_lines_vat(ledger):
    order = crm_order(crm_line(1, 100, 1, "10%"), crm_line(2, 200, 1, "10%"), crm_line(3, 700, 1, "0%"))
    percent_off = voucher_of(command_for(order, discount_type="invoice_percent", discount_rate="10"), ledger)
    assert percent_off["discount_type"] == 2 and percent_off["total_discount_amount"] == 100
    # 10 off line 1 and 20 off line 2: VAT 9 + 18; line 3 has none
    assert [line["vat_amount"] for line in percent_off["detail"]] == [9, 18, 0]
    assert percent_off["total_amount"] == 1000 - 100 + 27
    amount_off = voucher_of(command_for(order, discount_type="invoice_amount", discount_amount="1"), ledger)
    assert amount_off["discount_type"] == 3 and amount_off["total_discount_amount"] == 1
    assert amount_off["total_amount"] == 1000 - 1 + amount_off["total_vat_amount"]


def test_a_foreign_currency_order_keeps_cents_in_oc_and_whole_dong_converted_line_by_line(ledger):
    # 3 × 10.015 USD = 30.045 → 30.05 USD; VAT 8 % of it = 2.404 → 2.40 USD; at 25,432.5 VND/USD:
    # 30.05 × 25,432.5 = 764,246.625 → 764,247 dong; 2.40 × 25,432.5 = 61,038 dong.
    order = crm_order(crm_line(1, "10.015", 3, "8%"), crm_line(2, "0.5", 1, "10%"), currency="USD", rate="25432.5")
    voucher = voucher_of(command_for(order), ledger)
    first, second = voucher["detail"]
    assert (D(first["amount_oc"]), first["amount"]) == (Decimal("30.05"), 764247)
    assert (D(first["vat_amount_oc"]), first["vat_amount"]) == (Decimal("2.40"), 61038)
    # 0.5 × 25,432.5 = 12,716.25 → 12,716; VAT 0.05 USD → 1,271.625 → 1,272
    assert (second["amount"], second["vat_amount"]) == (12716, 1272)
    assert (voucher["currency_id"], D(voucher["exchange_rate"])) == ("USD", Decimal("25432.5"))
    assert voucher["total_sale_amount"] == 764247 + 12716  # the sum of the rounded lines
    assert D(voucher["total_amount_oc"]) == Decimal("30.05") + Decimal("0.5") + Decimal("2.40") + Decimal("0.05")


def test_a_proposal_that_cannot_be_priced_is_refused_with_what_to_fix(ledger):
    no_rate = crm_order(crm_line(1, "10", 1, "8%"), currency="USD", rate=None)
    with pytest.raises(Refused, match=r"DH0010 .*USD but has no positive exchange_rate"):
        voucher_of(command_for(no_rate), ledger)
    not_a_rate = crm_order(crm_line(1, 1000, 1, "KCT"))
    with pytest.raises(Refused, match=r"lines\[0\]\.vat_rate = 'KCT' is not a percentage"):
        voucher_of(command_for(not_a_rate), ledger)


def test_an_update_without_lines_sends_no_money(ledger):
    command = command_for(ISSUE_ORDER)
    status_only = dataclasses.replace(command, fields={"revenue_status": "recorded"})
    voucher = voucher_of(status_only, ledger)
    assert not {"total_amount", "total_amount_oc", "total_sale_amount", "currency_id", "detail"} & set(voucher)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10%", Decimal(10)), ("8 %", Decimal(8)), ("0%", Decimal(0)), (5, Decimal(5)), ("5.5", Decimal("5.5"))],
)
def test_rates_are_read_from_text_or_numbers(text, expected):
    assert percent(text, "vat_rate") == expected


def test_absent_rates_are_none_and_floats_are_never_money():
    assert percent(None, "vat_rate") is None and percent("", "vat_rate") is None
    with pytest.raises(MoneyError, match="not a float"):
        proposal_money({"lines": [{"quantity": 1, "unit_price": 0.1}]})


def test_rounding_is_half_away_from_zero_to_the_whole_dong():
    assert to_vnd(Decimal("0.5"), Decimal(1)) == 1 and to_vnd(Decimal("-0.5"), Decimal(1)) == -1
    assert to_vnd(Decimal("1.49"), Decimal(1)) == 1 and to_vnd(Decimal("2.5"), Decimal(1)) == 3  # not to even


@given(
    st.decimals(min_value=0, max_value=10**9, places=0),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=10).filter(any),
)
def test_a_shared_discount_adds_up_exactly(total, weights):
    parts = share(total, [Decimal(w) for w in weights], "VND")
    assert sum(parts) == total and all(p == p.to_integral_value() for p in parts)


# --- property: any order's proposal adds up --------------------------------------------------------

RATES = ["0%", "5%", "8%", "10%", "8 %", 10, None]


@st.composite
def orders(draw):
    """A CRM order (its wire form) and the contract fields a discount on the whole order adds."""
    foreign = draw(st.booleans())
    currency = draw(st.sampled_from(["USD", "EUR", "JPY"])) if foreign else "VND"
    rate = draw(st.decimals(min_value=1, max_value=40000, places=4)) if foreign else Decimal(1)
    kind = draw(st.sampled_from([None, "none", "per_line", "invoice_percent", "invoice_amount"]))
    lines = []
    for n in range(draw(st.integers(1, 8))):
        qty = draw(st.integers(1, 500))
        if foreign:
            price = draw(st.decimals(min_value=0, max_value=10**5, places=3))
        else:
            price = draw(st.decimals(min_value=0, max_value=10**8, places=0))
        line = crm_line(n, str(price), qty, draw(st.sampled_from(RATES)))
        if kind in (None, "per_line") and draw(st.booleans()):
            if draw(st.booleans()):
                line["discount_percent"] = f"{draw(st.integers(0, 50))}%"
            else:
                off = rounded_here(price * qty * Decimal(draw(st.integers(0, 100))) / 100, currency)
                line["discount_oc" if foreign else "discount"] = str(off)
        lines.append(line)
    order = crm_order(*lines, currency=currency, rate=str(rate))
    contract: dict[str, Any] = {} if kind is None else {"discount_type": kind}
    if kind == "invoice_percent":
        contract["discount_rate"] = str(draw(st.integers(0, 30)))
    elif kind == "invoice_amount":
        sale = sum(Decimal(line["price"]) * line["amount"] for line in lines)
        cut = rounded_here(sale * Decimal(draw(st.integers(0, 100))) / 100, currency)
        contract["discount_amount_oc" if foreign else "discount_amount"] = str(cut)
    entity = draw(st.sampled_from(["sale_order", "contract", "quote"]))
    if entity == "quote":
        order = {"id": 11, "quote_code": "BG1", **order, "quote_product_mappings": order["sale_order_product_mappings"]}
        del order["sale_order_product_mappings"]
    return entity, order, contract


def rounded_here(value: Decimal, currency: str) -> Decimal:
    return value.quantize(Decimal(1) if currency == "VND" else Decimal("0.01"), rounding=ROUND_HALF_UP)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orders())
def test_every_proposal_adds_up_on_the_wire(ledger, drawn):
    entity, order, contract = drawn
    voucher = voucher_of(command_for(order, entity=entity, **contract), ledger)
    lines = voucher["detail"]
    foreign = order["currency_type"] != "VND"
    rate = D(voucher["exchange_rate"])
    assert voucher["currency_id"] == order["currency_type"]
    assert rate == (Decimal(order["exchange_rate"]) if foreign else 1)
    for plain in ("", "_oc"):
        total_sale = D(voucher[f"total_sale_amount{plain}"])
        total_vat = D(voucher[f"total_vat_amount{plain}"])
        total_discount = D(voucher[f"total_discount_amount{plain}"])
        assert total_sale == sum(D(line[f"amount{plain}"]) for line in lines)
        assert total_vat == sum(D(line[f"vat_amount{plain}"]) for line in lines)
        assert D(voucher[f"total_amount{plain}"]) == total_sale - total_discount + total_vat
    step = Decimal("0.01") if foreign else Decimal(1)
    for name in HEADER_PAIRS:
        assert D(voucher[name]) == D(voucher[name]).to_integral_value(), f"{name} is not whole dong"
        assert D(voucher[f"{name}_oc"]) % step == 0, f"{name}_oc has more than the currency's decimals"
    for n, line in enumerate(lines):
        for name in ("amount", "vat_amount"):
            assert D(line[name]) == D(line[name]).to_integral_value(), f"line {n} {name} is not whole dong"
            assert D(line[f"{name}_oc"]) % step == 0
            # each line converted on its own, half away from zero
            assert D(line[name]) == (D(line[f"{name}_oc"]) * rate).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        given_line = (order.get("sale_order_product_mappings") or order["quote_product_mappings"])[n]
        price_times_quantity = Decimal(given_line["price"]) * given_line["amount"]
        assert D(line["amount_oc"]) == rounded_here(price_times_quantity, "USD" if foreign else "VND")
        assert line["sort_order"] == n + 1
        assert not {"discount_rate", "discount_amount", "total_amount"} & set(line)
    # the discount is the order's, whatever its kind
    sale_oc = D(voucher["total_sale_amount_oc"])
    discount_oc = D(voucher["total_discount_amount_oc"])
    kind = contract.get("discount_type")
    if kind == "invoice_percent":
        assert voucher["discount_type"] == 2
        off = sale_oc * Decimal(contract["discount_rate"]) / 100
        assert discount_oc == rounded_here(off, "USD" if foreign else "VND")
    elif kind == "invoice_amount":
        assert voucher["discount_type"] == 3
        assert discount_oc == Decimal(contract.get("discount_amount_oc") or contract["discount_amount"])
    elif kind == "none":
        assert voucher["discount_type"] == 0 and discount_oc == 0
    else:  # per line, said or found from the lines: each line's own rate or amount
        own = Decimal(0)
        for given_line in order.get("sale_order_product_mappings") or order["quote_product_mappings"]:
            # the rate applies to the line's amount as shown (rounded to the currency), not to price × quantity
            amount_oc = rounded_here(Decimal(given_line["price"]) * given_line["amount"], "USD" if foreign else "VND")
            if "discount_percent" in given_line:
                cut = amount_oc * Decimal(given_line["discount_percent"].rstrip("%")) / 100
                own += rounded_here(cut, "USD" if foreign else "VND")
            else:
                own += Decimal(given_line.get("discount_oc") or given_line.get("discount") or 0)
        assert voucher["discount_type"] == (1 if own or kind == "per_line" else 0) or own == 0
        assert discount_oc == (own if voucher["discount_type"] == 1 else 0)
    assert voucher["account_object_name"] == "Khách"


def test_a_line_without_a_vat_rate_has_none_on_the_wire_and_no_vat(ledger):
    order = crm_order(crm_line(1, 1000, 3, None), crm_line(2, 1000, 1, ""))
    voucher = voucher_of(command_for(order), ledger)
    assert [("vat_rate" in line, line["vat_amount"]) for line in voucher["detail"]] == [(False, 0), (False, 0)]
    assert voucher["total_amount"] == voucher["total_sale_amount"] == 4000
