"""The cross-cutting rules of the sync matrix through ``decide``: X-1 echo, X-2 no-op, X-3 links,
X-4 dependencies, X-5 one message key per record, X-6 bad input.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.names import System
from streams.core.contract import AuditNote, CommandKey, Note, Op, decode_change_event
from streams.core.errors import BadInput
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    ACCT_CUSTOMER,
    CUSTOMER,
    LINES,
    NEW_ACCT_CUSTOMER,
    ORDER_LINK,
    PRODUCT,
    QUOTE,
    T,
    acct_order,
    assert_none,
    base_state,
    copied,
    crm_invoice,
    ev_kwargs,
    only_command,
    order,
    order_fields,
    run,
)
from tests.fakes import FakeState, event

# --- X-1 echo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule_id", "kwargs", "order_target"),
    [
        pytest.param(
            "CUS-6", ev_kwargs("acct", "customer", after=NEW_ACCT_CUSTOMER, origin="sync"), "sale_order", id="X-1/CUS-6"
        ),
        pytest.param(
            "CUS-3",
            ev_kwargs("crm", "customer", "u", before=CUSTOMER, after={**CUSTOMER, "name": "Z"}, origin="sync"),
            "sale_order",
            id="X-1/CUS-3",
        ),
        pytest.param(
            "SO-8",
            ev_kwargs(
                "acct", "sale_order", "u", before=acct_order("proposed"), after=acct_order("recorded"), origin="sync"
            ),
            "sale_order",
            id="X-1/SO-8",
        ),
        pytest.param(
            "SO-6",
            ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("recorded"), origin="sync"),
            "sale_order",
            id="X-1/SO-6",
        ),
        pytest.param(
            "CT-9",
            ev_kwargs(
                "acct", "contract", "u", before=acct_order(), after=acct_order(status="completed"), origin="sync"
            ),
            "contract",
            id="X-1/CT-9",
        ),
        pytest.param(
            "INV-1",
            ev_kwargs("crm", "invoice", after=crm_invoice("proposed"), origin="sync"),
            "sale_order",
            id="X-1/INV-1",
        ),
    ],
)
def test_x1_a_change_written_by_the_integration_sends_nothing_back(
    rule_id: str, kwargs: dict[str, Any], order_target: str, rules: RuleBook
) -> None:
    decision = run(event(**kwargs), base_state(order_target, (ORDER_LINK,)), rules)
    assert decision.commands == []
    assert decision.audit.rules == [rule_id, "X-1"]
    assert "X-1" in decision.audit.reason and decision.audit.origin == "sync"


def test_x1_sync_changes_still_teach_links(rules: RuleBook) -> None:
    state = base_state()
    state.apply(run(event("acct", "sale_order", after=acct_order(), origin="sync"), state, rules))
    assert state.linked_id(T, System.ACCT, "sale_order", code="DH1", other_id=None) == "ao-1"


# --- X-2 no-op ---------------------------------------------------------------------------------


def test_x2_rewriting_what_was_last_written_sends_nothing(rules: RuleBook) -> None:
    state = base_state()
    updated = {**ACCT_CUSTOMER, "phone": "0909"}
    first = run(event("acct", "customer", "u", action="update", after=updated), state, rules)
    assert [c.rule for c in first.commands] == ["CUS-8"]
    state.apply(first)
    again = run(event("acct", "customer", "u", action="update", after=updated), state, rules)
    assert again.commands == []
    assert "X-2" in again.audit.rules and "X-2" in again.audit.reason and "CUS-8" in again.audit.rules
    changed = run(event("acct", "customer", "u", action="update", after={**updated, "phone": "0910"}), state, rules)
    assert [c.rule for c in changed.commands] == ["CUS-8"]


def test_x2_a_replayed_event_is_sent_again_with_the_same_command_id(rules: RuleBook) -> None:
    state = base_state()
    ev = event("acct", "customer", "u", action="update", after={**ACCT_CUSTOMER, "phone": "0909"})
    first = run(ev, state, rules)
    state.apply(first)
    replay = run(ev, state, rules)
    assert first.commands, "the event sent nothing: nothing was replayed"
    assert [c.command_id for c in replay.commands] == [c.command_id for c in first.commands]


def test_x2_an_update_that_changes_none_of_the_written_fields_is_none(rules: RuleBook) -> None:
    decision = run(event("crm", "customer", "u", before=CUSTOMER, after=dict(CUSTOMER)), base_state(), rules)
    assert_none(decision, "CUS-3", because="X-2", rules=["CUS-3", "X-2"])


def test_x2_a_user_change_in_the_target_system_is_not_masked_by_what_was_last_written(rules: RuleBook) -> None:
    """SO-6 records revenue in acct; an accountant un-records it; CRM records again: SO-6 goes again."""
    rule = "SO-6"
    state = base_state("sale_order", (ORDER_LINK,))
    first = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    state.apply(first)
    assert only_command(first).rule == rule
    unrecorded = run(
        event(
            "acct",
            "sale_order",
            "u",
            action="reject_revenue",
            before=acct_order("recorded"),
            after=acct_order("not_recorded"),
        ),
        state,
        rules,
    )
    state.apply(unrecorded)
    again = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    assert only_command(again).fields == {"revenue_status": "recorded"}


def test_x2_the_integrations_own_echo_keeps_the_memory(rules: RuleBook) -> None:
    state = base_state("sale_order", (ORDER_LINK,))
    state.apply(run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules))
    echo = run(
        event("acct", "sale_order", "u", origin="sync", before=acct_order("proposed"), after=acct_order("recorded")),
        state,
        rules,
    )
    state.apply(echo)
    repeat = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    assert repeat.commands == [] and "X-2" in repeat.audit.rules


def test_x2_after_a_partial_write_the_target_holds_the_whole_record(rules: RuleBook) -> None:
    """SO-1 writes the whole order, SO-6 its revenue_status only: the acct order then holds both, so
    neither the whole order again (an update without a before image) nor the same status is new."""
    state = base_state("sale_order", (ORDER_LINK,))
    created = run(event("crm", "sale_order", after=order("proposed")), state, rules)
    assert only_command(created).fields == order_fields("proposed")
    state.apply(created)
    recorded = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    assert only_command(recorded).fields == {"revenue_status": "recorded"}
    state.apply(recorded)
    whole = run(event("crm", "sale_order", "u", before=None, after=order("recorded")), state, rules)
    assert_none(whole, "SO-2", because="X-2", rules=["SO-2", "X-2"])
    state.apply(whole)
    again = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    assert_none(again, "SO-6", because="X-2", rules=["SO-6", "X-2"])
    # one field the acct order does not hold yet: the whole order goes (SO-2 writes every field)
    later = run(event("crm", "sale_order", "u", before=None, after=order("recorded", total_amount="1")), state, rules)
    assert only_command(later).fields == order_fields("recorded", total_amount="1")


# --- X-3 links ---------------------------------------------------------------------------------


def test_x3_unlinked_target_by_code_then_linked_by_id(rules: RuleBook) -> None:
    state = base_state()
    created = run(event("acct", "customer", after=NEW_ACCT_CUSTOMER), state, rules)
    assert only_command(created).key == CommandKey(id=None, code="KH2")
    state.apply(created)
    # the CRM connector's write comes back through CRM CDC: the two records are now linked by code
    state.apply(run(event("crm", "customer", after={**NEW_ACCT_CUSTOMER, "id": "c-2"}, origin="sync"), state, rules))
    updated = run(
        event("acct", "customer", "u", before=NEW_ACCT_CUSTOMER, after={**NEW_ACCT_CUSTOMER, "name": "Công ty B mới"}),
        state,
        rules,
    )
    command = only_command(updated)
    assert (command.rule, command.key) == ("CUS-8", CommandKey(id="c-2", code="KH2"))


def test_x3_acct_crm_id_links_records_whose_codes_differ(rules: RuleBook) -> None:
    state = base_state("contract")
    state.apply(run(event("crm", "sale_order", after=order("proposed")), state, rules))
    # the accountant's contract has its own number; crm_id names the CRM order
    state.apply(run(event("acct", "contract", after=acct_order(code="HĐ-2025-07"), origin="sync"), state, rules))
    withdraw = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("draft")), state, rules)
    command = only_command(withdraw)
    assert (command.rule, command.op, command.key.id) == ("CT-5", Op.DELETE, "ao-1")


# --- X-4 dependencies --------------------------------------------------------------------------


def test_x4_unlinked_customer_and_products_are_sent_first(rules: RuleBook) -> None:
    state = base_state()
    state.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5", "name": "Khách mới"})
    lines = [*LINES, {"line_id": "l2", "product_code": "SP7", "quantity": 1, "unit_price": "5", "amount": "5"}]
    decision = run(event("crm", "sale_order", after=order("proposed", customer_code="KH5", lines=lines)), state, rules)
    customer, product, document = decision.commands
    assert (customer.rule, customer.target, customer.entity, customer.key) == (
        "CUS-10",
        System.ACCT,
        "customer",
        CommandKey(code="KH5"),
    )
    assert customer.fields == copied(CUSTOMER, code="KH5", name="Khách mới")  # the CRM customer as last seen
    assert (product.rule, product.entity, product.key) == ("PRD-1", "product", CommandKey(code="SP7"))
    assert product.fields == {"code": "SP7"}  # a product not seen yet: its code only, until it arrives
    # where each came from: the CRM customer as seen; the product, known only by the code the order names
    assert (customer.source.system, customer.source.entity, customer.source.id) == (System.CRM, "sale_order", "c-5")
    assert product.source.id == "SP7"
    assert document.rule == "SO-1"
    assert document.depends_on == [customer.command_id, product.command_id]
    assert (decision.audit.rule, decision.audit.rules) == ("SO-1", ["SO-1", "X-4"])
    assert [a.rule for a in decision.audit.commands] == ["CUS-10", "PRD-1", "SO-1"]
    # "not linked" is what this worker knows: one whose tables lag decides the order again on catching up
    assert decision.rests_on_absence is True


def test_x4_linked_customer_and_products_need_nothing_first(rules: RuleBook) -> None:
    decision = run(event("crm", "quote", after=QUOTE), base_state(), rules)
    assert only_command(decision).depends_on == []
    assert (decision.audit.rule, decision.audit.rules) == ("QUO-1", ["QUO-1"])
    assert decision.rests_on_absence is False


def test_x4_a_dependency_already_sent_is_still_depended_on_but_not_resent(rules: RuleBook) -> None:
    state = base_state()
    quote = {**QUOTE, "customer_code": "KH5"}
    state.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5"})
    first = run(event("crm", "quote", after=quote), state, rules)
    state.apply(first)
    second = run(event("crm", "quote", "u", before=quote, after={**quote, "total_amount": "1"}), state, rules)
    assert [c.rule for c in second.commands] == ["QUO-1"]
    assert second.commands[0].depends_on == [first.commands[0].command_id]


def test_x4_a_status_only_write_sends_no_dependencies(rules: RuleBook) -> None:
    """SO-6 writes revenue_status only: an unlinked customer is not pulled for it."""
    rule = "SO-6"
    state = FakeState()  # nothing linked
    decision = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    (command,) = decision.commands
    assert command.rule == rule and command.depends_on == []


COMPLETED_KH9 = AuditNote(
    tag=Note.DEPENDENCY_COMPLETED,
    rule="CUS-10",
    text="X-4: customer KH9 went to acct with its code only (named by a document before the processor saw it); "
    "CUS-10 sends its fields now",
)


def test_x4_every_unlinked_product_of_an_order_is_sent_first(rules: RuleBook) -> None:
    lines = [
        {"line_id": "l1", "product_code": "SP7", "quantity": 1, "unit_price": "5", "amount": "5"},
        {"line_id": "l2", "product_code": "SP8", "quantity": 1, "unit_price": "5", "amount": "5"},
    ]
    decision = run(event("crm", "sale_order", after=order("proposed", lines=lines)), base_state(), rules)
    assert [(c.rule, c.key.code) for c in decision.commands] == [("PRD-1", "SP7"), ("PRD-1", "SP8"), ("SO-1", "DH1")]
    assert decision.commands[-1].depends_on == [c.command_id for c in decision.commands[:2]]


def test_x4_a_product_named_on_two_lines_is_sent_once(rules: RuleBook) -> None:
    line = {"line_id": "l1", "product_code": "SP7", "quantity": 1, "unit_price": "5", "amount": "5"}
    lines = [line, {**line, "line_id": "l2"}]
    decision = run(event("crm", "sale_order", after=order("proposed", lines=lines)), base_state(), rules)
    assert [(c.rule, c.key.code) for c in decision.commands] == [("PRD-1", "SP7"), ("SO-1", "DH1")]


def test_a_condition_that_does_not_hold_is_said_with_every_value_it_takes(rules: RuleBook) -> None:
    ev = event("crm", "sale_order", "u", before=order("draft"), after=order("draft", total_amount="1"))
    decision = run(ev, base_state(links=(ORDER_LINK,)), rules)
    assert decision.audit.notes == [
        AuditNote(
            tag=Note.CONDITION,
            rule="SO-2",
            text="SO-2: condition revenue_status ∈ {proposed, recorded} does not hold (revenue_status = 'draft'): none",
        )
    ]


def test_x4_a_linked_customers_own_update_is_not_doubled_by_a_completion(rules: RuleBook) -> None:
    """KH9 went to accounting with its code only and its echo linked it there; the CRM customer's own
    update then goes by CUS-3 with its fields, which is all the completion would have sent."""
    state = base_state()
    state.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules))
    state.apply(run(event("acct", "customer", after={"id": "a-9", "code": "KH9"}, origin="sync"), state, rules))
    customer = {**CUSTOMER, "id": "c-9", "code": "KH9", "name": "Khách đến sau"}
    decision = run(event("crm", "customer", "u", before={**customer, "name": "cũ"}, after=customer), state, rules)
    (update,) = decision.commands
    assert (update.rule, update.key, update.fields) == ("CUS-3", CommandKey(id="a-9", code="KH9"), copied(customer))


def test_x4_a_dependency_named_before_its_record_was_seen_gets_its_fields_when_the_record_arrives(
    rules: RuleBook,
) -> None:
    """The order's change came before its customer's (another topic): the customer went to accounting
    with its code only. The customer's own change (CUS-1: not synced by itself) completes it, once."""
    state = base_state()
    early = run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules)
    placeholder = next(c for c in early.commands if c.rule == "CUS-10")
    assert placeholder.fields == {"code": "KH9"}
    state.apply(early)
    customer = {**CUSTOMER, "id": "c-9", "code": "KH9", "name": "Khách đến sau", "tax_code": "0109"}
    arrived = run(event("crm", "customer", after=customer), state, rules)
    (completion,) = arrived.commands
    assert (completion.rule, completion.target, completion.key) == ("CUS-10", System.ACCT, CommandKey(code="KH9"))
    assert completion.fields == copied(customer)
    assert completion.command_id != placeholder.command_id
    assert (arrived.audit.rule, arrived.audit.rules) == ("CUS-1", ["CUS-1", "CUS-10", "X-4"])
    assert [n for n in arrived.audit.notes if n.rule == "CUS-10"] == [COMPLETED_KH9]
    state.apply(arrived)
    again = run(event("crm", "customer", "u", before=customer, after={**customer, "phone": "1"}), state, rules)
    assert "CUS-10" not in [c.rule for c in again.commands]  # completed once; later edits follow CUS-3


def test_x4_a_dependency_decided_at_the_same_moment_as_its_record_gets_its_fields_from_its_echo(
    rules: RuleBook,
) -> None:
    """The order and its customer decided at once on two workers: neither saw the other (the customer
    went with its code only, and the customer's own change found nothing to complete). The echo of
    the code-only customer in accounting arrives once both are known: it completes it, once."""
    state = base_state()
    early = run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules)
    placeholder = next(c for c in early.commands if c.rule == "CUS-10")
    state.apply(early)
    # the customer's change, decided on the other worker, reached this one's tables afterwards
    customer = {**CUSTOMER, "id": "c-9", "code": "KH9", "name": "Khách đến sau", "tax_code": "0109"}
    state.remember(T, "customer", customer)
    echo_record = {"id": "a-9", "code": "KH9", "name": None}
    echo = run(event("acct", "customer", after=echo_record, origin="sync"), state, rules)
    (completion,) = echo.commands
    assert (completion.rule, completion.target, completion.key) == ("CUS-10", System.ACCT, CommandKey(code="KH9"))
    assert completion.fields == copied(customer)
    assert completion.source.id == "c-9" and completion.command_id != placeholder.command_id
    assert (echo.audit.rule, echo.audit.rules) == ("CUS-6", ["CUS-6", "X-1", "CUS-10", "X-4"])
    assert [n for n in echo.audit.notes if n.rule == "CUS-10"] == [COMPLETED_KH9]
    state.apply(echo)
    again = run(event("acct", "customer", "u", before=echo_record, after=echo_record, origin="sync"), state, rules)
    assert again.commands == []  # completed once


def test_x4_a_product_decided_at_the_same_moment_as_its_order_gets_its_fields_from_its_echo(
    rules: RuleBook,
) -> None:
    """As for a customer, through the product's own change: the order (naming SP9, not seen yet) and
    the new CRM product SP9 are decided at once on two workers; the order's code-only PRD-1 is what
    the tables remember last. The processor remembers the CRM product from its change, so the echo
    of SP9 in accounting sends its fields."""
    state = base_state()
    lines = [{"line_id": "l1", "product_code": "SP9", "quantity": 1, "unit_price": "5", "amount": "5"}]
    product = {**PRODUCT, "id": "p-9", "code": "SP9", "name": "Trà đen"}
    product_change = run(event("crm", "product", after=product), state, rules)
    assert only_command(product_change).fields == copied(product)
    early = run(event("crm", "sale_order", after=order("proposed", lines=lines)), state, rules)
    placeholder = next(c for c in early.commands if c.rule == "PRD-1")
    assert placeholder.fields == {"code": "SP9"}
    state.apply(product_change)
    state.apply(early)
    echo_record = {"id": "ap-9", "code": "SP9"}
    echo = run(event("acct", "product", after=echo_record, origin="sync"), state, rules)
    (completion,) = echo.commands
    assert (completion.rule, completion.target, completion.entity, completion.op, completion.key) == (
        "PRD-1",
        System.ACCT,
        "product",
        Op.UPSERT,
        CommandKey(code="SP9"),
    )
    assert completion.fields == copied(product)
    assert completion.source.id == "p-9"
    assert (echo.audit.rule, echo.audit.rules) == ("PRD-3", ["PRD-3", "X-1", "PRD-1", "X-4"])


def test_x4_a_dependency_on_a_record_deleted_in_crm_goes_with_its_code_only(rules: RuleBook) -> None:
    """A customer deleted in CRM is forgotten: an order naming it no longer copies its old fields."""
    state = base_state()
    gone = {**CUSTOMER, "id": "c-5", "code": "KH5", "name": "Khách cũ"}
    state.apply(run(event("crm", "customer", after=gone), state, rules))
    state.apply(run(event("crm", "customer", "d", before=gone), state, rules))
    decision = run(event("crm", "sale_order", after=order("proposed", customer_code="KH5")), state, rules)
    customer, document = decision.commands
    assert (customer.rule, customer.key, customer.fields) == ("CUS-10", CommandKey(code="KH5"), {"code": "KH5"})
    assert (document.rule, document.depends_on) == ("SO-1", [customer.command_id])


def test_x4_an_echo_completes_nothing_without_the_crm_record_or_once_fields_were_sent(rules: RuleBook) -> None:
    state = base_state()
    state.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH9")), state, rules))
    echo_record = {"id": "a-9", "code": "KH9"}
    assert run(event("acct", "customer", after=echo_record, origin="sync"), state, rules).commands == []
    known = base_state()
    known.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5", "name": "Khách mới"})
    known.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH5")), known, rules))
    echo = run(event("acct", "customer", after={"id": "a-5", "code": "KH5"}, origin="sync"), known, rules)
    assert echo.commands == []


def test_x4_a_dependency_sent_with_its_fields_is_not_sent_again_when_its_record_changes(rules: RuleBook) -> None:
    state = base_state()
    state.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5", "name": "Khách mới"})
    state.apply(run(event("crm", "sale_order", after=order("proposed", customer_code="KH5")), state, rules))
    arrived = run(
        event("crm", "customer", after={**CUSTOMER, "id": "c-5", "code": "KH5", "name": "Khách mới"}), state, rules
    )
    assert arrived.commands == []


# --- X-5 order: one record, one message key ----------------------------------------------------


def _keys_over_time(steps: list[dict[str, Any]], state: FakeState, rules: RuleBook) -> list[tuple[str, str]]:
    keys = []
    for kwargs in steps:
        decision = run(event(**kwargs), state, rules)
        keys += [(c.rule, c.message_key) for c in decision.commands]
        state.apply(decision)
    return keys


def test_x5_commands_for_one_order_keep_one_message_key_across_linking(rules: RuleBook) -> None:
    steps = [
        ev_kwargs("crm", "sale_order", after=order("proposed")),  # SO-1, acct order not linked yet
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("proposed", total_amount="1")),
        ev_kwargs("acct", "sale_order", after=acct_order(), origin="sync"),  # the link arrives
        ev_kwargs(
            "crm",
            "sale_order",
            "u",
            before=order("proposed", total_amount="1"),
            after=order("proposed", total_amount="2"),
        ),  # SO-2, now linked
        ev_kwargs(
            "crm",
            "sale_order",
            "u",
            before=order("proposed", total_amount="2"),
            after=order("recorded", total_amount="2"),
        ),  # SO-6
    ]
    keys = _keys_over_time(steps, base_state(), rules)
    assert [rule for rule, _ in keys] == ["SO-1", "SO-2", "SO-2", "SO-6"]
    # one key: one partition, so the connector sees them in the order of the changes
    assert len({key for _, key in keys}) == 1, keys


def test_x5_an_acct_customer_keeps_one_message_key_from_dependency_to_update(rules: RuleBook) -> None:
    state = base_state()
    new = {**CUSTOMER, "id": "c-5", "code": "KH5"}
    steps = [
        ev_kwargs("crm", "customer", after=new),  # CUS-1: nothing, but remembered
        ev_kwargs("crm", "quote", after={**QUOTE, "customer_code": "KH5"}),  # X-4 sends KH5 as CUS-10
        ev_kwargs("acct", "customer", after={**new, "id": "a-5"}, origin="sync"),  # linked
        ev_kwargs("crm", "customer", "u", before=new, after={**new, "name": "Đổi tên"}),  # CUS-3 by id
    ]
    keys = [(rule, key) for rule, key in _keys_over_time(steps, state, rules) if ":customer:" in key]
    assert [rule for rule, _ in keys] == ["CUS-10", "CUS-3"]
    assert len({key for _, key in keys}) == 1, keys


def test_x5_commands_of_one_decision_keep_the_dependency_order(rules: RuleBook) -> None:
    """The list order is the send order: dependencies before the document (X-4)."""
    state = base_state()
    state.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5"})
    decision = run(event("crm", "quote", after={**QUOTE, "customer_code": "KH5"}), state, rules)
    assert [c.rule for c in decision.commands] == ["CUS-10", "QUO-1"]


# --- X-6 bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "entity", "kind"),
    [
        pytest.param(b"\x00\xffnot json", "customer", "decode", id="X-6/decode"),
        pytest.param(
            b'{"schema_version": 1, "event_id": "e", "tenant": "t1", "system": "crm", "entity": "customer",'
            b' "op": "c", "ts_ms": 1, "after": {"id": "1"}, "action": "teleport"}',
            "customer",
            "unknown_action",
            id="X-6/unknown_action",
        ),
        pytest.param(b'{"schema_version": 1}', "widget", "unknown_entity", id="X-6/unknown_entity"),
        pytest.param(
            b'{"schema_version": 1, "event_id": "e", "tenant": "t1", "system": "crm", "entity": "customer",'
            b' "op": "c", "ts_ms": 1}',
            "customer",
            "schema",
            id="X-6/schema",
        ),
    ],
)
def test_x6_bad_input_raises_bad_input_with_a_kind(raw: bytes, entity: str, kind: str) -> None:
    with pytest.raises(BadInput) as caught:
        decode_change_event(
            raw, topic_system="crm", topic_entity=entity, topic=f"cdc.crm.{entity}", partition=3, offset=42
        )
    assert caught.value.kind == kind
    assert "@3:42" in caught.value.message


@pytest.mark.parametrize("action", ["approve", "pull", "issue"])
def test_x6_an_action_no_rule_takes_on_the_entity_is_bad_input(action: str, rules: RuleBook) -> None:
    """A known action on an entity it does not apply to (``approve`` on a customer): dead letter."""
    ev = event("crm", "customer", "u", action=action, before=CUSTOMER, after=CUSTOMER)
    with pytest.raises(BadInput) as raised:
        run(ev, base_state(), rules)
    assert raised.value.kind == "unknown_action"
    assert action in raised.value.message and "crm customer" in raised.value.message
