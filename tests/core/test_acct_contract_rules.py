"""The rules for tenants whose orders are accounting contracts (CT-1..CT-10) through ``decide``, and
the order target that gives a tenant either these or the sales order ones (SO-*), never both; the
derived ones (CT-11, CT-12) are ``test_derived_rules.py``'s.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.names import System
from streams.core.contract import CommandKey, Op
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    CASE_PARAMS,
    ENTRIES,
    ORDER_LINK,
    acct_order,
    assert_none,
    base_state,
    check_case,
    ev_kwargs,
    none,
    only_command,
    order,
    order_fields,
    run,
)
from tests.fakes import FakeState, event

# --- the case table --------------------------------------------------------------------------


CONTRACT_CASES = [
    # Order as an acct contract
    *[
        pytest.param(
            "CT-1",
            ev_kwargs("crm", "sale_order", action=action, after=order("proposed")),
            (),
            "contract",
            {
                "target": "acct",
                "entity": "contract",
                "op": "create",
                "key": {"id": None, "code": "DH1"},
                "fields": order_fields("proposed"),
            },
            id=f"CT-1/{action}",
        )
        for action in ("create", "clone", "import")
    ],
    pytest.param(
        "CT-1",
        ev_kwargs("crm", "sale_order", after=order("draft")),
        (),
        "contract",
        none(because="revenue_status"),
        id="CT-1/draft-none",
    ),
    pytest.param(
        "CT-2",
        ev_kwargs(
            "crm", "sale_order", "u", before=order("proposed"), after=order("proposed", delivery_deadline="2026-01-15")
        ),
        (ORDER_LINK,),
        "contract",
        {
            "target": "acct",
            "entity": "contract",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": order_fields("proposed", delivery_deadline="2026-01-15"),
        },
        id="CT-2",
    ),
    pytest.param(
        "CT-2",
        ev_kwargs("crm", "sale_order", "u", before=order("recorded"), after=order("recorded", total_amount="250000")),
        (ORDER_LINK,),
        "contract",
        {
            "target": "acct",
            "entity": "contract",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": order_fields("recorded", total_amount="250000"),
        },
        id="CT-2/recorded",
    ),
    pytest.param(
        "CT-2",
        ev_kwargs("crm", "sale_order", "u", before=order("draft"), after=order("draft", total_amount="250000")),
        (ORDER_LINK,),
        "contract",
        none(because="revenue_status"),
        id="CT-2/draft-none",
    ),
    pytest.param(
        "CT-3", ev_kwargs("crm", "sale_order", "d", before=order()), (ORDER_LINK,), "contract", none(), id="CT-3"
    ),
    pytest.param(
        "CT-4",
        ev_kwargs("crm", "sale_order", "u", before=order("draft"), after=order("proposed")),
        (),
        "contract",
        {
            "target": "acct",
            "entity": "contract",
            "op": "upsert",
            "key": {"id": None, "code": "DH1"},
            "fields": order_fields("proposed"),
        },
        id="CT-4",
    ),
    pytest.param(
        "CT-5",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("draft")),
        (ORDER_LINK,),
        "contract",
        {"target": "acct", "entity": "contract", "op": "delete", "key": {"id": "ao-1", "code": "DH1"}, "fields": {}},
        id="CT-5",
    ),
    pytest.param(
        "CT-6",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")),
        (ORDER_LINK,),
        "contract",
        {
            "target": "acct",
            "entity": "contract",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": {"revenue_status": "recorded", "revenue_entries": ENTRIES},
        },
        id="CT-6",
    ),
    pytest.param(
        "CT-6",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("rejected")),
        (ORDER_LINK,),
        "contract",
        {
            "target": "acct",
            "entity": "contract",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": {"revenue_status": "not_recorded", "revenue_entries": ENTRIES},
        },
        id="CT-6/reject",
    ),
    pytest.param("CT-8", ev_kwargs("acct", "contract", after=acct_order()), (), "contract", none(), id="CT-8"),
    pytest.param(
        "CT-8", ev_kwargs("acct", "contract", "d", before=acct_order()), (), "contract", none(), id="CT-8/delete"
    ),
    pytest.param(
        "CT-9",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded"),
            after=acct_order(
                "recorded",
                status="completed",
                payment_deadline="2026-03-01",
                is_invoiced=True,
                total_amount="999",
                lines=[],
            ),
        ),
        (ORDER_LINK,),
        "contract",
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {
                "status": "completed",
                "delivery_deadline": "2025-12-31",
                "payment_deadline": "2026-03-01",
                "is_invoiced": True,
                "delivery_status": "not_delivered",
            },
        },
        id="CT-9",
    ),
    pytest.param(
        "CT-9",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded", status="not_started"),
            after=acct_order("recorded", status="fully_delivered"),
        ),
        (ORDER_LINK,),
        "contract",
        # CRM orders have no fully_delivered status: it stays in progress (delivery is CT-11's)
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {
                "status": "in_progress",
                "delivery_deadline": "2025-12-31",
                "payment_deadline": "2026-01-31",
                "is_invoiced": False,
                "delivery_status": "not_delivered",
            },
        },
        id="CT-9/fully_delivered",
    ),
    pytest.param(
        "CT-9",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded", status="in_progress"),
            after=acct_order("recorded", status="fully_delivered"),
        ),
        (ORDER_LINK,),
        "contract",
        none(because="X-2", rules=["CT-9", "X-2"]),
        id="CT-9/in_progress-to-fully_delivered-none",
    ),
    pytest.param(
        "CT-9",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded"),
            after=acct_order("recorded", total_amount="999", lines=[]),
        ),
        (ORDER_LINK,),
        "contract",
        none(because="X-2", rules=["CT-9", "X-2"]),
        id="CT-9/other-fields-none",
    ),
    pytest.param(
        "CT-10",
        ev_kwargs("acct", "contract", "u", before=acct_order("proposed"), after=acct_order("recorded")),
        (ORDER_LINK,),
        "contract",
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {"revenue_status": "recorded", "revenue_entries": ENTRIES},
        },
        id="CT-10",
    ),
    pytest.param(
        "CT-10",
        ev_kwargs(
            "acct", "contract", "u", before=acct_order("proposed"), after=acct_order("not_recorded", revenue_entries=[])
        ),
        (ORDER_LINK,),
        "contract",
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {"revenue_status": "rejected", "revenue_entries": []},
        },
        id="CT-10/reject",
    ),
]


@pytest.mark.parametrize(CASE_PARAMS, CONTRACT_CASES)
def test_acct_contract_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    check_case(rule_id, kwargs, links, order_target, expect, rules)


# --- CT-7 cancellation proposal ----------------------------------------------------------------


def test_ct7_propose_revenue_cancel_adds_a_proposed_negative_line(rules: RuleBook) -> None:
    rule = "CT-7"
    state = base_state("contract", (ORDER_LINK,))
    ev = event(
        "crm", "sale_order", "u", action="propose_revenue_cancel", before=order("recorded"), after=order("recorded")
    )
    decision = run(ev, state, rules)
    command = only_command(decision)
    assert command.rule == rule
    assert (command.target, command.entity, command.op) == (System.ACCT, "contract", Op.UPDATE)
    assert command.key == CommandKey(id="ao-1", code="DH1")
    # one line of the contract's revenue-recognition table, named by the proposal that added it (so a
    # replay adds it once), for the order's total, negated
    assert command.fields == {
        "revenue_entries": [{"id": f"cancel:{ev.event_id}", "amount": "-200000", "status": "proposed"}]
    }
    assert (decision.audit.rule, decision.audit.rules) == (rule, [rule])


def test_ct7_without_a_total_to_cancel_is_none(rules: RuleBook) -> None:
    without_total = {k: v for k, v in order("recorded").items() if k != "total_amount"}
    decision = run(
        event("crm", "sale_order", "u", action="propose_revenue_cancel", before=without_total, after=without_total),
        base_state("contract", (ORDER_LINK,)),
        rules,
    )
    assert_none(decision, "CT-7", because="total_amount")


def test_ct7_is_not_a_rule_for_sale_order_tenants(rules: RuleBook) -> None:
    decision = run(
        event(
            "crm", "sale_order", "u", action="propose_revenue_cancel", before=order("recorded"), after=order("recorded")
        ),
        base_state("sale_order", (ORDER_LINK,)),
        rules,
    )
    assert decision.commands == [] and decision.audit.rules == []
    assert "no rule" in decision.audit.reason


# --- CT-10 a revenue line recorded in accounting ---------------------------------------------


def test_ct10_a_revenue_line_recorded_in_accounting_goes_back_to_crm(rules: RuleBook) -> None:
    rule = "CT-10"
    proposed = [*ENTRIES, {"id": "cancel:1", "amount": "-200000", "status": "proposed"}]
    recorded = [*ENTRIES, {"id": "cancel:1", "amount": "-200000", "status": "recorded"}]
    ev = event(
        "acct",
        "contract",
        "u",
        before=acct_order("recorded", revenue_entries=proposed),
        after=acct_order("recorded", revenue_entries=recorded),
    )
    decision = run(ev, base_state("contract", (ORDER_LINK,)), rules)
    command = only_command(decision)
    assert (command.rule, command.target, command.entity, command.op, command.key) == (
        rule,
        System.CRM,
        "sale_order",
        Op.UPDATE,
        CommandKey(id="o-1", code="DH1"),
    )
    assert command.fields == {"revenue_entries": recorded, "revenue_status": "recorded"}
    assert (decision.audit.action, decision.audit.rule, decision.audit.rules) == ("record_revenue", rule, [rule])


# --- order_target: a tenant gets SO-* or CT-* commands, never both -----------------------------

ORDER_EVENTS = [
    ev_kwargs("crm", "sale_order", after=order("proposed")),
    ev_kwargs("crm", "sale_order", action="clone", after=order("proposed")),
    ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("proposed", total_amount="1")),
    ev_kwargs("crm", "sale_order", "u", before=order("draft"), after=order("proposed")),
    ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("draft")),
    ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")),
    ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("rejected")),
    ev_kwargs(
        "crm", "sale_order", "u", action="propose_revenue_cancel", before=order("recorded"), after=order("recorded")
    ),
    ev_kwargs("crm", "sale_order", "d", before=order()),
    ev_kwargs("acct", "contract", "u", before=acct_order(), after=acct_order(status="completed")),
    ev_kwargs("acct", "contract", "u", before=acct_order("proposed"), after=acct_order("recorded")),
    ev_kwargs("acct", "contract", "u", before=acct_order("proposed"), after=acct_order("not_recorded")),
    ev_kwargs("acct", "sale_order", "u", before=acct_order("proposed"), after=acct_order("recorded")),
    ev_kwargs("acct", "sale_order", "u", before=acct_order("proposed"), after=acct_order("not_recorded")),
]


@pytest.mark.parametrize(("order_target", "foreign"), [("sale_order", "CT-"), ("contract", "SO-")])
def test_order_target_selects_so_or_ct_rules(order_target: str, foreign: str, rules: RuleBook) -> None:
    own = "SO-" if foreign == "CT-" else "CT-"
    emitted = []
    for kwargs in ORDER_EVENTS:
        decision = run(event(**kwargs), base_state(order_target, (ORDER_LINK,)), rules)
        assert not [r for r in decision.audit.rules if r.startswith(foreign)], (kwargs, decision.audit)
        assert not [c for c in decision.commands if c.rule.startswith(foreign)]
        emitted += [c.rule for c in decision.commands]
    assert emitted and all(r.startswith(own) for r in emitted)


def test_order_target_defaults_to_sale_order(rules: RuleBook) -> None:
    decision = run(event("crm", "sale_order", after=order("proposed"), tenant="t-new"), FakeState(), rules)
    assert [c.rule for c in decision.commands] == ["CUS-10", "PRD-1", "SO-1"]  # nothing linked yet
