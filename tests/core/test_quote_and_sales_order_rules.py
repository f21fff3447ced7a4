"""The quote rules (QUO-*) and the rules for tenants whose orders are accounting sales orders
(SO-1..SO-8) through ``decide``; the derived ones (SO-9..SO-14) are ``test_derived_rules.py``'s.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    CASE_PARAMS,
    ORDER_LINK,
    QUOTE,
    QUOTE_FIELDS,
    acct_order,
    check_case,
    ev_kwargs,
    none,
    order,
    order_fields,
)

# --- the case tables -------------------------------------------------------------------------


QUOTE_CASES = [
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
            "fields": QUOTE_FIELDS,
        },
        id="QUO-1",
    ),
    pytest.param(
        "QUO-1",
        ev_kwargs("crm", "quote", action="import", after=QUOTE),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "quote",
            "op": "upsert",
            "key": {"id": None, "code": "BG1"},
            "fields": QUOTE_FIELDS,
        },
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
            "fields": {**QUOTE_FIELDS, "total_amount": "180000"},
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
]


SALES_ORDER_CASES = [
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
                "fields": order_fields("proposed"),
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
            "fields": order_fields("proposed", total_amount="300000"),
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
            "fields": order_fields("recorded", payment_deadline="2026-02-28"),
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
            "fields": order_fields("proposed"),
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
]


@pytest.mark.parametrize(CASE_PARAMS, [*QUOTE_CASES, *SALES_ORDER_CASES])
def test_quote_and_sales_order_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    check_case(rule_id, kwargs, links, order_target, expect, rules)
