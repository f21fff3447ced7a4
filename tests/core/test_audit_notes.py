"""What ``decide`` says and remembers besides its commands: the audit record's notes (the tags a
program reads and the text a person reads, each naming its rule), what it learns (links, CRM
records) and what it forgets (X-2 memory of a record a user changed). Found unchecked by mutation
testing (docs/mutation.md).
"""

from __future__ import annotations

import pytest

from common.names import System
from streams.core.contract import AuditNote, CommandKey, Note
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    CUSTOMER,
    ORDER_LINK,
    PRODUCT,
    T,
    acct_order,
    base_state,
    copied,
    order,
    run,
)
from tests.fakes import FakeState, event


def note(tag: Note, rule: str | None, text: str) -> AuditNote:
    return AuditNote(tag=tag, rule=rule, text=text)


def test_no_rule_says_so_and_names_the_order_target_of_an_order(rules: RuleBook) -> None:
    contract_tenant = base_state("contract")
    decision = run(event("acct", "sale_order", after=acct_order()), contract_tenant, rules)
    assert decision.audit.notes == [
        note(Note.NO_RULE, None, "no rule of the matrix for acct sale_order create (order_target=contract): none")
    ]
    decision = run(event("acct", "product_category", "d", before={"id": "c", "code": "LH1"}), base_state(), rules)
    assert decision.audit.notes == [
        note(Note.NO_RULE, None, "no rule of the matrix for acct product_category delete: none")
    ]


def test_an_echo_says_which_rule_sends_nothing_back(rules: RuleBook) -> None:
    echo = run(event("acct", "customer", after={**CUSTOMER, "id": "a-1"}, origin="sync"), base_state(), rules)
    assert echo.audit.notes == [
        note(Note.ECHO, "CUS-6", "X-1: written by this integration (origin = sync); CUS-6 sends nothing back")
    ]


def test_notes_keep_the_order_things_happened_in(rules: RuleBook) -> None:
    """The echo of a customer sent by code only: first "X-1", then the completion it allowed (X-4)."""
    state = base_state()
    state.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules))
    state.remember(T, "customer", {**CUSTOMER, "id": "c-9", "code": "KH9"})
    echo = run(event("acct", "customer", after={"id": "a-9", "code": "KH9"}, origin="sync"), state, rules)
    assert [(n.tag, n.rule) for n in echo.audit.notes] == [
        (Note.ECHO, "CUS-6"),
        (Note.DEPENDENCY_COMPLETED, "CUS-10"),
    ]


def test_not_linked_names_the_record_by_its_code_and_unaddressable_says_why(rules: RuleBook) -> None:
    unlinked = {**CUSTOMER, "id": "c-5", "code": "KH5"}
    decision = run(event("crm", "customer", "u", before=unlinked, after={**unlinked, "name": "B"}), FakeState(), rules)
    assert decision.audit.notes == [note(Note.NOT_LINKED, "CUS-3", "CUS-3: customer KH5 is not linked to acct: none")]
    nameless = {k: v for k, v in PRODUCT.items() if k != "code"}
    decision = run(event("crm", "product", after=nameless), FakeState(), rules)
    assert decision.commands == []
    assert decision.audit.notes == [
        note(
            Note.UNADDRESSABLE,
            "PRD-1",
            "PRD-1: cannot address the acct product: the record has neither a code nor a link: none",
        )
    ]


def test_x2_names_the_record_it_would_write_nothing_new_to(rules: RuleBook) -> None:
    state = base_state()
    acct = {**CUSTOMER, "id": "a-1"}
    state.apply(run(event("acct", "customer", "u", before={**acct, "name": "x"}, after=acct), state, rules))
    # the same record reported again (not a snapshot: that is said differently, tests/core/test_snapshots.py)
    again = run(event("acct", "customer", "c", after=acct), state, rules)
    assert again.commands == []
    assert [n for n in again.audit.notes if n.tag is Note.UNCHANGED] == [
        note(Note.UNCHANGED, "CUS-6", "X-2: CUS-6 would write nothing new to crm customer KH1")
    ]


def test_a_merge_names_the_records_it_absorbed_and_only_a_merge_does(rules: RuleBook) -> None:
    survivor = {**CUSTOMER, "phone": "0902000002"}
    merge = event("crm", "customer", "u", action="merge", before=CUSTOMER, after=survivor, merged_ids=["c-7", "c-8"])
    decision = run(merge, base_state(), rules)
    assert note(Note.MERGE_ABSORBED, "CUS-5", "CUS-5: absorbed records c-7, c-8 are not deleted in acct") in (
        decision.audit.notes
    )
    update = event("crm", "customer", "u", before=CUSTOMER, after=survivor, merged_ids=["c-7"])
    assert [n.tag for n in run(update, base_state(), rules).audit.notes] == []


@pytest.mark.parametrize(
    ("total", "cancelled"),
    [("200000", "-200000"), ("-5", "5"), ("0", "0"), ("-0", "0"), ("0.00", "0.00")],
)
def test_ct7_cancels_the_negation_of_the_total_never_minus_zero(total: str, cancelled: str, rules: RuleBook) -> None:
    after = order("recorded", total_amount=total)
    ev = event("crm", "sale_order", "u", action="propose_revenue_cancel", before=order("recorded"), after=after)
    decision = run(ev, base_state("contract", (ORDER_LINK,)), rules)
    (command,) = [c for c in decision.commands if c.rule == "CT-7"]
    assert [e["amount"] for e in command.fields["revenue_entries"]] == [cancelled]


def test_an_accountants_own_customer_or_its_deletion_completes_no_dependency(rules: RuleBook) -> None:
    """KH9 went to accounting with its code only (an order named it first). Only the CRM record or
    the integration's own echo completes it: not an accountant creating KH9, nor any deletion."""
    state = base_state()
    state.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules))
    crm_kh9 = {**CUSTOMER, "id": "c-9", "code": "KH9"}
    by_hand = run(event("acct", "customer", after={"id": "a-9", "code": "KH9", "name": "Tay"}), state, rules)
    assert "CUS-10" not in [c.rule for c in by_hand.commands]
    assert run(event("crm", "customer", "d", before=crm_kh9), state, rules).commands == []
    state.remember(T, "customer", crm_kh9)
    by_hand = run(event("acct", "customer", after={"id": "a-9", "code": "KH9", "name": "Tay"}), state, rules)
    assert "CUS-10" not in [c.rule for c in by_hand.commands]
    gone = run(event("acct", "customer", "d", before={"id": "a-9", "code": "KH9"}, origin="sync"), state, rules)
    assert gone.commands == []


def test_what_a_change_teaches_and_what_a_users_change_forgets(rules: RuleBook) -> None:
    acct = {**CUSTOMER, "id": "a-1"}
    decision = run(event("acct", "customer", "u", before={**acct, "name": "x"}, after=acct), base_state(), rules)
    assert decision.crm_records == []  # only CRM customers and products are remembered as records
    assert [(u.family, u.code, u.ids) for u in decision.links] == [("customer", "KH1", {"acct": "a-1"})]
    # the record changed in accounting by a person: what this processor last wrote there is stale
    assert decision.forget_written == ["t1:acct:customer:KH1", "t1:acct:customer:a-1"]
    deleted = run(event("acct", "customer", "d", before=acct), base_state(), rules)
    assert deleted.links == []  # a deletion links nothing
    crm_order = run(event("crm", "sale_order", after=order("draft")), base_state(), rules)
    assert crm_order.crm_records == []
    product = run(event("crm", "product", after=PRODUCT), base_state(), rules)
    assert [(r.entity, r.code, r.record) for r in product.crm_records] == [("product", "SP1", PRODUCT)]
    assert copied(PRODUCT) == next(c.fields for c in product.commands)
    assert product.commands[0].key == CommandKey(id="ap-1", code="SP1")
    assert product.commands[0].target is System.ACCT


def test_no_rule_for_an_acct_contract_names_the_order_target(rules: RuleBook) -> None:
    decision = run(event("acct", "contract", after=acct_order()), base_state("sale_order"), rules)
    assert decision.audit.notes == [
        note(Note.NO_RULE, None, "no rule of the matrix for acct contract create (order_target=sale_order): none")
    ]


def test_x2_a_crm_order_updated_to_what_it_was_sends_nothing(rules: RuleBook) -> None:
    """The copy carries the CRM id (X-3) on both sides of the comparison: nothing it writes changed."""
    decision = run(
        event("crm", "sale_order", "u", before=order("proposed"), after=order("proposed")),
        base_state(links=(ORDER_LINK,)),
        rules,
    )
    assert decision.commands == []
    assert [n.tag for n in decision.audit.notes] == [Note.UNCHANGED]
