"""The derived rules (SO-9..SO-14, CT-11, CT-12): CRM order values computed from the accounting
aggregates (vouchers, receipts, the contract) by ``decide_for_order``.
"""

from __future__ import annotations

import pytest

from common.names import System
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import CommandKey, Op
from streams.core.rules import Effect, RuleBook
from tests.core.rule_cases import (
    NOW,
    ORDER_LINK,
    RECEIPT,
    VOUCHER,
    T,
    acct_order,
    base_state,
    ev_kwargs,
)
from tests.fakes import event

DERIVED_RULES = {
    "SO-9": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER)),
    "SO-10": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT)),
    "SO-11": ("sale_order", ev_kwargs("acct", "sales_voucher", "d", before=VOUCHER)),
    "SO-12": (
        "sale_order",
        ev_kwargs("acct", "sales_voucher", "u", before=VOUCHER, after={**VOUCHER, "invoice_no": "0000123"}),
    ),
    "SO-13": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER)),
    "SO-14": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT)),
    "CT-11": (
        "contract",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded"),
            after=acct_order("recorded", status="fully_delivered"),
        ),
    ),
    "CT-12": ("contract", ev_kwargs("acct", "receipt", after=RECEIPT)),
}


@pytest.mark.parametrize("rule_id", sorted(DERIVED_RULES))
def test_derived_rule_writes_crm(rule_id: str, rules: RuleBook) -> None:
    """Each derived rule fires from its own kind of accounting event, on an order that is known."""
    order_target, kwargs = DERIVED_RULES[rule_id]
    state = base_state(order_target, (ORDER_LINK,))
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    kind = "contract" if order_target == "contract" else "sale_order"
    # the acct order (and, for SO-11's reset, a voucher that is then deleted) came first
    decide_for_order(event("acct", kind, after=acct_order("recorded")), aggregate, state, rules, now_ms=NOW)
    if rule_id in ("SO-11", "SO-12"):
        decide_for_order(event("acct", "sales_voucher", after=VOUCHER), aggregate, state, rules, now_ms=NOW)
    decision = decide_for_order(event(**kwargs), aggregate, state, rules, now_ms=NOW)
    mine = [c for c in decision.commands if c.rule == rule_id]
    assert mine, (decision.audit.rules, decision.audit.reason)
    (command,) = mine
    assert (command.target, command.entity, command.op) == (System.CRM, "sale_order", Op.UPDATE)
    assert command.key == CommandKey(id="o-1", code="DH1")
    derives = set(rules.by_id(rule_id).derives)
    assert derives, f"{rule_id} derives no value"
    assert set(command.fields) >= derives
    assert rule_id in decision.audit.rules


def test_derived_rules_are_in_the_table_for_their_order_target(rules: RuleBook) -> None:
    for rule_id, (order_target, _) in DERIVED_RULES.items():
        rule = rules.by_id(rule_id)
        assert rule.effect is Effect.DERIVED, rule_id
        assert rule.order_target == order_target, rule_id
