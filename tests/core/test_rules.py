"""Every rule of the sync matrix (``docs/matrix.md``) through ``decide``, with the in-memory FakeState.

What is asserted is what a user of the command and audit topics would check: the rule a command
names, its target system, entity, op and key, the fields it writes; for a "none" rule, that no
command is emitted and the audit record names the rule and says why.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import Action, BadInput, Command, CommandKey, Note, Op, System, decode_change_event
from streams.core.decide import Decision, decide
from streams.core.rules import Effect, RuleBook
from streams.core.transitions import derive_action
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


def assert_none(decision: Decision, rule_id: str, *, because: str | None = None) -> None:
    """No command, and the audit record names the rule and gives a reason."""
    assert decision.commands == [], [c.rule for c in decision.commands]
    assert rule_id in decision.audit.rules
    assert decision.audit.commands == []
    assert decision.audit.reason and rule_id in decision.audit.reason
    if because:
        assert because in decision.audit.reason


def only_command(decision: Decision) -> Command:
    assert len(decision.commands) == 1, (decision.audit.reason, [c.rule for c in decision.commands])
    return decision.commands[0]


def assert_command(command: Command, decision: Decision, rule_id: str, expect: dict[str, Any]) -> None:
    assert command.rule == rule_id
    assert command.target == System(expect["target"])
    assert command.entity == expect["entity"]
    assert command.op == Op(expect["op"])
    assert command.key == CommandKey(**expect["key"])
    assert command.tenant == T
    assert command.read_only is expect.get("read_only", False)
    if "fields" in expect:
        assert command.fields == expect["fields"]
    for name, value in expect.get("has", {}).items():
        assert command.fields.get(name) == value, name
    for name in expect.get("lacks", ()):
        assert name not in command.fields, name
    # the audit record lists the command under its rule
    assert rule_id in decision.audit.rules
    assert [(a.command_id, a.rule) for a in decision.audit.commands] == [
        (c.command_id, c.rule) for c in decision.commands
    ]


def ev_kwargs(system: str, entity: str, op: str = "c", **kw: Any) -> dict[str, Any]:
    return {"system": system, "entity": entity, "op": op, **kw}


# --- one table: a rule, an event, the state, what comes out -------------------------------------

NONE = "none"


def none(because: str | None = None) -> dict[str, Any]:
    return {NONE: True, "because": because}


WRITE_AND_NONE_CASES = [
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
            "has": {"name": "Công ty A mới", "tax_code": "0101234567", "code": "KH1"},
            "lacks": ("id",),
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
        none(because="not linked"),
        id="CUS-3/unlinked-none",
    ),
    pytest.param("CUS-4", ev_kwargs("crm", "customer", "d", before=CUSTOMER), (), "sale_order", none(), id="CUS-4"),
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
            "has": {"name": "Công ty B", "code": "KH2", "tax_code": "0101234567"},
            "lacks": ("id",),
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
            "has": {"name": "Công ty B"},
            "lacks": ("id",),
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
            "has": {"phone": "0909999999"},
            "lacks": ("id",),
        },
        id="CUS-8",
    ),
    pytest.param(
        "CUS-9", ev_kwargs("acct", "customer", "d", before=ACCT_CUSTOMER), (), "sale_order", none(), id="CUS-9"
    ),
    # Category and product
    pytest.param(
        "CAT-1",
        ev_kwargs("crm", "product_category", after={**CATEGORY, "code": "LH2", "id": "cat-2"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH2"},
            "has": {"name": "Đồ uống", "code": "LH2"},
            "lacks": ("id",),
        },
        id="CAT-1",
    ),
    pytest.param(
        "CAT-1",
        ev_kwargs("crm", "product_category", "u", before=CATEGORY, after={**CATEGORY, "name": "Nước giải khát"}),
        (("product_category", "LH1", "cat-1", "acat-1"),),
        "sale_order",
        {
            "target": "acct",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": "acat-1", "code": "LH1"},
            "has": {"name": "Nước giải khát"},
        },
        id="CAT-1/update",
    ),
    pytest.param(
        "CAT-2",
        ev_kwargs("acct", "product_category", after=ACCT_CATEGORY),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH1"},
            "has": {"name": "Đồ uống"},
            "lacks": ("id",),
        },
        id="CAT-2",
    ),
    pytest.param(
        "CAT-2",
        ev_kwargs("acct", "product_category", "u", before=ACCT_CATEGORY, after={**ACCT_CATEGORY, "name": "Nước"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH1"},
            "has": {"name": "Nước"},
        },
        id="CAT-2/update",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", after={**PRODUCT, "id": "p-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "has": {"unit_price": "100000", "vat_rate": "10", "category_code": "LH1"},
            "lacks": ("id",),
        },
        id="PRD-1",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", action="import", after={**PRODUCT, "id": "p-2", "code": "SP2"}),
        (),
        "sale_order",
        {"target": "acct", "entity": "product", "op": "upsert", "key": {"id": None, "code": "SP2"}},
        id="PRD-1/import",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", "u", before=PRODUCT, after={**PRODUCT, "unit_price": "110000"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product",
            "op": "upsert",
            "key": {"id": "ap-1", "code": "SP1"},
            "has": {"unit_price": "110000"},
        },
        id="PRD-1/update",
    ),
    pytest.param("PRD-2", ev_kwargs("crm", "product", "d", before=PRODUCT), (), "sale_order", none(), id="PRD-2"),
    pytest.param(
        "PRD-2",
        ev_kwargs("crm", "product", "u", action="merge", before=PRODUCT, after=PRODUCT, merged_ids=["p-9"]),
        (),
        "sale_order",
        none(),
        id="PRD-2/merge",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", after={**ACCT_PRODUCT, "id": "ap-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "has": {"name": "Trà xanh"},
            "lacks": ("id",),
        },
        id="PRD-3",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", action="import", after={**ACCT_PRODUCT, "id": "ap-2", "code": "SP2"}),
        (),
        "sale_order",
        {"target": "crm", "entity": "product", "op": "upsert", "key": {"id": None, "code": "SP2"}},
        id="PRD-3/import",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", "u", before=ACCT_PRODUCT, after={**ACCT_PRODUCT, "unit": "thùng"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product",
            "op": "upsert",
            "key": {"id": "p-1", "code": "SP1"},
            "has": {"unit": "thùng"},
        },
        id="PRD-3/update",
    ),
    pytest.param("PRD-4", ev_kwargs("acct", "product", "d", before=ACCT_PRODUCT), (), "sale_order", none(), id="PRD-4"),
    pytest.param(
        "PRD-4",
        ev_kwargs("acct", "product", "u", action="merge", before=ACCT_PRODUCT, after=ACCT_PRODUCT),
        (),
        "sale_order",
        none(),
        id="PRD-4/merge",
    ),
    # Quote
    pytest.param(
        "QUO-1",
        ev_kwargs("crm", "quote", after=QUOTE),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "quote",
            "op": "upsert",
            "key": {"id": None, "code": "BG1"},
            "has": {"crm_id": "q-1", "customer_code": "KH1", "lines": LINES, "total_amount": "200000"},
            "lacks": ("id",),
        },
        id="QUO-1",
    ),
    pytest.param(
        "QUO-1",
        ev_kwargs("crm", "quote", action="import", after=QUOTE),
        (),
        "sale_order",
        {"target": "acct", "entity": "quote", "op": "upsert", "key": {"id": None, "code": "BG1"}},
        id="QUO-1/import",
    ),
    pytest.param(
        "QUO-1",
        ev_kwargs("crm", "quote", "u", before=QUOTE, after={**QUOTE, "total_amount": "180000"}),
        (("quote", "BG1", "q-1", "aq-1"),),
        "sale_order",
        {
            "target": "acct",
            "entity": "quote",
            "op": "upsert",
            "key": {"id": "aq-1", "code": "BG1"},
            "has": {"total_amount": "180000"},
        },
        id="QUO-1/update",
    ),
    pytest.param("QUO-2", ev_kwargs("crm", "quote", "d", before=QUOTE), (), "sale_order", none(), id="QUO-2"),
    pytest.param(
        "QUO-3", ev_kwargs("acct", "quote", after={**QUOTE, "id": "aq-1"}), (), "sale_order", none(), id="QUO-3"
    ),
    pytest.param(
        "QUO-3",
        ev_kwargs(
            "acct", "quote", "u", before={**QUOTE, "id": "aq-1"}, after={**QUOTE, "id": "aq-1", "total_amount": "1"}
        ),
        (),
        "sale_order",
        none(),
        id="QUO-3/update",
    ),
    pytest.param(
        "QUO-3",
        ev_kwargs("acct", "quote", "d", before={**QUOTE, "id": "aq-1"}),
        (),
        "sale_order",
        none(),
        id="QUO-3/delete",
    ),
    # Order as an acct sales order
    *[
        pytest.param(
            "SO-1",
            ev_kwargs("crm", "sale_order", action=action, after=order("proposed")),
            (),
            "sale_order",
            {
                "target": "acct",
                "entity": "sale_order",
                "op": "create",
                "key": {"id": None, "code": "DH1"},
                "has": {
                    "crm_id": "o-1",
                    "code": "DH1",
                    "revenue_status": "proposed",
                    "lines": LINES,
                    "customer_code": "KH1",
                },
                "lacks": ("id",),
            },
            id=f"SO-1/{action}",
        )
        for action in ("create", "clone", "import")
    ],
    pytest.param(
        "SO-1",
        ev_kwargs("crm", "sale_order", after=order("draft")),
        (),
        "sale_order",
        none(because="revenue_status"),
        id="SO-1/draft-none",
    ),
    pytest.param(
        "SO-1",
        ev_kwargs("crm", "sale_order", action="clone", after=order("recorded")),
        (),
        "sale_order",
        none(because="'recorded'"),
        id="SO-1/recorded-none",
    ),
    pytest.param(
        "SO-2",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("proposed", total_amount="300000")),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "acct",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "has": {"total_amount": "300000", "crm_id": "o-1"},
            "lacks": ("id",),
        },
        id="SO-2",
    ),
    pytest.param(
        "SO-2",
        ev_kwargs(
            "crm", "sale_order", "u", before=order("recorded"), after=order("recorded", payment_deadline="2026-02-28")
        ),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "acct",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "has": {"payment_deadline": "2026-02-28", "revenue_status": "recorded"},
        },
        id="SO-2/recorded",
    ),
    pytest.param(
        "SO-2",
        ev_kwargs("crm", "sale_order", "u", before=order("draft"), after=order("draft", total_amount="300000")),
        (ORDER_LINK,),
        "sale_order",
        none(because="revenue_status"),
        id="SO-2/draft-none",
    ),
    pytest.param(
        "SO-3", ev_kwargs("crm", "sale_order", "d", before=order()), (ORDER_LINK,), "sale_order", none(), id="SO-3"
    ),
    pytest.param(
        "SO-4",
        ev_kwargs("crm", "sale_order", "u", before=order("draft"), after=order("proposed")),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "sale_order",
            "op": "upsert",
            "key": {"id": None, "code": "DH1"},
            "has": {"revenue_status": "proposed", "crm_id": "o-1", "lines": LINES},
        },
        id="SO-4",
    ),
    pytest.param(
        "SO-5",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("draft")),
        (ORDER_LINK,),
        "sale_order",
        none(because="not deleted"),
        id="SO-5",
    ),
    pytest.param(
        "SO-6",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "acct",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": {"revenue_status": "recorded"},
        },
        id="SO-6",
    ),
    pytest.param(
        "SO-6",
        ev_kwargs("crm", "sale_order", "u", before=order("proposed"), after=order("rejected")),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "acct",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "ao-1", "code": "DH1"},
            "fields": {"revenue_status": "not_recorded"},
        },
        id="SO-6/reject",
    ),
    pytest.param("SO-7", ev_kwargs("acct", "sale_order", after=acct_order()), (), "sale_order", none(), id="SO-7"),
    pytest.param(
        "SO-7",
        ev_kwargs("acct", "sale_order", "u", before=acct_order(), after=acct_order(total_amount="1")),
        (),
        "sale_order",
        none(),
        id="SO-7/update",
    ),
    pytest.param(
        "SO-7", ev_kwargs("acct", "sale_order", "d", before=acct_order()), (), "sale_order", none(), id="SO-7/delete"
    ),
    pytest.param(
        "SO-8",
        ev_kwargs("acct", "sale_order", "u", before=acct_order("proposed"), after=acct_order("recorded")),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {"revenue_status": "recorded"},
        },
        id="SO-8",
    ),
    pytest.param(
        "SO-8",
        ev_kwargs("acct", "sale_order", "u", before=acct_order("proposed"), after=acct_order("not_recorded")),
        (ORDER_LINK,),
        "sale_order",
        {
            "target": "crm",
            "entity": "sale_order",
            "op": "update",
            "key": {"id": "o-1", "code": "DH1"},
            "fields": {"revenue_status": "rejected"},
        },
        id="SO-8/reject",
    ),
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
                "has": {"crm_id": "o-1", "code": "DH1", "revenue_status": "proposed", "lines": LINES},
                "lacks": ("id",),
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
            "has": {"delivery_deadline": "2026-01-15", "crm_id": "o-1"},
            "lacks": ("id",),
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
            "has": {"total_amount": "250000"},
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
            "has": {"revenue_status": "proposed", "crm_id": "o-1"},
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
            "has": {"status": "in_progress"},
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
        none(because="X-2"),
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
        none(because="X-2"),
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
    # Invoice
    pytest.param(
        "INV-1",
        ev_kwargs("crm", "invoice", after=crm_invoice("proposed")),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "invoice",
            "op": "upsert",
            "key": {"id": None, "code": "HD1"},
            "has": {"crm_id": "i-1", "status": "proposed", "amount": "200000", "order_code": "DH1"},
            "lacks": ("id",),
        },
        id="INV-1",
    ),
    pytest.param(
        "INV-1",
        ev_kwargs("crm", "invoice", "u", before=crm_invoice("draft"), after=crm_invoice("proposed")),
        (INVOICE_LINK,),
        "sale_order",
        {
            "target": "acct",
            "entity": "invoice",
            "op": "upsert",
            "key": {"id": "ai-1", "code": "HD1"},
            "has": {"status": "proposed"},
        },
        id="INV-1/update",
    ),
    pytest.param(
        "INV-1",
        ev_kwargs("crm", "invoice", after=crm_invoice("draft")),
        (),
        "sale_order",
        none(because="status"),
        id="INV-1/draft-none",
    ),
    pytest.param(
        "INV-1",
        ev_kwargs("crm", "invoice", "u", before=crm_invoice("draft"), after=crm_invoice("draft", amount="1")),
        (),
        "sale_order",
        none(because="status"),
        id="INV-1/update-draft-none",
    ),
    pytest.param(
        "INV-2",
        ev_kwargs("crm", "invoice", "d", before=crm_invoice()),
        (INVOICE_LINK,),
        "sale_order",
        none(),
        id="INV-2",
    ),
    pytest.param(
        "INV-3",
        ev_kwargs("crm", "invoice", "u", before=crm_invoice("proposed"), after=crm_invoice("draft")),
        (INVOICE_LINK,),
        "sale_order",
        {"target": "acct", "entity": "invoice", "op": "delete", "key": {"id": "ai-1", "code": "HD1"}, "fields": {}},
        id="INV-3",
    ),
    pytest.param(
        "INV-4",
        ev_kwargs("acct", "invoice", "u", before=acct_invoice("proposed"), after=acct_invoice("approved")),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "invoice",
            "op": "update",
            "key": {"id": "i-1", "code": None},
            "fields": {"status": "approved"},
        },
        id="INV-4",
    ),
    pytest.param(
        "INV-5",
        ev_kwargs(
            "acct",
            "invoice",
            "u",
            before=acct_invoice("proposed"),
            after=acct_invoice("rejected", reason="Sai mã số thuế"),
        ),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "invoice",
            "op": "update",
            "key": {"id": "i-1", "code": None},
            "fields": {"status": "rejected", "description": "Sai mã số thuế"},
        },
        id="INV-5",
    ),
    pytest.param(
        "INV-6",
        ev_kwargs(
            "acct",
            "invoice",
            "u",
            before=acct_invoice("approved"),
            after=acct_invoice("issued", reason="(cũ)", **ISSUED),
        ),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "invoice",
            "op": "update",
            "key": {"id": "i-1", "code": None},
            "fields": {"status": "issued", **ISSUED},
        },
        id="INV-6",
    ),
    pytest.param(
        "INV-7",
        ev_kwargs(
            "acct",
            "invoice",
            "u",
            before=acct_invoice("approved"),
            after=acct_invoice("issue_refused", reason="Thiếu hợp đồng"),
        ),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "invoice",
            "op": "update",
            "key": {"id": "i-1", "code": None},
            "fields": {"status": "issue_refused", "description": "Thiếu hợp đồng"},
        },
        id="INV-7",
    ),
    pytest.param(
        "INV-8",
        ev_kwargs(
            "acct",
            "invoice",
            "u",
            before=acct_invoice("issued", **ISSUED),
            after=acct_invoice("cancelled", reason="Khách trả hàng", **ISSUED),
        ),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "invoice",
            "op": "update",
            "key": {"id": "i-1", "code": None},
            "fields": {"status": "cancelled", "description": "Khách trả hàng"},
        },
        id="INV-8",
    ),
]


@pytest.mark.parametrize(("rule_id", "kwargs", "links", "order_target", "expect"), WRITE_AND_NONE_CASES)
def test_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    state = base_state(order_target, links)
    decision = run(event(**kwargs), state, rules)
    if expect.get(NONE):
        assert_none(decision, rule_id, because=expect["because"])
    else:
        assert_command(only_command(decision), decision, rule_id, expect)


def test_every_rule_of_the_table_has_a_case_here(rules: RuleBook) -> None:
    """The table above, the scenario tests below and the derived-rule tests name every rule of RULE_TABLE."""
    named = {p.values[0] for p in WRITE_AND_NONE_CASES} | SCENARIO_RULES | set(DERIVED_RULES)
    assert {r.id for r in rules.rules} - named == set()


# The rules tested by the scenario tests below rather than by the table.
SCENARIO_RULES = {"CUS-5", "CUS-10", "PP-1", "PP-2", "CT-7"}

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
            "has": {"phone": "0902000002", "email": "ketoan@example.vn", "name": CUSTOMER["name"]},
            "lacks": ("id", "merged_ids"),
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
    assert_none(decision, "CUS-5", because="not linked")


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
    assert (kh1.target, kh1.entity, kh1.op) == (System.ACCT, "customer", Op.UPSERT)
    assert kh1.key == CommandKey(id="a-1", code="KH1")  # already linked: by id
    assert kh2.key == CommandKey(id=None, code="KH2")  # not yet linked: by code
    assert kh2.fields == {k: v for k, v in {**CUSTOMER, "name": "B", "code": "KH2"}.items() if k != "id"}
    assert kh2.source.id == "c-2" and kh2.source.system is System.ACCT
    assert "KH404" in decision.audit.reason  # an unknown code is reported, not silently dropped
    assert decision.links == []  # the request is not a customer


def test_cus10_pull_without_codes_takes_every_unlinked_crm_customer(rules: RuleBook) -> None:
    decision = run(event("acct", "customer", action="pull", after={"id": "req-2"}), pull_state(rules), rules)
    assert [(c.rule, c.key.code) for c in decision.commands] == [("CUS-10", "KH2"), ("CUS-10", "KH3")]


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
    assert_none(decision, "CUS-10", because="all linked")


# --- PP-1 / PP-2 price policies ----------------------------------------------------------------


def test_pp1_splits_a_policy_into_one_read_only_crm_copy_per_category(rules: RuleBook) -> None:
    rule = "PP-1"
    policy = {
        **POLICY,
        "category_codes": ["LH1", "LH2", "LH3"],
        "prices": POLICY["prices"] + [{"product_code": "SP3", "category_code": "LH3", "price": "1"}],
    }
    decision = run(event("acct", "price_policy", after=policy), FakeState(), rules)
    assert [c.key for c in decision.commands] == [CommandKey(code=f"CSG1/{c}") for c in ("LH1", "LH2", "LH3")]
    for command, category in zip(decision.commands, ("LH1", "LH2", "LH3"), strict=False):
        assert command.rule == rule
        assert (command.target, command.entity, command.op) == (System.CRM, "price_policy", Op.UPSERT)
        assert command.read_only is True
        assert command.fields["code"] == f"CSG1/{category}"
        assert command.fields["category_code"] == category
        assert command.fields["prices"], "each copy carries its category's prices"
        assert command.fields["prices"] == [p for p in policy["prices"] if p["category_code"] == category]
        assert command.fields["valid_from"] == "2025-01-01"
        assert "category_codes" not in command.fields and "id" not in command.fields
    assert decision.audit.rules == [rule]


def test_pp1_update_rewrites_the_same_copies_and_deletes_a_dropped_category(rules: RuleBook) -> None:
    state = FakeState()
    first = run(event("acct", "price_policy", after=POLICY), state, rules)
    state.apply(first)
    changed = {
        **POLICY,
        "category_codes": ["LH1"],
        "prices": [{"product_code": "SP1", "category_code": "LH1", "price": "85000"}],
    }
    decision = run(event("acct", "price_policy", "u", before=POLICY, after=changed), state, rules)
    upsert, delete = decision.commands
    assert (upsert.rule, upsert.op, upsert.key) == ("PP-1", Op.UPSERT, CommandKey(code="CSG1/LH1"))
    assert upsert.message_key == first.commands[0].message_key
    assert upsert.fields["prices"] == [{"product_code": "SP1", "category_code": "LH1", "price": "85000"}]
    assert (delete.rule, delete.op, delete.key, delete.fields) == ("PP-1", Op.DELETE, CommandKey(code="CSG1/LH2"), {})
    assert delete.read_only is True


def test_pp2_a_crm_edit_of_a_copy_is_answered_by_the_acct_version(rules: RuleBook) -> None:
    rule = "PP-2"
    state = FakeState()
    split = run(event("acct", "price_policy", after=POLICY), state, rules)
    state.apply(split)
    acct_version = split.commands[0].fields
    copy = {**acct_version, "id": "crm-pp-1"}
    # the connector's writes come back as CRM changes with origin sync: nothing is sent back
    echo = run(event("crm", "price_policy", after=copy, origin="sync"), state, rules)
    assert echo.commands == []
    state.apply(echo)
    echo = run(event("crm", "price_policy", "u", before=copy, after=copy, origin="sync"), state, rules)
    assert echo.commands == [] and echo.audit.rules == [rule, "X-1"]
    edited = {**copy, "prices": [{"product_code": "SP1", "category_code": "LH1", "price": "1"}]}
    decision = run(event("crm", "price_policy", "u", before=copy, after=edited), state, rules)
    command = only_command(decision)
    assert command.rule == rule
    assert (command.target, command.entity, command.op) == (System.CRM, "price_policy", Op.UPSERT)
    assert command.read_only is True
    assert command.fields == acct_version  # what acct says, not the CRM edit
    assert command.key.code == "CSG1/LH1"
    assert command.message_key == split.commands[0].message_key  # same record, same key
    assert rule in decision.audit.rules and "conflict" in decision.audit.reason


def test_pp2_a_crm_policy_that_is_not_a_copy_is_none(rules: RuleBook) -> None:
    own = {"id": "crm-pp-9", "code": "CSG-CRM", "name": "Giá riêng"}
    decision = run(
        event("crm", "price_policy", "u", before=own, after={**own, "name": "Giá riêng 2"}), FakeState(), rules
    )
    assert_none(decision, "PP-2", because="not a copy")


# --- CT-7 cancellation proposal ----------------------------------------------------------------


def test_ct7_propose_revenue_cancel_adds_a_proposed_negative_line(rules: RuleBook) -> None:
    rule = "CT-7"
    state = base_state("contract", (ORDER_LINK,))
    decision = run(
        event(
            "crm", "sale_order", "u", action="propose_revenue_cancel", before=order("recorded"), after=order("recorded")
        ),
        state,
        rules,
    )
    command = only_command(decision)
    assert command.rule == rule
    assert (command.target, command.entity, command.op) == (System.ACCT, "contract", Op.UPDATE)
    assert command.key == CommandKey(id="ao-1", code="DH1")
    (entry,) = command.fields["revenue_entries"]  # the contract's canonical field
    assert set(entry) == {"id", "amount", "status"}
    assert entry["status"] == "proposed"
    assert entry["amount"] == "-200000"


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


# --- derived rules (aggregates over vouchers and receipts) -------------------------------------

VOUCHER = {
    "id": "v-1",
    "code": "CT1",
    "order_id": "ao-1",
    "lines": [{"line_id": "l1", "product_code": "SP1", "quantity": 2, "amount": "200000"}],
    "invoice_no": None,
    "einvoice_published": False,
}
RECEIPT = {"id": "r-1", "code": "PT1", "order_id": "ao-1", "amount": "200000"}

DERIVED_RULES = {
    "SO-9": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER)),
    "SO-10": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT)),
    "SO-11": ("sale_order", ev_kwargs("acct", "sales_voucher", "d", before=VOUCHER)),
    "SO-12": (
        "sale_order",
        ev_kwargs("acct", "sales_voucher", "u", before=VOUCHER, after={**VOUCHER, "invoice_no": "0000123"}),
    ),
    "SO-13": ("sale_order", ev_kwargs("acct", "sales_voucher", after=VOUCHER)),
    "SO-14": ("sale_order", ev_kwargs("acct", "receipt", after=RECEIPT)),
    "CT-11": (
        "contract",
        ev_kwargs(
            "acct",
            "contract",
            "u",
            before=acct_order("recorded"),
            after=acct_order("recorded", status="fully_delivered"),
        ),
    ),
    "CT-12": ("contract", ev_kwargs("acct", "receipt", after=RECEIPT)),
}


@pytest.mark.parametrize("rule_id", sorted(DERIVED_RULES))
def test_derived_rule_writes_crm(rule_id: str, rules: RuleBook) -> None:
    """Each derived rule fires from its own kind of accounting event, on an order that is known."""
    order_target, kwargs = DERIVED_RULES[rule_id]
    state = base_state(order_target, (ORDER_LINK,))
    aggregate = OrderAggregate(tenant=T, order_id="ao-1")
    kind = "contract" if order_target == "contract" else "sale_order"
    # the acct order (and, for SO-11's reset, a voucher that is then deleted) came first
    decide_for_order(event("acct", kind, after=acct_order("recorded")), aggregate, state, rules, now_ms=NOW)
    if rule_id in ("SO-11", "SO-12"):
        decide_for_order(event("acct", "sales_voucher", after=VOUCHER), aggregate, state, rules, now_ms=NOW)
    decision = decide_for_order(event(**kwargs), aggregate, state, rules, now_ms=NOW)
    mine = [c for c in decision.commands if c.rule == rule_id]
    assert mine, (decision.audit.rules, decision.audit.reason)
    (command,) = mine
    assert (command.target, command.entity, command.op) == (System.CRM, "sale_order", Op.UPDATE)
    assert command.key == CommandKey(id="o-1", code="DH1")
    derives = set(rules.by_id(rule_id).derives)
    assert derives, f"{rule_id} derives no value"
    assert set(command.fields) >= derives
    assert rule_id in decision.audit.rules


def test_derived_rules_are_in_the_table_for_their_order_target(rules: RuleBook) -> None:
    for rule_id, (order_target, _) in DERIVED_RULES.items():
        rule = rules.by_id(rule_id)
        assert rule.effect is Effect.DERIVED, rule_id
        assert rule.order_target == order_target, rule_id


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
    assert_none(decision, "CUS-3", because="X-2")
    assert "X-2" in decision.audit.rules


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
    assert customer.fields["name"] == "Khách mới" and "id" not in customer.fields
    assert (product.rule, product.entity, product.key) == ("PRD-1", "product", CommandKey(code="SP7"))
    assert document.rule == "SO-1"
    assert document.depends_on == [customer.command_id, product.command_id]
    assert "X-4" in decision.audit.rules
    assert [a.rule for a in decision.audit.commands] == ["CUS-10", "PRD-1", "SO-1"]


def test_x4_linked_customer_and_products_need_nothing_first(rules: RuleBook) -> None:
    decision = run(event("crm", "quote", after=QUOTE), base_state(), rules)
    assert only_command(decision).depends_on == []
    assert "X-4" not in decision.audit.rules


def test_x4_a_dependency_already_sent_is_still_depended_on_but_not_resent(rules: RuleBook) -> None:
    state = base_state()
    quote = {**QUOTE, "customer_code": "KH5"}
    state.remember(T, "customer", {**CUSTOMER, "id": "c-5", "code": "KH5"})
    first = run(event("crm", "quote", after=quote), state, rules)
    state.apply(first)
    second = run(event("crm", "quote", "u", before=quote, after={**quote, "total_amount": "1"}), state, rules)
    assert [c.rule for c in second.commands] == ["QUO-1"]
    assert second.commands[0].depends_on == [first.commands[0].command_id]


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


def test_pp1_drops_copies_of_categories_it_no_longer_selects_even_without_before(rules: RuleBook) -> None:
    """A snapshot or an update without ``before``: the processor remembers the categories it split."""
    rule = "PP-1"
    state = FakeState()
    state.apply(run(event("acct", "price_policy", after=POLICY), state, rules))
    narrowed = {**POLICY, "category_codes": ["LH2"], "prices": POLICY["prices"][1:]}
    decision = run(event("acct", "price_policy", "r", after=narrowed), state, rules)
    # LH2's copy is unchanged; LH1's copy is deleted
    assert [(c.rule, c.op, c.key.code) for c in decision.commands] == [(rule, Op.DELETE, "CSG1/LH1")]
    assert "X-2" in decision.audit.rules


@pytest.mark.parametrize("action", ["approve", "pull", "issue"])
def test_x6_an_action_no_rule_takes_on_the_entity_is_bad_input(action: str, rules: RuleBook) -> None:
    """A known action on an entity it does not apply to (``approve`` on a customer): dead letter."""
    ev = event("crm", "customer", "u", action=action, before=CUSTOMER, after=CUSTOMER)
    with pytest.raises(BadInput) as raised:
        run(ev, base_state(), rules)
    assert raised.value.kind == "unknown_action"
    assert action in raised.value.message and "crm customer" in raised.value.message


def test_a_lifecycle_action_without_a_rule_is_audited_none(rules: RuleBook) -> None:
    """Category deletes are not in the original: none, audited, not a dead letter."""
    decision = run(event("crm", "product_category", "d", before=CATEGORY, after=None), base_state(), rules)
    assert decision.commands == []
    assert "no rule" in decision.audit.reason and "product_category delete" in decision.audit.reason


def test_x4_a_status_only_write_sends_no_dependencies(rules: RuleBook) -> None:
    """SO-6 writes revenue_status only: an unlinked customer is not pulled for it."""
    rule = "SO-6"
    state = FakeState()  # nothing linked
    decision = run(event("crm", "sale_order", "u", before=order("proposed"), after=order("recorded")), state, rules)
    (command,) = decision.commands
    assert command.rule == rule and command.depends_on == []


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
    command = only_command(run(ev, base_state("contract", (ORDER_LINK,)), rules))
    assert command.rule == rule and command.fields["revenue_entries"] == recorded


@pytest.mark.parametrize("action", ["assign_invoice_no", "publish_einvoice"])
def test_invoice_number_actions_on_an_acct_invoice_are_audited_not_dead_lettered(action, rules: RuleBook) -> None:
    ev = event(
        "acct",
        "invoice",
        "u",
        action=action,
        before=acct_invoice("approved"),
        after=acct_invoice("approved", invoice_no="0000123"),
    )
    decision = run(ev, base_state(), rules)
    assert decision.commands == [] and "no rule" in decision.audit.reason


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
    assert completion.fields["name"] == "Khách đến sau" and completion.fields["tax_code"] == "0109"
    assert completion.command_id != placeholder.command_id
    assert "X-4" in arrived.audit.rules
    assert [n.tag for n in arrived.audit.notes if n.rule == "CUS-10"] == [Note.DEPENDENCY_COMPLETED]
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
    state.remember(T, "customer", {**CUSTOMER, "id": "c-9", "code": "KH9", "name": "Khách đến sau", "tax_code": "0109"})
    echo_record = {"id": "a-9", "code": "KH9", "name": None}
    echo = run(event("acct", "customer", after=echo_record, origin="sync"), state, rules)
    (completion,) = echo.commands
    assert (completion.rule, completion.target, completion.key) == ("CUS-10", System.ACCT, CommandKey(code="KH9"))
    assert completion.fields["name"] == "Khách đến sau" and completion.fields["tax_code"] == "0109"
    assert completion.source.id == "c-9" and completion.command_id != placeholder.command_id
    assert [n.tag for n in echo.audit.notes if n.rule == "CUS-10"] == [Note.DEPENDENCY_COMPLETED]
    state.apply(echo)
    again = run(event("acct", "customer", "u", before=echo_record, after=echo_record, origin="sync"), state, rules)
    assert again.commands == []  # completed once


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
