"""A company's own sync settings (``config.tenants`` version 2): rules switched off, field mappings, and the
settings revision each decision names; what settings are refused and why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from common.names import System
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import Note
from streams.core.rules import RuleBook
from streams.core.sync_settings import FieldMapping, SettingsError, SyncSettings, parse_settings, parse_tenant_settings
from tests.core.rule_cases import (
    CUSTOMER,
    NOW,
    ORDER_LINK,
    PRODUCT,
    VOUCHER,
    T,
    acct_order,
    base_state,
    order,
    run,
)
from tests.fakes import FakeState, event


def with_settings(state: FakeState, **settings: Any) -> FakeState:
    state.settings[T] = SyncSettings(schema_version=2, tenant=T, **settings)
    return state


def notes(decision) -> list[tuple[Note, str | None, str]]:
    return [(note.tag, note.rule, note.text) for note in decision.audit.notes]


# --- rules switched off ------------------------------------------------------------------------


def test_a_rule_switched_off_sends_nothing_and_the_audit_says_which_revision(rules: RuleBook) -> None:
    """Accounting is the product master: PRD-1 off, a CRM product edit goes nowhere."""
    state = with_settings(base_state(), revision=3, rules_off={"PRD-1"})
    decision = run(event("crm", "product", "u", before=PRODUCT, after={**PRODUCT, "name": "Trà đen"}), state, rules)
    assert decision.commands == []
    assert (decision.audit.rule, decision.audit.rules, decision.audit.settings_revision) == ("PRD-1", ["PRD-1"], 3)
    assert notes(decision) == [
        (Note.SWITCHED_OFF, "PRD-1", "PRD-1: switched off in the tenant's settings (revision 3): none")
    ]


def test_other_rules_of_the_tenant_and_other_tenants_are_untouched(rules: RuleBook) -> None:
    state = with_settings(base_state(), revision=3, rules_off={"PRD-1"})
    edit = {**CUSTOMER, "phone": "0909"}
    decision = run(event("crm", "customer", "u", before=CUSTOMER, after=edit), state, rules)
    assert [(c.rule, c.fields["phone"]) for c in decision.commands] == [("CUS-3", "0909")]
    assert decision.audit.settings_revision == 3
    other = run(event("crm", "product", "c", after={**PRODUCT, "code": "SP9"}, tenant="t2"), state, rules)
    assert [c.rule for c in other.commands] == ["PRD-1"]
    assert other.audit.settings_revision == 0


def test_a_product_rule_off_is_not_sent_first_for_an_order(rules: RuleBook) -> None:
    """PRD-1 off: an order naming a product accounting has not linked goes alone, without a PRD-1
    dependency (accounting is expected to have it); the customer dependency still goes first."""
    state = with_settings(FakeState(order_targets={T: "sale_order"}), revision=1, rules_off={"PRD-1"})
    state.remember(T, "customer", CUSTOMER)
    state.remember(T, "product", PRODUCT)
    decision = run(event("crm", "sale_order", after=order()), state, rules)
    assert [c.rule for c in decision.commands] == ["CUS-10", "SO-1"]
    customer, sale_order = decision.commands
    assert sale_order.depends_on == [customer.command_id]
    assert (Note.SWITCHED_OFF, "PRD-1") in [(tag, rule) for tag, rule, _ in notes(decision)]
    assert any("product SP1 not sent first" in text for _, _, text in notes(decision))


def test_a_derived_rule_off_sends_nothing_and_sends_the_change_once_switched_on(rules: RuleBook) -> None:
    state = with_settings(base_state("sale_order", (ORDER_LINK,)), revision=2, rules_off={"SO-13"})
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    decide_for_order(event("acct", "sale_order", after=acct_order("recorded")), aggregate, state, rules, now_ms=NOW)
    decision = decide_for_order(event("acct", "sales_voucher", after=VOUCHER), aggregate, state, rules, now_ms=NOW)
    assert [c.rule for c in decision.commands] == ["SO-9", "SO-11"]
    assert decision.audit.settings_revision == 2
    assert (Note.SWITCHED_OFF, "SO-13") in [(tag, rule) for tag, rule, _ in notes(decision)]
    # switched on again: the next change of the order sends SO-13's value, which it never sent
    state.settings[T] = SyncSettings(schema_version=2, tenant=T, revision=3)
    receipt = {"id": "r-1", "code": "PT1", "order_id": "ao-1", "amount": "1000"}
    decision = decide_for_order(event("acct", "receipt", after=receipt), aggregate, state, rules, now_ms=NOW)
    assert ("SO-13", {"delivery_status": "delivered"}) in [(c.rule, c.fields) for c in decision.commands]


# --- field mappings -------------------------------------------------------------------------------


MAPPINGS = (
    FieldMapping(system=System.CRM, entity="customer", source_field="custom_field12", target_field="website"),
    FieldMapping(
        system=System.CRM,
        entity="customer",
        source_field="custom_field3",
        target_field="customer_group",
        type="choice",
        values={"Khách lẻ": "retail", "Đại lý": "dealer"},
    ),
    FieldMapping(system=System.CRM, entity="customer", value="CRM", target_field="source_channel"),
    FieldMapping(
        system=System.CRM, entity="customer", source_field="custom_date1", target_field="founded", type="date"
    ),
    FieldMapping(
        system=System.CRM, entity="customer", source_field="custom_limit", target_field="credit_limit", type="money"
    ),
)


def test_field_mappings_convert_and_write_into_the_other_systems_record(rules: RuleBook) -> None:
    state = with_settings(base_state(), revision=5, field_mappings=MAPPINGS)
    before = {**CUSTOMER, "custom_field12": "a.vn", "custom_field3": "Khách lẻ"}
    after = {
        **before,
        "custom_field12": "b.vn",
        "custom_field3": "Đại lý",
        "custom_date1": "2020-03-04T00:00:00Z",
        "custom_limit": "1500000.50",
    }
    decision = run(event("crm", "customer", "u", before=before, after=after), state, rules)
    (command,) = decision.commands
    assert command.rule == "CUS-3"
    assert {
        k: command.fields[k] for k in ("website", "customer_group", "source_channel", "founded", "credit_limit")
    } == {
        "website": "b.vn",
        "customer_group": "dealer",
        "source_channel": "CRM",
        "founded": "2020-03-04",
        "credit_limit": "1500000.50",
    }
    assert decision.audit.settings_revision == 5


def test_a_value_a_mapping_cannot_convert_is_left_out_and_said_the_rest_goes(rules: RuleBook) -> None:
    state = with_settings(base_state(), revision=5, field_mappings=MAPPINGS)
    after = {**CUSTOMER, "phone": "0909", "custom_field3": "Khách VIP", "custom_limit": "nhiều"}
    decision = run(event("crm", "customer", "u", before=CUSTOMER, after=after), state, rules)
    (command,) = decision.commands
    assert command.fields["phone"] == "0909"
    assert "customer_group" not in command.fields and "credit_limit" not in command.fields
    assert [(tag, rule) for tag, rule, _ in notes(decision)] == [
        (Note.FIELD_NOT_MAPPED, "CUS-3"),
        (Note.FIELD_NOT_MAPPED, "CUS-3"),
    ]
    texts = [text for _, _, text in notes(decision)]
    assert "'Khách VIP' is not one of the mapped choices" in texts[0]
    assert "'nhiều' is not a number" in texts[1]


def test_a_change_only_to_a_mapped_source_field_is_sent(rules: RuleBook) -> None:
    """X-2 compares what the rule writes, mapped fields included: a custom field edit is a change."""
    state = with_settings(base_state(), field_mappings=MAPPINGS[:1])
    before = {**CUSTOMER, "custom_field12": "a.vn"}
    decision = run(
        event("crm", "customer", "u", before=before, after={**before, "custom_field12": "b.vn"}), state, rules
    )
    assert [c.fields["website"] for c in decision.commands] == ["b.vn"]


def test_mappings_apply_to_a_customer_pulled_into_accounting(rules: RuleBook) -> None:
    state = with_settings(FakeState(), field_mappings=MAPPINGS[:1])
    state.remember(T, "customer", {**CUSTOMER, "custom_field12": "a.vn"})
    decision = run(
        event("acct", "customer", "u", action="pull", after={"id": "pull-1", "codes": ["KH1"]}), state, rules
    )
    assert [(c.rule, c.fields["website"]) for c in decision.commands] == [("CUS-10", "a.vn")]


# --- what settings are refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"schema_version": 2, "rules_off": ["X-1"]}, "X-1 cannot be switched off (echo prevention"),
        ({"schema_version": 2, "rules_off": ["X-4"]}, "X-4 cannot be switched off (dependency order"),
        ({"schema_version": 2, "rules_off": ["PP-2"]}, "PP-2 cannot be switched off (it keeps CRM's read-only"),
        ({"schema_version": 2, "rules_off": ["SO-8"]}, "SO-8 cannot be switched off (CRM's revenue_status"),
        ({"schema_version": 2, "rules_off": ["PRD-99"]}, "PRD-99 is not a rule of the matrix"),
        ({"schema_version": 1, "rules_off": ["PRD-1"]}, "need schema_version 2"),
        ({"schema_version": 3}, "schema_version 3; this processor reads versions 1, 2"),
        ({"schema_version": 2, "rule_off": ["PRD-1"]}, "unknown setting(s) rule_off"),
        ({"schema_version": 2, "tenant": "other"}, "value names tenant 'other' but the key is 't1'"),
        ({"schema_version": 2, "order_target": "invoice"}, "order_target"),
        ({"schema_version": 2, "revision": -1}, "revision"),
        (
            {
                "schema_version": 2,
                "field_mappings": [
                    {"system": "crm", "entity": "customer", "source_field": "a", "target_field": "website"},
                    {"system": "crm", "entity": "customer", "source_field": "b", "target_field": "website"},
                ],
            },
            "two sources for acct customer website: crm customer a -> acct website and crm customer b -> acct website",
        ),
        (
            {
                "schema_version": 2,
                "field_mappings": [{"system": "crm", "entity": "voucher", "value": "x", "target_field": "y"}],
            },
            "entity 'voucher' is not an entity of crm",
        ),
        (
            {
                "schema_version": 2,
                "field_mappings": [
                    {"system": "crm", "entity": "customer", "value": "x", "target_field": "n", "type": "number"}
                ],
            },
            "the fixed value 'x' is not a number",
        ),
        (
            {"schema_version": 2, "field_mappings": [{"system": "crm", "entity": "customer", "target_field": "n"}]},
            "give either source_field or value",
        ),
        (
            {
                "schema_version": 2,
                "field_mappings": [
                    {"system": "crm", "entity": "customer", "source_field": "a", "target_field": "n", "type": "choice"}
                ],
            },
            "a choice mapping needs values",
        ),
        ("[1]", "not a JSON object"),
    ],
)
def test_settings_that_cannot_be_used_are_refused_saying_why(value: Any, message: str, rules: RuleBook) -> None:
    with pytest.raises(SettingsError) as refused:
        parse_settings(T, orjson.loads(value) if isinstance(value, str) else value, rules)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_every_rule_may_be_switched_off_but_the_locked_ones(rules: RuleBook) -> None:
    switchable = [rule.id for rule in rules.rules if not rule.locked]
    settings = parse_settings(T, {"schema_version": 2, "rules_off": switchable}, rules)
    assert settings.rules_off == frozenset(switchable)
    assert sorted(rule.id for rule in rules.rules if rule.locked) == ["CT-10", "PP-2", "SO-8"]


def test_the_worker_reads_version_1_as_before_and_version_2_with_its_additions(rules: RuleBook) -> None:
    v1 = parse_tenant_settings(T, b'{"schema_version": 1, "tenant": "t1", "order_target": "contract"}', rules)
    assert (v1.order_target, v1.revision, v1.rules_off, v1.field_mappings) == ("contract", 0, frozenset(), ())
    raw = orjson.dumps(
        {
            "schema_version": 2,
            "tenant": T,
            "revision": 4,
            "rules_off": ["PRD-1"],
            "field_mappings": [MAPPINGS[1].model_dump(mode="json")],
        }
    )
    v2 = parse_tenant_settings(T, raw, rules)
    assert (v2.revision, v2.rules_off, v2.field_mappings) == (4, frozenset({"PRD-1"}), (MAPPINGS[1],))
    assert parse_tenant_settings(T, orjson.dumps(v2.document()), rules) == v2
    with pytest.raises(ValueError, match="not JSON"):
        parse_tenant_settings(T, b"{", rules)


def test_a_derived_rule_off_leaves_the_others_of_the_order(rules: RuleBook) -> None:
    """SO-9 (delivered quantities) off: the statuses a voucher moves (SO-11, SO-13) still go."""
    state = with_settings(base_state("sale_order", (ORDER_LINK,)), revision=2, rules_off={"SO-9"})
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    decide_for_order(event("acct", "sale_order", after=acct_order("recorded")), aggregate, state, rules, now_ms=NOW)
    decision = decide_for_order(event("acct", "sales_voucher", after=VOUCHER), aggregate, state, rules, now_ms=NOW)
    assert [c.rule for c in decision.commands] == ["SO-11", "SO-13"]
    assert [(tag, rule, text) for tag, rule, text in notes(decision) if tag is Note.SWITCHED_OFF] == [
        (Note.SWITCHED_OFF, "SO-9", "SO-9: switched off in the tenant's settings (revision 2): none")
    ]


def test_the_customer_rule_off_still_sends_the_product_first(rules: RuleBook) -> None:
    """CUS-10 off (the customers are accounting's): an order's product still goes first (PRD-1), and the
    audit names every customer code not sent."""
    state = with_settings(FakeState(order_targets={T: "sale_order"}), revision=1, rules_off={"CUS-10"})
    state.remember(T, "product", PRODUCT)
    decision = run(event("crm", "sale_order", after=order()), state, rules)
    assert [c.rule for c in decision.commands] == ["PRD-1", "SO-1"]
    assert [text for tag, _, text in notes(decision) if tag is Note.SWITCHED_OFF] == [
        "X-4: CUS-10 is switched off in the tenant's settings: customer KH1 not sent first "
        "(the target is expected to have them)"
    ]
    two = order(lines=[{**order()["lines"][0]}, {**order()["lines"][0], "line_id": "l2", "product_code": "SP2"}])
    state = with_settings(FakeState(order_targets={T: "sale_order"}), revision=1, rules_off={"PRD-1"})
    state.remember(T, "customer", CUSTOMER)
    decision = run(event("crm", "sale_order", after=two), state, rules)
    assert [text for tag, _, text in notes(decision) if tag is Note.SWITCHED_OFF] == [
        "X-4: PRD-1 is switched off in the tenant's settings: product SP1, SP2 not sent first "
        "(the target is expected to have them)"
    ]


CHOICE = FieldMapping(
    system=System.CRM,
    entity="customer",
    source_field="custom_field3",
    target_field="customer_group",
    type="choice",
    values={"Đại lý": "dealer"},
)


def test_a_mapping_that_cannot_convert_is_noted_under_the_rule_that_sends_the_record(rules: RuleBook) -> None:
    """Whatever path the customer takes to accounting (an order's dependency, a pull, the completion of a
    dependency sent by code), a value that cannot convert is left out and noted under that path's rule."""
    customer = {**CUSTOMER, "custom_field12": "a.vn", "custom_field3": "Khách VIP"}
    mapped = (MAPPINGS[0], CHOICE)
    # an order's dependency (X-4, CUS-10)
    state = with_settings(FakeState(order_targets={T: "sale_order"}), field_mappings=mapped)
    state.remember(T, "customer", customer)
    state.link(T, "product", "SP1", crm="p-1", acct="ap-1")
    decision = run(event("crm", "sale_order", after=order()), state, rules)
    sent = next(c for c in decision.commands if c.rule == "CUS-10")
    assert (sent.fields["website"], "customer_group" in sent.fields) == ("a.vn", False)
    assert [(tag, rule) for tag, rule, _ in notes(decision) if tag is Note.FIELD_NOT_MAPPED] == [
        (Note.FIELD_NOT_MAPPED, "CUS-10")
    ]
    # a pull (CUS-10)
    state = with_settings(FakeState(), field_mappings=mapped)
    state.remember(T, "customer", customer)
    pulled = run(event("acct", "customer", "u", action="pull", after={"id": "p", "codes": ["KH1"]}), state, rules)
    assert [(tag, rule) for tag, rule, _ in notes(pulled) if tag is Note.FIELD_NOT_MAPPED] == [
        (Note.FIELD_NOT_MAPPED, "CUS-10")
    ]
    # the completion of a dependency that went with its code only (the order before its customer)
    state = with_settings(FakeState(order_targets={T: "sale_order"}), field_mappings=mapped)
    state.link(T, "product", "SP1", crm="p-1", acct="ap-1")
    state.apply(run(event("crm", "sale_order", after=order()), state, rules))
    completed = run(event("crm", "customer", "c", after=customer), state, rules)
    sent = next(c for c in completed.commands if c.rule == "CUS-10")
    assert sent.fields["website"] == "a.vn" and "customer_group" not in sent.fields
    assert [(tag, rule) for tag, rule, _ in notes(completed) if tag is Note.FIELD_NOT_MAPPED] == [
        (Note.FIELD_NOT_MAPPED, "CUS-10")
    ]
