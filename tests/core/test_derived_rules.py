"""The derived rules (SO-9..SO-14, CT-11, CT-12): CRM order values computed from the accounting
aggregates (vouchers, receipts, the contract) by ``decide_for_order``.
"""

from __future__ import annotations

from typing import Any

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
from tests.fakes import FakeState, event


def delivered(quantity: str) -> list[dict[str, str]]:
    """CRM's delivered quantities of order DH1 (one line, l1)."""
    return [{"line_id": "l1", "delivered_quantity": quantity}]


# What each kind of accounting event leads to on a known order (DH1, total 200000, 2 ordered on l1):
# the audit's action, then every command (rule, fields) in the order sent; every one writes CRM
# order o-1 (update, key id o-1 / code DH1), and the audit names exactly these rules, in this order.
VOUCHER_CREATED = (
    "create",
    [
        ("SO-9", {"delivered_quantities": delivered("2")}),
        # a live voucher, not yet invoiced: the order is under way
        ("SO-11", {"status": "in_progress"}),
        ("SO-13", {"delivery_status": "delivered"}),
    ],
)
RECEIPT_CREATED = (
    "create",
    [
        ("SO-10", {"receipted_amount": "200000", "remaining_receivable": "0"}),
        ("SO-14", {"pay_status": "paid"}),
    ],
)

# rule -> (order target, the event, (audit action, [(rule, fields), ...]))
DERIVED_RULES: dict[str, tuple[str, dict[str, Any], tuple[str, list[tuple[str, dict[str, Any]]]]]] = {
    "SO-9": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER), VOUCHER_CREATED),
    "SO-10": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT), RECEIPT_CREATED),
    "SO-11": (
        "sale_order",
        ev_kwargs("acct", "sales_voucher", "d", before=VOUCHER),
        (
            "delete",
            [
                ("SO-9", {"delivered_quantities": delivered("0")}),
                # the order's vouchers deleted: not started, and nothing delivered (SO-11)
                ("SO-11", {"status": "not_started", "delivered_quantities": delivered("0")}),
                ("SO-13", {"delivery_status": "not_delivered"}),
            ],
        ),
    ),
    "SO-12": (
        "sale_order",
        ev_kwargs("acct", "sales_voucher", "u", before=VOUCHER, after={**VOUCHER, "invoice_no": "0000123"}),
        (
            "assign_invoice_no",
            [
                # invoiced total = order total (SO-11)
                ("SO-11", {"status": "completed"}),
                # no invoice_date on the voucher: the day of the change at the source (tests.fakes.TS_MS)
                ("SO-12", {"invoicing_status": "invoiced", "invoiced_amount": "200000", "invoiced_date": "2025-11-27"}),
            ],
        ),
    ),
    "SO-13": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER), VOUCHER_CREATED),
    "SO-14": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT), RECEIPT_CREATED),
    "CT-11": (
        "contract",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded"),
            after=acct_order("recorded", status="fully_delivered"),
        ),
        # CT-9 first: in_progress -> fully_delivered is in_progress in CRM, so it writes nothing
        ("update", [("CT-11", {"delivery_status": "delivered", "delivered_quantities": delivered("0")})]),
    ),
    "CT-12": (
        "contract",
        ev_kwargs("acct", "receipt", after=RECEIPT),
        (
            "create",
            [
                (
                    "CT-12",
                    {
                        "receipted_amount": "200000",
                        "remaining_receivable": "0",
                        "pay_status": "paid",
                        "receipts": [{"id": "r-1", "code": "PT1", "amount": "200000"}],
                    },
                )
            ],
        ),
    ),
}

# The audit's rules when they are not just the commands' rules (a matched rule came first).
AUDIT_RULES = {"CT-11": ["CT-9", "X-2", "CT-11"]}


def known_order(order_target: str, rules: RuleBook) -> tuple[FakeState, OrderAggregate]:
    """Order DH1 linked to CRM o-1, its acct order (or contract) arrived, recorded."""
    state = base_state(order_target, (ORDER_LINK,))
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    kind = "contract" if order_target == "contract" else "sale_order"
    decide_for_order(event("acct", kind, after=acct_order("recorded")), aggregate, state, rules, now_ms=NOW)
    return state, aggregate


@pytest.mark.parametrize("rule_id", sorted(DERIVED_RULES))
def test_derived_rule_writes_crm(rule_id: str, rules: RuleBook) -> None:
    """Each derived rule fires from its own kind of accounting event, on an order that is known."""
    order_target, kwargs, (action, expected) = DERIVED_RULES[rule_id]
    state, aggregate = known_order(order_target, rules)
    if rule_id in ("SO-11", "SO-12"):  # SO-11's reset and SO-12's numbering need a voucher first
        decide_for_order(event("acct", "sales_voucher", after=VOUCHER), aggregate, state, rules, now_ms=NOW)
    decision = decide_for_order(event(**kwargs), aggregate, state, rules, now_ms=NOW)
    assert rule_id in [rule for rule, _ in expected]
    assert [(c.rule, c.fields) for c in decision.commands] == expected
    for command in decision.commands:
        assert (command.target, command.entity, command.op) == (System.CRM, "sale_order", Op.UPDATE)
        assert command.key == CommandKey(id="o-1", code="DH1")
        assert (command.read_only, command.depends_on, command.ts_ms) == (False, [], NOW)
    audit = decision.audit
    rules_named = AUDIT_RULES.get(rule_id, [rule for rule, _ in expected])
    assert (audit.action, audit.rule, audit.rules) == (action, rules_named[0], rules_named)
    assert [a.command_id for a in audit.commands] == [c.command_id for c in decision.commands]


def test_an_edit_of_a_voucher_already_published_is_an_update_not_a_publication(rules: RuleBook) -> None:
    """SO-12 follows the e-invoice being published; a later edit of the voucher (a quantity) is an
    update: what changed is delivery (SO-9, SO-13), not invoicing."""
    state, aggregate = known_order("sale_order", rules)
    published = {**VOUCHER, "einvoice_published": True}
    first = decide_for_order(
        event("acct", "sales_voucher", "u", before=VOUCHER, after=published), aggregate, state, rules, now_ms=NOW
    )
    assert first.audit.action == "publish_einvoice"
    assert "SO-12" in [c.rule for c in first.commands]
    edited = {**published, "lines": [{**published["lines"][0], "quantity": 1}]}
    decision = decide_for_order(
        event("acct", "sales_voucher", "u", before=published, after=edited), aggregate, state, rules, now_ms=NOW
    )
    assert [(c.rule, c.fields) for c in decision.commands] == [
        ("SO-9", {"delivered_quantities": delivered("1")}),
        ("SO-13", {"delivery_status": "delivering"}),
    ]
    assert (decision.audit.action, decision.audit.rule, decision.audit.rules) == ("update", "SO-9", ["SO-9", "SO-13"])


def test_derived_rules_are_in_the_table_for_their_order_target(rules: RuleBook) -> None:
    for rule_id, (order_target, _, _) in DERIVED_RULES.items():
        rule = rules.by_id(rule_id)
        assert rule.effect is Effect.DERIVED, rule_id
        assert rule.order_target == order_target, rule_id
