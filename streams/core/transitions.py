"""The business action a change event means: its explicit ``action``, else the transition its
``op`` and before/after show (a revenue status proposed, an invoice issued, a voucher numbered …).

``resolve_action`` in ``streams.core.decide`` then checks that action against the rule table.
"""

from __future__ import annotations

from common.names import System
from streams.core.contract import Action, ChangeEvent

_REVENUE_TRANSITIONS = {
    "proposed": Action.PROPOSE_REVENUE,
    "recorded": Action.RECORD_REVENUE,
    "rejected": Action.REJECT_REVENUE,
    "not_recorded": Action.REJECT_REVENUE,
    "draft": Action.WITHDRAW_REVENUE,
}
_ACCT_INVOICE_TRANSITIONS = {
    "approved": Action.APPROVE,
    "rejected": Action.REJECT,
    "issued": Action.ISSUE,
    "issue_refused": Action.REFUSE_ISSUE,
    "cancelled": Action.CANCEL,
}


def derive_action(event: ChangeEvent) -> Action:
    """The event's business action: its ``action``, else derived from ``op`` and before/after."""
    if event.action is not None:
        return event.action
    if event.op in ("c", "r"):
        return Action.CREATE
    if event.op == "d":
        return Action.DELETE
    before, after = event.before, event.after or {}
    if before is None:
        return Action.UPDATE

    def changed(name: str) -> bool:
        return bool(before.get(name) != after.get(name))

    if event.entity in ("sale_order", "contract") and changed("revenue_status"):
        new, old = after.get("revenue_status"), before.get("revenue_status")
        if new == "draft" and old != "proposed":
            return Action.UPDATE
        if new == "not_recorded" and old not in ("proposed", "recorded"):
            return Action.UPDATE
        if new in _REVENUE_TRANSITIONS:
            return _REVENUE_TRANSITIONS[new]
    if event.system is System.ACCT and event.entity == "contract" and changed("revenue_entries"):
        # A line of the revenue-recognition table recorded or rejected (a cancellation line, CT-7)
        # while the contract's own revenue_status stays: CT-10 carries the table back.
        old_status = {e.get("id"): e.get("status") for e in before.get("revenue_entries") or [] if isinstance(e, dict)}
        for entry in after.get("revenue_entries") or []:
            if isinstance(entry, dict) and entry.get("status") != old_status.get(entry.get("id")):
                if entry.get("status") == "recorded":
                    return Action.RECORD_REVENUE
                if entry.get("status") in ("rejected", "not_recorded"):
                    return Action.REJECT_REVENUE
    if event.entity == "invoice" and changed("status"):
        new, old = after.get("status"), before.get("status")
        if event.system is System.CRM and old == "proposed" and new == "draft":
            return Action.WITHDRAW_ISSUE
        if event.system is System.ACCT and new in _ACCT_INVOICE_TRANSITIONS:
            return _ACCT_INVOICE_TRANSITIONS[new]
    if event.system is System.ACCT and event.entity == "sales_voucher":
        if after.get("einvoice_published") and not before.get("einvoice_published"):
            return Action.PUBLISH_EINVOICE
        if after.get("invoice_no") and not before.get("invoice_no"):
            return Action.ASSIGN_INVOICE_NO
    return Action.UPDATE
