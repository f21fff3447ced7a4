"""The invoice rules (INV-*) through ``decide``: the case table, and the accounting invoice actions
no rule takes.
"""

from __future__ import annotations

from typing import Any

import pytest

from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    CASE_PARAMS,
    INVOICE_LINK,
    ISSUED,
    acct_invoice,
    base_state,
    check_case,
    copied,
    crm_invoice,
    ev_kwargs,
    none,
    run,
)
from tests.fakes import event

# --- the case table --------------------------------------------------------------------------


INVOICE_CASES = [
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
            "fields": copied(crm_invoice("proposed"), crm_id="i-1"),
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
            "fields": copied(crm_invoice("proposed"), crm_id="i-1"),
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
    # Only a proposal is withdrawn (INV-3): an invoice accounting issued, or a request it rejected,
    # set back to draft in CRM is an update of a request that is not proposed (INV-1: none); the
    # issued invoice is not deleted.
    *[
        pytest.param(
            "INV-1",
            ev_kwargs("crm", "invoice", "u", before=crm_invoice(status, **extra), after=crm_invoice("draft", **extra)),
            (INVOICE_LINK,),
            "sale_order",
            none(because="status"),
            id=f"INV-1/{status}-to-draft-none",
        )
        for status, extra in (("issued", ISSUED), ("rejected", {}))
    ],
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


@pytest.mark.parametrize(CASE_PARAMS, INVOICE_CASES)
def test_invoice_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    check_case(rule_id, kwargs, links, order_target, expect, rules)


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
