"""The customer rules (CUS-*) through ``decide``: the case table, a CRM merge (CUS-5) and
accounting's pull of CRM customers (CUS-10).
"""

from __future__ import annotations

from typing import Any

import pytest

from common.names import System
from streams.core.contract import AuditNote, CommandKey, Note, Op
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    ACCT_CUSTOMER,
    CASE_PARAMS,
    CUSTOMER,
    NEW_ACCT_CUSTOMER,
    T,
    assert_command,
    assert_none,
    base_state,
    check_case,
    copied,
    ev_kwargs,
    none,
    only_command,
    run,
)
from tests.fakes import FakeState, event

# --- the case table --------------------------------------------------------------------------


CUSTOMER_CASES = [
    # Customer
    pytest.param("CUS-1", ev_kwargs("crm", "customer", after=CUSTOMER), (), "sale_order", none(), id="CUS-1"),
    pytest.param(
        "CUS-2", ev_kwargs("crm", "customer", action="import", after=CUSTOMER), (), "sale_order", none(), id="CUS-2"
    ),
    pytest.param(
        "CUS-3",
        ev_kwargs("crm", "customer", "u", before=CUSTOMER, after={**CUSTOMER, "name": "Công ty A mới"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "customer",
            "op": "update",
            "key": {"id": "a-1", "code": "KH1"},
            "fields": copied(CUSTOMER, name="Công ty A mới"),
        },
        id="CUS-3",
    ),
    pytest.param(
        "CUS-3",
        ev_kwargs(
            "crm",
            "customer",
            "u",
            before={**CUSTOMER, "id": "c-9", "code": "KH9"},
            after={**CUSTOMER, "id": "c-9", "code": "KH9", "name": "Chưa đồng bộ"},
        ),
        (),
        "sale_order",
        # not linked *yet* as far as this worker knows: decided again once its tables catch up
        none(because="not linked", rests_on_absence=True),
        id="CUS-3/unlinked-none",
    ),
    pytest.param("CUS-4", ev_kwargs("crm", "customer", "d", before=CUSTOMER), (), "sale_order", none(), id="CUS-4"),
    pytest.param(
        "CUS-5",
        # absorbing other records changed none of the survivor's fields: nothing to write
        ev_kwargs("crm", "customer", "u", action="merge", before=CUSTOMER, after=CUSTOMER, merged_ids=["c-7"]),
        (),
        "sale_order",
        none(because="X-2", rules=["CUS-5", "X-2"]),
        id="CUS-5/survivor-unchanged-none",
    ),
    pytest.param(
        "CUS-6",
        ev_kwargs("acct", "customer", after=NEW_ACCT_CUSTOMER),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "customer",
            "op": "upsert",
            "key": {"id": None, "code": "KH2"},
            "fields": copied(NEW_ACCT_CUSTOMER),
        },
        id="CUS-6",
    ),
    pytest.param(
        "CUS-7",
        ev_kwargs("acct", "customer", action="import", after=NEW_ACCT_CUSTOMER),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "customer",
            "op": "upsert",
            "key": {"id": None, "code": "KH2"},
            "fields": copied(NEW_ACCT_CUSTOMER),
        },
        id="CUS-7",
    ),
    pytest.param(
        "CUS-8",
        ev_kwargs("acct", "customer", "u", before=ACCT_CUSTOMER, after={**ACCT_CUSTOMER, "phone": "0909999999"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "customer",
            "op": "upsert",
            "key": {"id": "c-1", "code": "KH1"},
            "fields": copied(ACCT_CUSTOMER, phone="0909999999"),
        },
        id="CUS-8",
    ),
    pytest.param(
        "CUS-9", ev_kwargs("acct", "customer", "d", before=ACCT_CUSTOMER), (), "sale_order", none(), id="CUS-9"
    ),
]


@pytest.mark.parametrize(CASE_PARAMS, CUSTOMER_CASES)
def test_customer_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    check_case(rule_id, kwargs, links, order_target, expect, rules)


# --- CUS-5 merge -------------------------------------------------------------------------------


def test_cus5_merge_updates_the_survivors_linked_acct_customer_and_deletes_nothing(rules: RuleBook) -> None:
    rule = "CUS-5"
    state = base_state()
    survivor = {**CUSTOMER, "phone": "0902000002", "email": "ketoan@example.vn"}
    decision = run(
        event("crm", "customer", "u", action="merge", before=CUSTOMER, after=survivor, merged_ids=["c-7", "c-8"]),
        state,
        rules,
    )
    assert_command(
        only_command(decision),
        decision,
        rule,
        {
            "target": "acct",
            "entity": "customer",
            "op": "update",
            "key": {"id": "a-1", "code": "KH1"},
            # the survivor's fields, not the merge's bookkeeping (merged_ids is the event's, not a field)
            "fields": copied(survivor),
        },
    )
    assert all(c.op is not Op.DELETE for c in decision.commands)
    assert "c-7" in decision.audit.reason and "not deleted" in decision.audit.reason


def test_cus5_merge_of_an_unlinked_survivor_is_none(rules: RuleBook) -> None:
    survivor = {**CUSTOMER, "id": "c-5", "code": "KH5"}
    decision = run(
        event(
            "crm", "customer", "u", action="merge", before=survivor, after={**survivor, "name": "X"}, merged_ids=["c-6"]
        ),
        base_state(),
        rules,
    )
    assert_none(decision, "CUS-5", because="not linked", rests_on_absence=True)


# --- CUS-10 pull -------------------------------------------------------------------------------


def pull_state(rules: RuleBook) -> FakeState:
    """KH1 is linked to acct a-1; CRM customers KH2 and KH3 were created in CRM (CUS-1) and not synced."""
    state = base_state()
    for record in (
        {**CUSTOMER, "id": "c-2", "code": "KH2", "name": "B"},
        {**CUSTOMER, "id": "c-3", "code": "KH3", "name": "C"},
    ):
        state.apply(run(event("crm", "customer", after=record), state, rules))
    return state


def test_cus10_pull_by_codes_upserts_each_requested_crm_customer(rules: RuleBook) -> None:
    rule = "CUS-10"
    decision = run(
        event("acct", "customer", action="pull", after={"id": "req-1", "codes": ["KH2", "KH1", "KH404"]}),
        pull_state(rules),
        rules,
    )
    assert [c.rule for c in decision.commands] == [rule, rule]
    kh1, kh2 = decision.commands
    assert [(c.target, c.entity, c.op, c.read_only, c.depends_on) for c in (kh1, kh2)] == [
        (System.ACCT, "customer", Op.UPSERT, False, [])
    ] * 2
    assert kh1.key == CommandKey(id="a-1", code="KH1")  # already linked: by id
    assert kh1.fields == copied(CUSTOMER)
    assert kh1.source.id == "c-1" and kh1.source.system is System.ACCT
    assert kh2.key == CommandKey(id=None, code="KH2")  # not yet linked: by code
    assert kh2.fields == copied(CUSTOMER, code="KH2", name="B")
    assert kh2.source.id == "c-2" and kh2.source.system is System.ACCT
    assert (decision.audit.rule, decision.audit.rules) == (rule, [rule])
    assert "KH404" in decision.audit.reason  # an unknown code is reported, not silently dropped
    assert decision.rests_on_absence is True  # KH404 may be known once this worker catches up
    assert decision.links == []  # the request is not a customer


def test_cus10_pull_without_codes_takes_every_unlinked_crm_customer(rules: RuleBook) -> None:
    decision = run(event("acct", "customer", action="pull", after={"id": "req-2"}), pull_state(rules), rules)
    assert [(c.rule, c.key, c.fields) for c in decision.commands] == [
        ("CUS-10", CommandKey(code="KH2"), copied(CUSTOMER, code="KH2", name="B")),
        ("CUS-10", CommandKey(code="KH3"), copied(CUSTOMER, code="KH3", name="C")),
    ]
    assert (decision.audit.rule, decision.audit.rules) == ("CUS-10", ["CUS-10"])
    # "every one not yet linked" is read from what this worker has seen: decided again on catching up
    assert decision.rests_on_absence is True


def test_cus10_a_customer_deleted_in_crm_is_not_pulled(rules: RuleBook) -> None:
    state = pull_state(rules)
    kh2 = {**CUSTOMER, "id": "c-2", "code": "KH2", "name": "B"}
    deleted = run(event("crm", "customer", "d", before=kh2), state, rules)
    assert_none(deleted, "CUS-4")
    state.apply(deleted)
    by_code = run(event("acct", "customer", action="pull", after={"id": "req-6", "codes": ["KH2"]}), state, rules)
    assert_none(by_code, "CUS-10", because="not known to the processor: KH2", rests_on_absence=True)
    every = run(event("acct", "customer", action="pull", after={"id": "req-7"}), state, rules)
    assert [(c.rule, c.key.code) for c in every.commands] == [("CUS-10", "KH3")]


def test_cus10_pulled_customers_are_linked_and_not_pulled_again(rules: RuleBook) -> None:
    state = pull_state(rules)
    state.apply(run(event("acct", "customer", action="pull", after={"id": "req-3", "codes": ["KH2"]}), state, rules))
    # the acct connector created KH2; its CDC (origin sync) links it to the CRM customer by code
    state.apply(
        run(event("acct", "customer", after={**CUSTOMER, "id": "a-2", "code": "KH2"}, origin="sync"), state, rules)
    )
    assert state.linked_id(T, System.ACCT, "customer", code="KH2", other_id=None) == "a-2"
    assert state.linked_id(T, System.CRM, "customer", code=None, other_id="a-2") == "c-2"
    decision = run(event("acct", "customer", action="pull", after={"id": "req-4"}), state, rules)
    assert [c.key.code for c in decision.commands] == ["KH3"]


def test_cus10_pull_with_nothing_unlinked_is_none(rules: RuleBook) -> None:
    decision = run(event("acct", "customer", action="pull", after={"id": "req-5"}), base_state(), rules)
    assert_none(decision, "CUS-10", because="all linked", rests_on_absence=True)


def test_cus10_notes_name_the_unknown_codes_and_why_nothing_was_pulled(rules: RuleBook) -> None:
    some = run(
        event("acct", "customer", action="pull", after={"id": "req-8", "codes": ["KH404", "KH2", "KH405"]}),
        pull_state(rules),
        rules,
    )
    assert [c.key.code for c in some.commands] == ["KH2"]
    assert some.audit.notes == [
        AuditNote(
            tag=Note.PULL_UNKNOWN, rule="CUS-10", text="CUS-10: CRM customers not known to the processor: KH404, KH405"
        )
    ]
    none_known = run(
        event("acct", "customer", action="pull", after={"id": "req-9", "codes": ["KH404"]}), pull_state(rules), rules
    )
    assert none_known.audit.notes == [  # why nothing came first, then what was not known
        AuditNote(tag=Note.NOTHING_TO_PULL, rule="CUS-10", text="CUS-10: no CRM customer to pull"),
        AuditNote(tag=Note.PULL_UNKNOWN, rule="CUS-10", text="CUS-10: CRM customers not known to the processor: KH404"),
    ]
    all_linked = run(event("acct", "customer", action="pull", after={"id": "req-10"}), base_state(), rules)
    assert all_linked.audit.notes == [
        AuditNote(tag=Note.NOTHING_TO_PULL, rule="CUS-10", text="CUS-10: no CRM customer to pull (all linked already)")
    ]


def test_cus10_a_pulled_customer_linked_by_its_code_or_by_its_crm_id_is_updated_in_place(rules: RuleBook) -> None:
    """Linked by code (the acct customer of the same code) or by id (an acct customer that carries the
    CRM id, whatever its code): either way the upsert goes to that acct record, not a new one."""
    state = base_state()
    state.remember(T, "customer", {**CUSTOMER, "id": "c-7", "code": "KH7"})
    state.remember(T, "customer", {**CUSTOMER, "id": "c-8", "code": "KH8"})
    state.link(T, "customer", "KH7", acct="a-7")  # by code: acct a-7 has code KH7
    state.link(T, "customer", None, crm="c-8", acct="a-8")  # by id: acct a-8 carries crm_id c-8
    decision = run(
        event("acct", "customer", action="pull", after={"id": "req-11", "codes": ["KH7", "KH8"]}), state, rules
    )
    assert [c.key for c in decision.commands] == [CommandKey(id="a-7", code="KH7"), CommandKey(id="a-8", code="KH8")]
