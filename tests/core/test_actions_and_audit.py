"""Which action an event means (derived from op and before/after, or explicit; one no rule takes),
and what every decision carries: deterministic command ids and the audit record.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.names import System
from streams.core.commands import VALUE_MAPS, mapped_fields
from streams.core.contract import Action
from streams.core.decide import decide
from streams.core.errors import BadInput
from streams.core.rules import Effect, RuleBook
from streams.core.transitions import derive_action
from tests.core.rule_cases import (
    CATEGORY,
    CUSTOMER,
    NOW,
    POLICY,
    VOUCHER,
    T,
    acct_invoice,
    acct_order,
    base_state,
    crm_invoice,
    ev_kwargs,
    order,
    run,
)
from tests.fakes import FakeState, event

# --- action derivation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "entity", "op", "before", "after", "action"),
    [
        ("crm", "sale_order", "c", None, order("draft"), Action.CREATE),
        ("crm", "sale_order", "r", None, order("proposed"), Action.CREATE),
        ("crm", "sale_order", "d", order(), None, Action.DELETE),
        ("crm", "sale_order", "u", None, order(), Action.UPDATE),
        ("crm", "sale_order", "u", order("proposed"), order("proposed", total_amount="1"), Action.UPDATE),
        ("crm", "sale_order", "u", order("draft"), order("proposed"), Action.PROPOSE_REVENUE),
        ("crm", "sale_order", "u", order("proposed"), order("draft"), Action.WITHDRAW_REVENUE),
        ("crm", "sale_order", "u", order("recorded"), order("draft"), Action.UPDATE),
        ("crm", "sale_order", "u", order("proposed"), order("recorded"), Action.RECORD_REVENUE),
        ("crm", "sale_order", "u", order("proposed"), order("rejected"), Action.REJECT_REVENUE),
        ("acct", "sale_order", "u", acct_order("proposed"), acct_order("recorded"), Action.RECORD_REVENUE),
        ("acct", "sale_order", "u", acct_order("proposed"), acct_order("not_recorded"), Action.REJECT_REVENUE),
        ("acct", "contract", "u", acct_order("recorded"), acct_order("not_recorded"), Action.REJECT_REVENUE),
        ("acct", "contract", "u", acct_order("proposed"), acct_order("recorded"), Action.RECORD_REVENUE),
        ("acct", "contract", "u", {**acct_order(), "revenue_status": None}, acct_order("not_recorded"), Action.UPDATE),
        ("crm", "invoice", "u", crm_invoice("proposed"), crm_invoice("draft"), Action.WITHDRAW_ISSUE),
        ("crm", "invoice", "u", crm_invoice("draft"), crm_invoice("proposed"), Action.UPDATE),
        ("crm", "invoice", "u", crm_invoice("proposed"), crm_invoice("approved"), Action.UPDATE),
        ("acct", "invoice", "u", acct_invoice("proposed"), acct_invoice("approved"), Action.APPROVE),
        ("acct", "invoice", "u", acct_invoice("proposed"), acct_invoice("rejected"), Action.REJECT),
        ("acct", "invoice", "u", acct_invoice("approved"), acct_invoice("issued"), Action.ISSUE),
        ("acct", "invoice", "u", acct_invoice("approved"), acct_invoice("issue_refused"), Action.REFUSE_ISSUE),
        ("acct", "invoice", "u", acct_invoice("issued"), acct_invoice("cancelled"), Action.CANCEL),
        ("acct", "invoice", "u", acct_invoice("issued"), acct_invoice("issued", send_status="sent"), Action.UPDATE),
        ("acct", "sales_voucher", "u", VOUCHER, {**VOUCHER, "invoice_no": "0000123"}, Action.ASSIGN_INVOICE_NO),
        ("acct", "sales_voucher", "u", VOUCHER, {**VOUCHER, "einvoice_published": True}, Action.PUBLISH_EINVOICE),
        # published once: a later edit of the voucher is an update, not another publication
        (
            "acct",
            "sales_voucher",
            "u",
            {**VOUCHER, "einvoice_published": True},
            {**VOUCHER, "einvoice_published": True, "code": "X"},
            Action.UPDATE,
        ),
        (
            "acct",
            "sales_voucher",
            "u",
            {**VOUCHER, "invoice_no": "1"},
            {**VOUCHER, "invoice_no": "1", "code": "X"},
            Action.UPDATE,
        ),
        ("crm", "customer", "u", CUSTOMER, {**CUSTOMER, "name": "N"}, Action.UPDATE),
    ],
)
def test_derive_action(system: str, entity: str, op: str, before: Any, after: Any, action: Action) -> None:
    assert derive_action(event(system, entity, op, before=before, after=after)) is action


def test_an_explicit_action_wins_over_the_derived_one() -> None:
    ev = event("crm", "sale_order", "u", action="merge", before=order("draft"), after=order("proposed"))
    assert derive_action(ev) is Action.MERGE


def test_a_derived_transition_no_rule_of_that_system_takes_is_an_update(rules: RuleBook) -> None:
    """acct not_recorded -> proposed (the connector's echo of a re-proposal) is not bad input."""
    ev = event(
        "acct",
        "sale_order",
        "u",
        before={"id": "ao-1", "code": "DH1", "revenue_status": "not_recorded"},
        after={"id": "ao-1", "code": "DH1", "revenue_status": "proposed"},
        origin="sync",
    )
    decision = run(ev, base_state(), rules)
    assert decision.audit.action == "update" and decision.commands == []
    assert "SO-7" in decision.audit.rules


def test_an_explicit_action_no_rule_takes_is_still_bad_input(rules: RuleBook) -> None:
    ev = event("acct", "sale_order", "u", action="propose_revenue", before={"id": "ao-1"}, after={"id": "ao-1"})
    with pytest.raises(BadInput) as raised:
        run(ev, base_state(), rules)
    assert raised.value.kind == "unknown_action"
    assert raised.value.message == (
        f"event {ev.event_id!r}: action 'propose_revenue' does not apply to acct sale_order (no rule of the "
        'matrix takes it) (JSON pointer "/action")'
    )


def test_a_lifecycle_action_without_a_rule_is_audited_none(rules: RuleBook) -> None:
    """Category deletes are not in the original: none, audited, not a dead letter."""
    decision = run(event("crm", "product_category", "d", before=CATEGORY, after=None), base_state(), rules)
    assert decision.commands == []
    assert "no rule" in decision.audit.reason and "product_category delete" in decision.audit.reason


# --- status vocabularies ------------------------------------------------------------------------


ORDER_WITH = {"id": "o-1", "code": "DH1"}


@pytest.mark.parametrize(
    ("rule_id", "source", "record", "written"),
    [
        # CRM's draft and rejected have no acct value of their own: "not recorded" (spec: Status vocabularies)
        (
            "SO-2",
            System.CRM,
            {**ORDER_WITH, "revenue_status": "rejected"},
            {"code": "DH1", "revenue_status": "not_recorded", "crm_id": "o-1"},
        ),
        (
            "SO-2",
            System.CRM,
            {**ORDER_WITH, "revenue_status": "draft"},
            {"code": "DH1", "revenue_status": "not_recorded", "crm_id": "o-1"},
        ),
        (
            "SO-2",
            System.CRM,
            {**ORDER_WITH, "revenue_status": "recorded"},
            {"code": "DH1", "revenue_status": "recorded", "crm_id": "o-1"},
        ),
        # CRM orders have no fully_delivered status (CT-9; delivery is CT-11's)
        ("CT-9", System.ACCT, {"id": "ao-1", "code": "DH1", "status": "fully_delivered"}, {"status": "in_progress"}),
    ],
)
def test_a_copied_status_is_written_in_the_targets_vocabulary(
    rule_id: str, source: System, record: dict[str, Any], written: dict[str, Any], rules: RuleBook
) -> None:
    """What a rule writes, as ``ops.reconcile`` also compares it: no rule of ``decide`` copies a CRM
    order while it is draft or rejected (SO-2's condition), so the map is checked where it is read."""
    rule = rules.by_id(rule_id)
    assert mapped_fields(rule, rule.write_target(), Action.UPDATE, record, source) == written


def test_every_status_map_is_read_by_a_rule_that_copies_that_status(rules: RuleBook) -> None:
    """A value map no rule reaches is a promise nobody keeps. The maps are of orders' statuses (spec
    "Status vocabularies"): each (target, field) of ``VALUE_MAPS`` is copied to an order of that target
    by some rule, which writes every field or names ``field`` among its ``only_fields``."""
    copied = {
        (rule.target, field)
        for rule in rules.rules
        if rule.effect is Effect.WRITE and rule.target_entity in ("sale_order", "contract")
        for target, field in VALUE_MAPS
        if rule.target is target and (rule.only_fields is None or field in rule.only_fields)
    }
    assert set(VALUE_MAPS) == copied, f"mapped but never copied: {set(VALUE_MAPS) - copied}"


@pytest.mark.parametrize("rule_id", ["SO-8", "CT-10"])
def test_an_accounting_not_recorded_reaches_crm_as_rejected(rule_id: str, rules: RuleBook) -> None:
    """Spec "Status vocabularies": accounting's "not recorded" is CRM's "rejected" (set by the rule)."""
    entity = "sale_order" if rule_id == "SO-8" else "contract"
    record = {"id": "ao-1", "code": "DH1", "crm_id": "o-1", "revenue_status": "not_recorded"}
    ev = event(
        **ev_kwargs("acct", entity, "u", before={**record, "revenue_status": "proposed"}, after=record),
    )
    decision = decide(ev, FakeState(default_order_target=entity), rules, now_ms=NOW)
    (command,) = decision.commands
    assert command.rule == rule_id and command.target is System.CRM
    assert command.fields["revenue_status"] == "rejected"


# --- command ids -------------------------------------------------------------------------------


def test_command_ids_are_deterministic(rules: RuleBook) -> None:
    kwargs = ev_kwargs("acct", "price_policy", after=POLICY)
    ev = event(**kwargs, event_id="ev-fixed")
    first = decide(ev, FakeState(), rules, now_ms=NOW)
    second = decide(ev, FakeState(), rules, now_ms=NOW + 5_000)
    assert len(first.commands) >= 2, "the policy should split into copies"
    assert [c.command_id for c in first.commands] == [c.command_id for c in second.commands]
    assert len({c.command_id for c in first.commands}) == len(first.commands)  # one id per target record
    other = decide(event(**kwargs, event_id="ev-other"), FakeState(), rules, now_ms=NOW)
    assert not {c.command_id for c in other.commands} & {c.command_id for c in first.commands}
    assert all(len(c.command_id) == 64 for c in first.commands)  # sha256 hex


def test_audit_record_describes_the_change(rules: RuleBook) -> None:
    ev = event("crm", "sale_order", after=order("proposed"))
    decision = run(ev, base_state(), rules)
    audit = decision.audit
    assert (audit.tenant, audit.system, audit.entity, audit.record_id, audit.event_id, audit.action) == (
        T,
        System.CRM,
        "sale_order",
        "o-1",
        ev.event_id,
        "create",
    )
    assert audit.message_key == "t1:sale_order:o-1"
    assert audit.ts_ms == NOW
    assert [c.key for c in audit.commands] == [decision.commands[0].key.as_text()]
