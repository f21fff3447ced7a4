"""Records, state and checks shared by the rule tests of ``tests/core`` (``test_*_rules.py``).

Every rule of the sync matrix (``docs/matrix.md``) goes through ``decide`` with the in-memory
FakeState. What is asserted is what a user of the command and audit topics would check: the whole
command (the rule it names, target system, entity, op, key, and every field it writes with its
value: ``==``, never a subset), and the audit record's ``rule`` and exact ``rules``; for a "none"
outcome, that no command is emitted and the audit record names the rule and says why. Both say
whether the outcome rests on something not known yet (``Decision.rests_on_absence``). A case table
row is ``(rule_id, event kwargs, links, order_target, expect)``, checked by ``check_case``, which
refuses an expectation that does not name the whole command (``EXPECT_KEYS``, ``REQUIRED_KEYS``).
"""

from __future__ import annotations

from typing import Any

from common.names import System
from streams.core.contract import Command, CommandKey, Note, Op
from streams.core.decide import Decision, decide
from streams.core.rules import RuleBook
from tests.fakes import FakeState, event

T = "t1"
NOW = 1_764_201_700_000

# --- records -----------------------------------------------------------------------------------

CUSTOMER = {
    "id": "c-1",
    "code": "KH1",
    "name": "Công ty A",
    "tax_code": "0101234567",
    "address": "Hà Nội",
    "phone": "0901000001",
    "email": "a@example.vn",
    "is_personal": False,
}
ACCT_CUSTOMER = {**CUSTOMER, "id": "a-1"}
NEW_ACCT_CUSTOMER = {**CUSTOMER, "id": "a-2", "code": "KH2", "name": "Công ty B"}
CATEGORY = {"id": "cat-1", "code": "LH1", "name": "Đồ uống", "parent_code": None}
ACCT_CATEGORY = {**CATEGORY, "id": "acat-1"}
PRODUCT = {
    "id": "p-1",
    "code": "SP1",
    "name": "Trà xanh",
    "category_code": "LH1",
    "unit": "hộp",
    "unit_price": "100000",
    "vat_rate": "10",
}
ACCT_PRODUCT = {**PRODUCT, "id": "ap-1"}
LINES = [{"line_id": "l1", "product_code": "SP1", "quantity": 2, "unit_price": "100000", "amount": "200000"}]
QUOTE = {"id": "q-1", "code": "BG1", "customer_code": "KH1", "lines": LINES, "total_amount": "200000"}
ENTRIES = [{"id": "re-1", "amount": "200000", "status": "recorded"}]
# What QUO-1 writes to acct for quote q-1.
QUOTE_FIELDS = {"code": "BG1", "customer_code": "KH1", "lines": LINES, "total_amount": "200000", "crm_id": "q-1"}


def order(revenue_status: str = "proposed", **changes: Any) -> dict[str, Any]:
    """A CRM order (sale_order on the CRM side)."""
    return {
        "id": "o-1",
        "code": "DH1",
        "customer_code": "KH1",
        "lines": LINES,
        "total_amount": "200000",
        "revenue_status": revenue_status,
        "status": "not_started",
        "delivery_deadline": "2025-12-31",
        "payment_deadline": "2026-01-31",
        "revenue_entries": ENTRIES,
        **changes,
    }


def order_fields(revenue_status: str, **changes: Any) -> dict[str, Any]:
    """What SO-1/2/4 and CT-1/2/4 write to acct for CRM order o-1: the whole order but its CRM id,
    which the acct record carries as ``crm_id`` (X-3)."""
    return {k: v for k, v in order(revenue_status, **changes).items() if k != "id"} | {"crm_id": "o-1"}


def acct_order(revenue_status: str = "proposed", **changes: Any) -> dict[str, Any]:
    """An acct sales order or contract that came from CRM order o-1."""
    return {
        "id": "ao-1",
        "code": "DH1",
        "crm_id": "o-1",
        "lines": LINES,
        "revenue_status": revenue_status,
        "status": "in_progress",
        "total_amount": "200000",
        "delivery_deadline": "2025-12-31",
        "payment_deadline": "2026-01-31",
        "is_invoiced": False,
        "delivery_status": "not_delivered",
        "revenue_entries": ENTRIES,
        **changes,
    }


def crm_invoice(status: str = "proposed", **changes: Any) -> dict[str, Any]:
    return {
        "id": "i-1",
        "code": "HD1",
        "order_code": "DH1",
        "status": status,
        "amount": "200000",
        "description": "Xuất hóa đơn đợt 1",
        **changes,
    }


def acct_invoice(status: str, **changes: Any) -> dict[str, Any]:
    return {"id": "ai-1", "crm_id": "i-1", "status": status, **changes}


ISSUED = {
    "invoice_date": "2025-12-01",
    "invoice_no": "0000123",
    "lookup_code": "TRACUU123",
    "send_status": "sent",
    "customer_received": True,
}

POLICY = {
    "id": "pp-1",
    "code": "CSG1",
    "name": "Giá đại lý",
    "category_codes": ["LH1", "LH2"],
    "prices": [
        {"product_code": "SP1", "category_code": "LH1", "price": "90000"},
        {"product_code": "SP2", "category_code": "LH2", "price": "50000"},
    ],
    "valid_from": "2025-01-01",
    "valid_to": None,
}

# --- helpers -----------------------------------------------------------------------------------


def base_state(order_target: str = "sale_order", links: tuple[tuple[str, str, str, str], ...] = ()) -> FakeState:
    """Customer KH1 and product SP1 linked both ways (so documents need no X-4 dependencies)."""
    state = FakeState()
    state.order_targets[T] = order_target
    state.link(T, "customer", "KH1", crm="c-1", acct="a-1")
    state.link(T, "product", "SP1", crm="p-1", acct="ap-1")
    state.remember(T, "customer", CUSTOMER)
    state.remember(T, "product", PRODUCT)
    for family, code, crm_id, acct_id in links:
        state.link(T, family, code, crm=crm_id, acct=acct_id)
    return state


ORDER_LINK = ("sale_order", "DH1", "o-1", "ao-1")
INVOICE_LINK = ("invoice", "HD1", "i-1", "ai-1")


def run(ev, state: FakeState, rules: RuleBook) -> Decision:
    return decide(ev, state, rules, now_ms=NOW)


# Notes that are about no rule: nothing matched, or a document is only counted.
RULELESS_NOTES = frozenset({Note.NO_RULE, Note.HELD, Note.AGGREGATES_UNCHANGED})


def assert_audit(decision: Decision, rule_id: str, rules: list[str] | None = None) -> None:
    """The audit record names the matched rule first (``rule``) and exactly the rules involved; each
    of its notes has a tag a program can read and names one of those rules (unless it is about none),
    and ``reason`` says what the notes say, in their order."""
    audit = decision.audit
    assert audit.rule == rule_id
    assert audit.rules == (rules if rules is not None else [rule_id])
    for note in audit.notes:
        assert isinstance(note.tag, Note), note
        assert (note.rule is None) if note.tag in RULELESS_NOTES else (note.rule in audit.rules), note
    assert audit.reason == ("; ".join(note.text for note in audit.notes) or None)


def assert_none(
    decision: Decision,
    rule_id: str,
    *,
    because: str | None = None,
    rules: list[str] | None = None,
    rests_on_absence: bool = False,
) -> None:
    """No command, and the audit record names the rule (and only ``rules``) and gives a reason.

    ``rests_on_absence``: the outcome holds only because something is not known yet (no link, no
    CRM record), so a worker that catches up decides the event again (``Decision.rests_on_absence``).
    """
    assert decision.commands == [], [c.rule for c in decision.commands]
    assert_audit(decision, rule_id, rules)
    assert decision.rests_on_absence is rests_on_absence
    assert decision.audit.commands == []
    assert decision.audit.reason and rule_id in decision.audit.reason
    if because:
        assert because in decision.audit.reason


def only_command(decision: Decision) -> Command:
    assert len(decision.commands) == 1, (decision.audit.reason, [c.rule for c in decision.commands])
    return decision.commands[0]


# What a command expectation holds. Every one names the whole command: a check of "some fields"
# let wrong values, extra fields and a wrong audit rule through (issue 24), so there is none.
EXPECT_KEYS = frozenset(
    {"target", "entity", "op", "key", "fields", "read_only", "depends_on", "rules", "rests_on_absence"}
)
REQUIRED_KEYS = frozenset({"target", "entity", "op", "key", "fields"})


def assert_command(command: Command, decision: Decision, rule_id: str, expect: dict[str, Any]) -> None:
    """The whole command as the connector reads it, and the audit record of the decision."""
    assert set(expect) <= EXPECT_KEYS, f"unknown expectation {sorted(set(expect) - EXPECT_KEYS)}"
    assert set(expect) >= REQUIRED_KEYS, (
        f"a case names the whole command: missing {sorted(REQUIRED_KEYS - set(expect))}"
    )
    assert command.rule == rule_id
    assert command.target == System(expect["target"])
    assert command.entity == expect["entity"]
    assert command.op == Op(expect["op"])
    assert command.key == CommandKey(**expect["key"])
    assert command.fields == expect["fields"]
    assert command.tenant == T
    assert command.read_only is expect.get("read_only", False)
    assert command.depends_on == expect.get("depends_on", [])
    assert command.ts_ms == NOW
    audit = decision.audit
    assert (command.source.system, command.source.entity, command.source.id, command.source.event_id) == (
        audit.system,
        audit.entity,
        audit.record_id,
        audit.event_id,
    )
    assert_audit(decision, rule_id, expect.get("rules"))
    assert decision.rests_on_absence is expect.get("rests_on_absence", False)
    # the audit record lists every command under its rule
    assert [(a.command_id, a.rule) for a in audit.commands] == [(c.command_id, c.rule) for c in decision.commands]


def ev_kwargs(system: str, entity: str, op: str = "c", **kw: Any) -> dict[str, Any]:
    return {"system": system, "entity": entity, "op": op, **kw}


def copied(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What a copy of ``record`` writes in the other system: every field but the record's own ``id``
    (ids are local to a system, X-3), with ``changes``."""
    return {**{k: v for k, v in record.items() if k != "id"}, **changes}


# --- a case table: a rule, an event, the state, what comes out -------------------------------

NONE = "none"


def none(
    because: str | None = None, *, rules: list[str] | None = None, rests_on_absence: bool = False
) -> dict[str, Any]:
    """A "none" outcome: no command; the audit names the rule (and exactly ``rules``) and ``because``."""
    return {NONE: True, "because": because, "rules": rules, "rests_on_absence": rests_on_absence}


CASE_PARAMS = ("rule_id", "kwargs", "links", "order_target", "expect")


def check_case(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    """One row of a case table: the event decided on the base state, and what must come out."""
    state = base_state(order_target, links)
    decision = run(event(**kwargs), state, rules)
    if expect.get(NONE):
        assert set(expect) == {NONE, "because", "rules", "rests_on_absence"}, sorted(expect)
        assert_none(
            decision,
            rule_id,
            because=expect["because"],
            rules=expect["rules"],
            rests_on_absence=expect["rests_on_absence"],
        )
    else:
        assert_command(only_command(decision), decision, rule_id, expect)


# --- accounting documents behind the derived rules (vouchers and receipts) -------------------

VOUCHER = {
    "id": "v-1",
    "code": "CT1",
    "order_id": "ao-1",
    "lines": [{"line_id": "l1", "product_code": "SP1", "quantity": 2, "amount": "200000"}],
    "invoice_no": None,
    "einvoice_published": False,
}
RECEIPT = {"id": "r-1", "code": "PT1", "order_id": "ao-1", "amount": "200000"}
