"""What goes back to CRM about money received is exact: remaining receivable = order total − Σ receipts.

The receipts of one accounting order are drawn as any split of an amount received (cents included),
arriving in any order, before or after the order, some edited on the way: the last SO-10 command
says ``receipted_amount`` = Σ receipts and ``remaining_receivable`` = total − Σ receipts to the last
digit (Decimal, checked against a sum made here), and CRM's wire carries the same numbers.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from amis import crm_mapping
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.rules import RuleBook, load_rules
from tests.fakes import FakeState, event

T = "t1"
RULES: RuleBook = load_rules()
CENTS = st.integers(0, 10**12).map(lambda c: Decimal(c) / 100)  # up to ten billion, to the cent


def order(total: Decimal) -> dict[str, Any]:
    return {
        "id": "ao-1",
        "code": "DH1",
        "crm_id": "o-1",
        "revenue_status": "recorded",
        "status": "in_progress",
        "total_amount": str(total),
        "lines": [{"line_id": "l1", "product_code": "SP1", "quantity": 1, "amount": str(total)}],
    }


def receipt(n: int, amount: Decimal) -> dict[str, Any]:
    return {"id": f"r-{n}", "code": f"PT{n}", "order_id": "ao-1", "amount": str(amount)}


@st.composite
def receivables(draw):
    """(order total, the receipts' final amounts, the events in arrival order)."""
    total = draw(CENTS)
    received = draw(CENTS)
    # a split of ``received`` into 1..6 receipts (cuts at any cent)
    cuts = sorted(draw(st.lists(st.integers(0, int(received * 100)), max_size=5)))
    bounds = [Decimal(0), *(Decimal(c) / 100 for c in cuts), received]
    amounts = [b - a for a, b in itertools.pairwise(bounds)]
    stream = [event("acct", "sale_order", "c", after=order(total), event_id="order")]
    for n, amount in enumerate(amounts):
        versions = []
        if draw(st.booleans()):  # first typed wrong, then corrected
            versions.append(event("acct", "receipt", "c", after=receipt(n, draw(CENTS)), event_id=f"r-{n}-0"))
        op = "u" if versions else "c"
        versions.append(event("acct", "receipt", op, after=receipt(n, amount), event_id=f"r-{n}-1"))
        for version in versions:  # each receipt's versions keep their order (one key); anything else may interleave
            at = draw(st.integers(0, len(stream)))
            later = [i for i, e in enumerate(stream) if e.event_id.startswith(f"r-{n}-")]
            stream.insert(max([at, *(i + 1 for i in later)]), version)
    return total, amounts, stream


@settings(max_examples=300, deadline=None)
@given(receivables())
def test_remaining_receivable_is_the_total_less_the_receipts_exactly(drawn) -> None:
    total, amounts, stream = drawn
    state = FakeState()
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    last: dict[str, Any] | None = None
    for ev in stream:
        decision = decide_for_order(ev, aggregate, state, RULES, now_ms=1_764_201_700_000)
        state.apply(decision)
        for command in decision.commands:
            if command.rule == "SO-10":
                last = command.fields
    received = sum(amounts, Decimal(0))
    if received == 0 and last is None:
        return  # nothing was ever received: CRM's own zero stands, no command needed
    assert last is not None
    assert Decimal(last["receipted_amount"]) == received
    assert Decimal(last["remaining_receivable"]) == total - received
    # decimal strings, never floats or exponents: what a person reads back in CRM
    assert all(isinstance(v, str) and "E" not in v.upper() for v in last.values())
    wire = crm_mapping.to_crm("sale_order", last)
    for name, expected in (("total_receipted_amount", received), ("balance_receipt_amount", total - received)):
        value = wire[name]
        assert (Decimal(repr(value)) if isinstance(value, float) else Decimal(value)) == expected, name
