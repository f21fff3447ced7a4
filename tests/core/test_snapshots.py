"""Snapshots (op ``r``: ``lienthong backfill``, a Debezium snapshot) are harmless to repeat: a snapshot
sends only what the target lacks. A record the target already has (linked, X-3, or already sent and
not refused) gets nothing, whatever its fields now say (drift is ``lienthong reconcile``'s); the audit
record names the rule the snapshot matched and X-2, with the note ``unchanged``.
"""

from __future__ import annotations

from streams.core.contract import Note, Op
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    ACCT_CUSTOMER,
    CUSTOMER,
    ORDER_LINK,
    T,
    assert_none,
    base_state,
    only_command,
    order,
    order_fields,
    run,
)
from tests.fakes import FakeState, event


def test_a_snapshot_of_an_order_accounting_lacks_creates_it_once(rules: RuleBook) -> None:
    state = base_state()
    first = run(event("crm", "sale_order", "r", after=order("proposed")), state, rules)
    command = only_command(first)
    assert (command.rule, command.op, command.fields) == ("SO-1", Op.CREATE, order_fields("proposed"))
    state.apply(first)
    # the same snapshot again, before any result came back (not linked yet): nothing is sent twice
    again = run(event("crm", "sale_order", "r", after=order("proposed")), state, rules)
    assert_none(again, "SO-1", because="X-2", rules=["SO-1", "X-2"])
    # said as a snapshot's X-2: the order was already sent (not a comparison of fields)
    assert [(note.tag, note.text) for note in again.audit.notes] == [
        (Note.UNCHANGED, "X-2: SO-1: snapshot (op r) of sale_order DH1: acct sale_order DH1 already has it: none")
    ]


def test_a_snapshot_of_a_synced_order_sends_nothing_even_when_its_crm_fields_moved_on(rules: RuleBook) -> None:
    """The demo's case (issue 25): the order went to accounting by SO-1, accounting turned the proposal
    into a voucher; the CRM order has derived values since. A create would be refused (409
    IsCreatedVoucher); the snapshot sends nothing."""
    state = base_state("sale_order", (ORDER_LINK,))
    moved_on = order("proposed", status="in_progress", receipted_amount="50000")
    decision = run(event("crm", "sale_order", "r", after=moved_on), state, rules)
    assert_none(decision, "SO-1", because="X-2", rules=["SO-1", "X-2"])
    assert "snapshot" in (decision.audit.reason or "")


def test_a_snapshot_of_a_crm_customer_accounting_created_sends_nothing(rules: RuleBook) -> None:
    """A customer created in accounting came to CRM (its link learned from the result): backfilling
    CRM does not send it back to accounting as new."""
    state = FakeState()
    state.link(T, "customer", "KH1", crm="c-1", acct="a-1")
    decision = run(event("crm", "customer", "r", after=CUSTOMER), state, rules)
    assert_none(decision, "CUS-1", rules=["CUS-1"])  # a CRM create is not synced anyway
    # and the accounting side's snapshot of the same customer (crm_id known) sends nothing to CRM
    acct = run(event("acct", "customer", "r", after={**ACCT_CUSTOMER, "crm_id": "c-1"}), state, rules)
    assert acct.commands == []
    assert "X-2" in acct.audit.rules


def test_a_snapshot_sends_again_what_the_target_refused(rules: RuleBook) -> None:
    """A rejected command is forgotten (X-2): a snapshot is then the way to send the record again."""
    state = base_state()
    first = run(event("crm", "sale_order", "r", after=order("proposed")), state, rules)
    state.apply(first)
    state.written.clear()  # what the worker does on a rejected / failed result
    again = run(event("crm", "sale_order", "r", after=order("proposed")), state, rules)
    assert only_command(again).rule == "SO-1"


def test_a_user_create_of_a_linked_record_is_not_a_snapshot(rules: RuleBook) -> None:
    """Only op r is idempotent this way; a live create (op c) follows its rule as before."""
    state = base_state("sale_order", (ORDER_LINK,))
    decision = run(event("crm", "sale_order", "c", after=order("proposed")), state, rules)
    assert only_command(decision).rule == "SO-1"


def test_snapshots_of_documents_already_counted_send_nothing(rules: RuleBook) -> None:
    """A backfill from a file of accounting documents (vouchers, receipts, the order itself) after they
    were counted: new event ids (op r), the same records; the derived values do not move, nothing goes."""
    from streams.core.aggregates import OrderAggregate, decide_for_order
    from tests.core.test_aggregates import T as AGG_TENANT
    from tests.core.test_aggregates import acct_order as agg_order
    from tests.core.test_aggregates import receipt, voucher

    state = FakeState()
    aggregate = OrderAggregate(tenant=AGG_TENANT, order_id="ao-1")
    documents = [("sale_order", agg_order()), ("sales_voucher", voucher(l1=2)), ("receipt", receipt())]
    sent = []
    for entity, record in documents:
        decision = decide_for_order(event("acct", entity, after=record), aggregate, state, rules, now_ms=1)
        state.apply(decision)
        sent += decision.commands
    assert {c.rule for c in sent} >= {"SO-9", "SO-10"}
    for entity, record in documents:  # the snapshot of each, twice
        for _ in range(2):
            decision = decide_for_order(event("acct", entity, "r", after=record), aggregate, state, rules, now_ms=2)
            state.apply(decision)
            assert decision.commands == [], (entity, [c.rule for c in decision.commands])
