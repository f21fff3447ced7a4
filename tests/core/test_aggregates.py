"""Aggregates of accounting orders and the statuses derived from them (SO-9..SO-14, CT-11, CT-12).

Pure: ``decide_for_order`` over an ``OrderAggregate`` and the in-memory FakeState. The property
tests feed random interleavings, with duplicates, of one order's document history and compare with
what the independent oracle (``tests/core/oracle.py``) works out from the documents.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core.aggregates import (
    OrderAggregate,
    aggregate_inputs,
    check_document,
    decide_for_order,
    derive,
    order_key_of,
)
from streams.core.contract import AuditNote, ChangeEvent, CommandKey, Note
from streams.core.errors import BadInput
from streams.core.rules import RuleBook
from tests.core.oracle import SALE_ORDER_FIELDS, truths, wire_problems
from tests.fakes import FakeState, event

T = "t1"
NOW = 1_764_201_700_000


def acct_order(kind: str = "sale_order", **changes: Any) -> dict[str, Any]:
    return {
        "id": "ao-1",
        "code": "DH1",
        "crm_id": "o-1",
        "revenue_status": "recorded",
        "status": "in_progress",
        "total_amount": "1000",
        "lines": [
            {"line_id": "l1", "product_code": "SP1", "quantity": 3, "amount": "600"},
            {"line_id": "l2", "product_code": "SP2", "quantity": 2, "amount": "400"},
        ],
        **changes,
    }


def voucher(voucher_id: str = "v-1", l1: Any = 1, l2: Any = 0, **changes: Any) -> dict[str, Any]:
    lines = []
    if l1:
        lines.append({"line_id": "l1", "product_code": "SP1", "quantity": l1, "amount": str(200 * Decimal(str(l1)))})
    if l2:
        lines.append({"line_id": "l2", "product_code": "SP2", "quantity": l2, "amount": str(200 * Decimal(str(l2)))})
    return {
        "id": voucher_id,
        "code": voucher_id.upper(),
        "order_id": "ao-1",
        "lines": lines,
        "invoice_no": None,
        "einvoice_published": False,
        **changes,
    }


def receipt(receipt_id: str = "r-1", amount: str = "400") -> dict[str, Any]:
    return {"id": receipt_id, "code": receipt_id.upper(), "order_id": "ao-1", "amount": amount}


class Order:
    """One accounting order's aggregate, driven event by event as the aggregates agent does."""

    def __init__(self, rules: RuleBook, order_target: str = "sale_order") -> None:
        self.rules = rules
        self.state = FakeState()
        self.state.order_targets[T] = order_target
        self.aggregate = OrderAggregate(tenant=T, order_id="ao-1")

    def send(self, ev: ChangeEvent):
        if ev.event_id in self.aggregate.seen:
            return None  # the agent drops duplicates before deciding
        decision = decide_for_order(ev, self.aggregate, self.state, self.rules, now_ms=NOW)
        self.state.apply(decision)
        return decision

    def rules_sent(self, ev: ChangeEvent) -> dict[str, dict[str, Any]]:
        decision = self.send(ev)
        return {c.rule: c.fields for c in decision.commands}


def test_so9_so13_delivered_quantities_and_delivery_status(rules: RuleBook) -> None:
    order = Order(rules)
    assert order.rules_sent(event("acct", "sale_order", after=acct_order())) == {}  # nothing delivered yet
    sent = order.rules_sent(event("acct", "sales_voucher", after=voucher(l1=2)))
    assert sent["SO-9"] == {
        "delivered_quantities": [
            {"line_id": "l1", "delivered_quantity": "2"},
            {"line_id": "l2", "delivered_quantity": "0"},
        ]
    }
    assert sent["SO-13"] == {"delivery_status": "delivering"}
    sent = order.rules_sent(event("acct", "sales_voucher", after=voucher("v-2", l1=1, l2=2)))
    assert sent["SO-9"]["delivered_quantities"] == [
        {"line_id": "l1", "delivered_quantity": "3"},
        {"line_id": "l2", "delivered_quantity": "2"},
    ]
    assert sent["SO-13"] == {"delivery_status": "delivered"}


def test_so9_an_edited_voucher_replaces_its_contribution(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    order.send(event("acct", "sales_voucher", after=voucher(l1=2)))
    sent = order.rules_sent(event("acct", "sales_voucher", "u", before=voucher(l1=2), after=voucher(l1=1)))
    assert sent["SO-9"]["delivered_quantities"][0] == {"line_id": "l1", "delivered_quantity": "1"}
    assert "SO-13" not in sent  # still delivering: X-2


def test_so11_deleting_the_vouchers_resets_status_and_delivered_quantities(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    order.send(event("acct", "sales_voucher", after=voucher(l1=2)))
    sent = order.rules_sent(event("acct", "sales_voucher", "d", before=voucher(l1=2), after=None))
    assert sent["SO-11"] == {
        "status": "not_started",
        "delivered_quantities": [
            {"line_id": "l1", "delivered_quantity": "0"},
            {"line_id": "l2", "delivered_quantity": "0"},
        ],
    }
    assert sent["SO-13"] == {"delivery_status": "not_delivered"}


def test_so11_so12_completed_when_the_invoiced_total_equals_the_order_total(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    order.send(event("acct", "sales_voucher", after=voucher("v-1", l1=3)))
    order.send(event("acct", "sales_voucher", after=voucher("v-2", l1=0, l2=2)))
    sent = order.rules_sent(
        event(
            "acct",
            "sales_voucher",
            "u",
            before=voucher("v-1", l1=3),
            after=voucher("v-1", l1=3, invoice_no="0000001", invoice_date="2026-11-20"),
        )
    )
    assert sent["SO-12"] == {"invoicing_status": "invoiced", "invoiced_amount": "600", "invoiced_date": "2026-11-20"}
    assert "SO-11" not in sent  # 600 of 1000 invoiced
    sent = order.rules_sent(
        event(
            "acct",
            "sales_voucher",
            "u",
            before=voucher("v-2", l1=0, l2=2),
            after=voucher("v-2", l1=0, l2=2, einvoice_published=True, invoice_date="2026-11-21"),
        )
    )
    assert sent["SO-11"] == {"status": "completed"}
    assert sent["SO-12"] == {"invoicing_status": "invoiced", "invoiced_amount": "1000", "invoiced_date": "2026-11-21"}


def test_so10_so14_receipts_remaining_receivable_and_pay_status(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    sent = order.rules_sent(event("acct", "receipt", after=receipt("r-1", "400")))
    assert sent["SO-10"] == {"receipted_amount": "400", "remaining_receivable": "600"}
    assert sent["SO-14"] == {"pay_status": "partially_paid"}
    sent = order.rules_sent(event("acct", "receipt", after=receipt("r-2", "600.00")))
    assert sent["SO-10"] == {"receipted_amount": "1000", "remaining_receivable": "0"}
    assert sent["SO-14"] == {"pay_status": "paid"}
    sent = order.rules_sent(event("acct", "receipt", "d", before=receipt("r-2", "600.00"), after=None))
    assert sent["SO-14"] == {"pay_status": "partially_paid"}


def test_money_is_decimal_end_to_end(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order(total_amount="0.3")))
    order.send(event("acct", "receipt", after=receipt("r-1", "0.1")))
    sent = order.rules_sent(event("acct", "receipt", after=receipt("r-2", "0.2")))
    assert sent["SO-10"] == {"receipted_amount": "0.3", "remaining_receivable": "0"}  # not 5.55e-17
    assert sent["SO-14"] == {"pay_status": "paid"}


def test_a_float_amount_is_bad_input_naming_the_field(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    with pytest.raises(BadInput) as raised:
        order.send(event("acct", "receipt", after={**receipt(), "amount": 0.1}))
    assert raised.value.kind == "schema" and "amount" in raised.value.message and "float" in raised.value.message


def test_ct11_ct12_contract_delivery_from_acct_status_and_receipts(rules: RuleBook) -> None:
    order = Order(rules, order_target="contract")
    order.send(event("acct", "contract", after=acct_order("contract")))
    sent = order.rules_sent(event("acct", "sales_voucher", after=voucher(l1=3, l2=2)))
    assert "CT-11" in sent and sent["CT-11"]["delivery_status"] == "not_delivered"  # status not fully_delivered
    sent = order.rules_sent(
        event(
            "acct",
            "contract",
            "u",
            before=acct_order("contract"),
            after=acct_order("contract", status="fully_delivered"),
        )
    )
    assert sent["CT-11"]["delivery_status"] == "delivered"
    sent = order.rules_sent(event("acct", "receipt", after=receipt("r-1", "1000")))
    assert sent["CT-12"] == {
        "receipted_amount": "1000",
        "remaining_receivable": "0",
        "pay_status": "paid",
        "receipts": [{"id": "r-1", "code": "R-1", "amount": "1000"}],
    }
    assert not [r for r in sent if r.startswith("SO-")]


def test_a_voucher_before_its_order_is_held_then_counted(rules: RuleBook) -> None:
    order = Order(rules)
    decision = order.send(event("acct", "sales_voucher", after=voucher(l1=2)))
    assert decision.commands == [] and "held" in decision.audit.reason
    sent = order.rules_sent(event("acct", "sale_order", after=acct_order()))
    assert sent["SO-9"]["delivered_quantities"][0] == {"line_id": "l1", "delivered_quantity": "2"}
    assert sent["SO-13"] == {"delivery_status": "delivering"}


def test_a_duplicate_event_changes_nothing(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    ev = event("acct", "receipt", after=receipt())
    assert order.send(ev).commands
    before = copy.deepcopy(order.aggregate.to_json())
    assert order.send(ev) is None
    assert order.aggregate.to_json() == before


def test_a_replay_before_the_table_was_stored_repeats_the_same_command_ids(rules: RuleBook) -> None:
    """At-least-once: the agent stores the aggregate only after its commands are acknowledged, so a
    crash in between decides the same event on the same stored aggregate again: same ids."""
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    stored = order.aggregate.to_json()
    ev = event("acct", "receipt", after=receipt())
    first = decide_for_order(ev, OrderAggregate.from_json(stored), order.state, rules, now_ms=NOW)
    again = decide_for_order(ev, OrderAggregate.from_json(stored), order.state, rules, now_ms=NOW + 5)
    assert len(first.commands) == 2
    assert [c.command_id for c in first.commands] == [c.command_id for c in again.commands]


def test_aggregate_survives_its_storage_form(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    order.send(event("acct", "sales_voucher", after=voucher(l1="1.5", invoice_no="1")))
    order.send(event("acct", "receipt", after=receipt()))
    restored = OrderAggregate.from_json(order.aggregate.to_json())
    assert derive(restored) == derive(order.aggregate)
    assert restored.to_json() == order.aggregate.to_json()


# --- property: any interleaving, with duplicates, ends where the oracle says ----------------------

# One document history: each document's versions in order (None = deleted), documents interleaved.
quantities = st.sampled_from([0, 1, 2, 3, "0.5"])
amounts = st.sampled_from(["0", "100", "250.50", "400", "1000"])


@st.composite
def histories(draw):
    docs: dict[str, list[dict[str, Any]]] = {}
    order_versions = draw(st.lists(st.sampled_from(["900", "1000", "1250.25"]), min_size=1, max_size=3))
    docs["order"] = [
        event("acct", "sale_order", "c" if i == 0 else "u", after=acct_order(total_amount=total), event_id=f"order-{i}")
        for i, total in enumerate(order_versions)
    ]
    for n in range(draw(st.integers(0, 4))):
        versions = []
        for i in range(draw(st.integers(1, 3))):
            if i > 0 and draw(st.booleans()) and draw(st.booleans()):
                versions.append(
                    event("acct", "sales_voucher", "d", before=voucher(f"v-{n}"), after=None, event_id=f"v-{n}-{i}")
                )
                break
            invoiced = draw(st.booleans())
            versions.append(
                event(
                    "acct",
                    "sales_voucher",
                    "c" if i == 0 else "u",
                    after=voucher(
                        f"v-{n}",
                        l1=draw(quantities),
                        l2=draw(quantities),
                        invoice_no="HD" if invoiced else None,
                        invoice_date="2026-11-27",
                    ),
                    event_id=f"v-{n}-{i}",
                )
            )
        docs[f"v-{n}"] = versions
    for n in range(draw(st.integers(0, 3))):
        versions = []
        for i in range(draw(st.integers(1, 2))):
            if i > 0 and draw(st.booleans()):
                versions.append(
                    event("acct", "receipt", "d", before=receipt(f"r-{n}"), after=None, event_id=f"r-{n}-{i}")
                )
                break
            versions.append(
                event(
                    "acct",
                    "receipt",
                    "c" if i == 0 else "u",
                    after=receipt(f"r-{n}", draw(amounts)),
                    event_id=f"r-{n}-{i}",
                )
            )
        docs[f"r-{n}"] = versions
    # interleave, keeping each document's own order (Kafka keeps one key's order)
    queues = {name: list(versions) for name, versions in docs.items()}
    stream: list[ChangeEvent] = []
    while queues:
        name = draw(st.sampled_from(sorted(queues)))
        stream.append(queues[name].pop(0))
        if not queues[name]:
            del queues[name]
    # at-least-once delivery: some events again, later
    for ev in draw(st.lists(st.sampled_from(stream), max_size=5)):
        stream.insert(draw(st.integers(stream.index(ev) + 1, len(stream))), ev)
    return docs, stream


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_any_interleaving_with_duplicates_matches_the_oracle(rules: RuleBook, history) -> None:
    _docs, stream = history
    order = Order(rules)
    sent: dict[str, dict[str, Any]] = {}
    for ev in stream:
        decision = order.send(ev)
        for command in decision.commands if decision else []:
            sent[command.rule] = command.fields
    # the truth from the documents alone, by tests/core/oracle.py (not by apply/derive)
    truth = truths(stream)[(T, "ao-1")].crm()
    assert wire_problems(derive(order.aggregate), truth, [*SALE_ORDER_FIELDS, "receipts"]) == []
    # the last command of each rule says what the truth says (nothing lost, nothing stale)
    for rule_id, fields in sent.items():
        assert wire_problems(fields, truth, fields) == [], rule_id


# --- the edges of what CRM is shown (found by mutation testing, docs/mutation.md) ------------------


def shown(order_changes: dict[str, Any], *documents: ChangeEvent, kind: str = "sale_order") -> dict[str, Any]:
    """What CRM shows for an accounting order after ``documents`` (derive over its aggregate)."""
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    aggregate.apply(event("acct", kind, after=acct_order(kind, **order_changes)))
    for document in documents:
        aggregate.apply(document)
    return derive(aggregate)


def test_an_order_nothing_happened_to_is_unpaid_not_invoiced_and_keeps_its_crm_status() -> None:
    values = shown({})
    assert (values["pay_status"], values["invoicing_status"], values["status"]) == ("unpaid", "not_invoiced", None)
    assert values["delivery_status"] == "not_delivered" and values["invoiced_date"] is None


def test_an_order_of_one_unit_and_one_dong() -> None:
    """The smallest order there is: its one unit delivered is "delivered", its one đồng owed "unpaid",
    its one đồng invoiced "completed"."""
    lines = [{"line_id": "l1", "product_code": "SP1", "quantity": 1, "amount": "1"}]
    one = {"total_amount": "1", "lines": lines}
    assert shown(one)["pay_status"] == "unpaid"
    delivered = event("acct", "sales_voucher", after=voucher(l1=1, lines=[{**lines[0]}], invoice_no="1"))
    values = shown(one, delivered)
    assert (values["delivery_status"], values["status"], values["invoiced_amount"]) == ("delivered", "completed", "1")


def test_an_order_of_nothing_is_paid_and_whatever_is_delivered_is_delivering() -> None:
    """An order of total 0 owes nothing (paid, never "completed" by invoicing nothing); one without
    lines, of which a voucher delivers something, is delivering, never delivered."""
    values = shown({"total_amount": "0", "lines": []})
    assert (values["pay_status"], values["status"]) == ("paid", None)
    values = shown({"total_amount": "0", "lines": []}, event("acct", "sales_voucher", after=voucher(l1=1)))
    assert values["delivery_status"] == "delivering"


def test_an_empty_amount_counts_as_zero_and_a_bad_one_is_bad_input_naming_it(rules: RuleBook) -> None:
    """An event that reached the aggregates without the edge's checks (validation refuses these first)."""
    assert shown({}, event("acct", "receipt", after=receipt(amount="")))["receipted_amount"] == "0"
    with pytest.raises(BadInput) as raised:
        shown({}, event("acct", "receipt", after=receipt(amount="12,5")))
    assert raised.value.kind == "schema"
    assert raised.value.message.endswith("amount: '1…' (4 characters) is not a decimal number")
    with pytest.raises(BadInput) as raised:
        shown({}, event("acct", "receipt", after={**receipt(), "amount": 0.1}))
    assert raised.value.message.endswith(
        "amount: a float of 3 digits must be a decimal string or an integer, not a float"
    )


def test_a_receipt_without_its_order_is_bad_input_and_a_contract_is_its_own_aggregate() -> None:
    orphan = event("acct", "receipt", after={**receipt(), "order_id": None})
    with pytest.raises(BadInput) as raised:
        check_document(orphan)
    assert raised.value.kind == "schema" and "receipt r-1 has no order_id" in raised.value.message
    with pytest.raises(BadInput) as raised:
        aggregate_inputs(orphan)
    assert (raised.value.kind, raised.value.message) == (
        "schema",
        f"event {orphan.event_id!r}: receipt r-1 names no order it belongs to",
    )
    assert order_key_of(event("acct", "contract", after=acct_order("contract"))) == "t1:ao-1"
    assert order_key_of(event("crm", "sale_order", after={"id": "o-1", "code": "DH1"})) is None


@pytest.mark.parametrize("entity", ["sales_voucher", "receipt"])
def test_a_document_moved_to_another_order_leaves_the_first(entity: str) -> None:
    document = voucher() if entity == "sales_voucher" else receipt()
    moved = {**document, "order_id": "ao-2"}
    ev = event("acct", entity, "u", before=document, after=moved)
    (old, removal, part), (new, same, new_part) = aggregate_inputs(ev)
    assert (old, part, new, new_part, same) == ("t1:ao-1", "removal", "t1:ao-2", "document", ev)
    assert (removal.op, removal.after, removal.action, removal.record_id) == ("d", None, None, document["id"])
    assert removal.event_id == f"{ev.event_id}:moved-from:ao-1"
    kept = event("acct", entity, "u", before=document, after={**document, "code": "NEW"})
    assert [(key, part) for key, _, part in aggregate_inputs(kept)] == [("t1:ao-1", "document")]
    created = event("acct", entity, "c", before=None, after=moved)
    assert [(key, part) for key, _, part in aggregate_inputs(created)] == [("t1:ao-2", "document")]
    deleted = event("acct", entity, "d", before=document, after=None)
    assert [(key, part) for key, _, part in aggregate_inputs(deleted)] == [("t1:ao-1", "document")]


def test_the_same_event_decided_again_sends_the_same_commands_again(rules: RuleBook) -> None:
    """A replay the aggregate already counted (its id no longer among the recent ones) re-sends what
    it sent, with the same ids: the connector answers duplicate. Another event with the same values
    sends nothing (X-2)."""
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order()))
    ev = event("acct", "receipt", after=receipt())
    first = decide_for_order(ev, order.aggregate, order.state, rules, now_ms=NOW)
    again = decide_for_order(ev, order.aggregate, order.state, rules, now_ms=NOW)
    assert [c.command_id for c in again.commands] == [c.command_id for c in first.commands] != []
    other = event("acct", "receipt", "u", before=receipt(), after=receipt())
    assert decide_for_order(other, order.aggregate, order.state, rules, now_ms=NOW).commands == []


def test_a_documents_audit_says_what_its_order_made_of_it(rules: RuleBook) -> None:
    order = Order(rules)
    held = order.send(event("acct", "receipt", after=receipt("r-0", "0")))
    assert held.audit.notes == [
        AuditNote(tag=Note.HELD, rule=None, text="held: receipt r-0 counts once order ao-1 arrives")
    ]
    order.send(event("acct", "sale_order", after=acct_order()))
    counted = order.send(event("acct", "receipt", after=receipt("r-1", "400")))
    # derived commands went out: "no rule of the matrix" for a receipt is not why, and not said
    assert counted.commands and counted.audit.notes == [] and counted.audit.reason is None
    assert counted.audit.ts_ms == NOW and {c.ts_ms for c in counted.commands} == {NOW}
    unchanged = order.send(event("acct", "receipt", after=receipt("r-2", "0")))
    assert unchanged.commands == []
    assert unchanged.audit.notes == [
        AuditNote(
            tag=Note.AGGREGATES_UNCHANGED,
            rule=None,
            text="aggregates of order DH1 updated; no derived value changed (X-2)",
        )
    ]


@pytest.mark.parametrize("linked_by", ["code", "id"])
def test_an_order_without_crm_id_is_addressed_by_its_link(linked_by: str, rules: RuleBook) -> None:
    order = Order(rules)
    if linked_by == "code":
        order.state.link(T, "sale_order", "DH1", crm="o-1")
    else:
        order.state.link(T, "sale_order", None, crm="o-1", acct="ao-1")
    order.send(event("acct", "sale_order", after=acct_order(crm_id=None)))
    decision = order.send(event("acct", "receipt", after=receipt()))
    assert {c.key for c in decision.commands} == {CommandKey(id="o-1", code="DH1")}


def test_derived_command_ids_of_an_order_without_code_do_not_change_once_it_is_linked(rules: RuleBook) -> None:
    stored = Order(rules)
    stored.send(event("acct", "sale_order", after=acct_order(code=None, crm_id=None)))
    snapshot = stored.aggregate.to_json()
    ev = event("acct", "receipt", after=receipt())
    before = decide_for_order(ev, OrderAggregate.from_json(snapshot), stored.state, rules, now_ms=NOW)
    stored.state.link(T, "sale_order", None, crm="o-1", acct="ao-1")
    after = decide_for_order(ev, OrderAggregate.from_json(snapshot), stored.state, rules, now_ms=NOW)
    assert [c.key.id for c in before.commands] == [None, None] and [c.key.id for c in after.commands] == ["o-1"] * 2
    assert [c.command_id for c in before.commands] == [c.command_id for c in after.commands]


def test_a_moved_document_with_an_explicit_action_leaves_its_old_order_as_a_deletion() -> None:
    ev = event("acct", "receipt", "u", action="update", before=receipt(), after={**receipt(), "order_id": "ao-2"})
    (_, removal, _), _ = aggregate_inputs(ev)
    assert (removal.op, removal.action) == ("d", None)


def test_an_order_linked_by_code_gets_the_statuses_of_documents_held_for_it(rules: RuleBook) -> None:
    """A receipt before its order (held); the order comes without crm_id, its CRM order known by code."""
    order = Order(rules)
    order.state.link(T, "sale_order", "DH1", crm="o-1")
    order.send(event("acct", "receipt", after=receipt()))
    decision = order.send(event("acct", "sale_order", after=acct_order(crm_id=None)))
    assert {c.key for c in decision.commands} == {CommandKey(id="o-1", code="DH1")}


def test_a_rule_of_the_matrix_on_an_order_is_stamped_with_the_decisions_time(rules: RuleBook) -> None:
    order = Order(rules)
    order.send(event("acct", "sale_order", after=acct_order(revenue_status="proposed")))
    ev = event("acct", "sale_order", "u", before=acct_order(revenue_status="proposed"), after=acct_order())
    decision = order.send(ev)
    assert [(c.rule, c.ts_ms) for c in decision.commands] == [("SO-8", NOW)]
