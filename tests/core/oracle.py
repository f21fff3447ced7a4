"""An independent oracle for the money and status rules of accounting orders: what an accountant
would work out by hand from the documents, for SO-9..SO-14, CT-11, CT-12 and CT-7.

It reads nothing of ``streams.core`` but the wire type (``ChangeEvent``): no ``OrderAggregate``, no
``apply``/``derive``, no ``money``/``text``. Its route is the other way round from the core's:

1. take the accounting events as the processor was given them, each ``event_id`` once (a repeat is
   the same change delivered again);
2. group them by document (entity, id): a document's *final* version is what counts — a delete
   removes it, an edit replaced every earlier version;
3. group the live documents by the order they name, and add Decimal amounts line by line, keyed by
   ``line_id``, a line_id repeated in one document summed;
4. apply the definitions of ``/work/shared/spec/sync-matrix.md`` (SO-9..SO-14, CT-11, CT-12) and
   ``docs/state.md`` (the ``orders`` table), written out below rule by rule.

``wire_problems`` compares what CRM was sent (decimal strings) with these values: each string must be
canonical (no exponent, no trailing zeros, never ``-0``) and equal, as a Decimal, to the oracle's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from streams.core.contract import ChangeEvent

ZERO = Decimal(0)
DUPLICATE_WINDOW = 64  # docs/state.md, table orders: "seen: the last 64 event ids"
ORDER_ENTITIES = ("sale_order", "contract")
DOCUMENT_ENTITIES = ("sales_voucher", "receipt")

# The fields each order_target's derived rules write to the CRM order (docs/matrix.md).
SALE_ORDER_FIELDS = (
    "delivered_quantities",  # SO-9 (and SO-11 on reset)
    "delivery_status",  # SO-13
    "receipted_amount",  # SO-10
    "remaining_receivable",  # SO-10
    "pay_status",  # SO-14
    "status",  # SO-11
    "invoicing_status",  # SO-12
    "invoiced_amount",  # SO-12
    "invoiced_date",  # SO-12
)
CONTRACT_FIELDS = (
    "delivered_quantities",  # CT-11
    "delivery_status",  # CT-11
    "receipted_amount",  # CT-12
    "remaining_receivable",  # CT-12
    "pay_status",  # CT-12
    "receipts",  # CT-12
)
FIELDS = {"sale_order": SALE_ORDER_FIELDS, "contract": CONTRACT_FIELDS}
DERIVED_RULES = {
    "sale_order": {"SO-9", "SO-10", "SO-11", "SO-12", "SO-13", "SO-14"},
    "contract": {"CT-11", "CT-12"},
}

# What a decimal string on the wire looks like (docs/contract.md: decimal strings, never floats).
CANONICAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")


def number(value: Any) -> Decimal:
    """A document's amount or quantity as written (absent: 0)."""
    if value is None or value == "":
        return ZERO
    return Decimal(str(value))


def text_of(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def order_id_of(event: ChangeEvent) -> str | None:
    """The acct order a change counts for: an order's own id, a document's ``order_id``."""
    if event.entity in ORDER_ENTITIES:
        return event.record_id
    return text_of(event.record.get("order_id"))


def day_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date().isoformat()


@dataclass
class VoucherTruth:
    lines: dict[str, Decimal]
    amount: Decimal
    invoiced: bool
    invoiced_date: str | None


@dataclass
class OrderTruth:
    """One order as the documents say it is."""

    tenant: str
    order_id: str
    kind: str | None = None
    code: str | None = None
    crm_id: str | None = None
    ordered: dict[str, Decimal] = field(default_factory=dict)
    total: Decimal = ZERO
    status: str | None = None
    vouchers: dict[str, VoucherTruth] = field(default_factory=dict)
    receipts: dict[str, Decimal] = field(default_factory=dict)
    receipt_codes: dict[str, str] = field(default_factory=dict)
    had_vouchers: bool = False
    seen: list[str] = field(default_factory=list)

    # --- what CRM must show ----------------------------------------------------------------

    def crm(self) -> dict[str, Any]:
        """Every derived field, typed (Decimal amounts, dicts keyed by line or receipt id)."""
        return _crm_values(self, self.vouchers, self.receipts, self.status, self.had_vouchers)

    def untouched(self) -> dict[str, Any]:
        """What CRM shows for this order before any document counted: nothing delivered, paid or
        invoiced. A field no command ever wrote shows this (X-2: no command is needed to say it)."""
        return _crm_values(self, {}, {}, None, had_vouchers=False)


def _crm_values(
    order: OrderTruth,
    vouchers: Mapping[str, VoucherTruth],
    receipts: Mapping[str, Decimal],
    status: str | None,
    had_vouchers: bool,
) -> dict[str, Any]:
    # SO-9 / CT-11: per line of the order, and per line a voucher names, the sum over live vouchers.
    delivered = dict.fromkeys(order.ordered, ZERO)
    for voucher in vouchers.values():
        for line_id, quantity in voucher.lines.items():
            delivered[line_id] = delivered.get(line_id, ZERO) + quantity
    total_delivered = sum(delivered.values(), ZERO)
    total_ordered = sum(order.ordered.values(), ZERO)

    if order.kind == "contract":
        # CT-11: from the contract's own status in accounting.
        delivery_status = "delivered" if status == "fully_delivered" else "not_delivered"
    elif total_delivered <= 0:
        delivery_status = "not_delivered"  # SO-13: "not_delivered at 0"
    elif total_ordered > 0 and total_delivered >= total_ordered:
        delivery_status = "delivered"  # "at or above" the ordered total (docs/state.md)
    else:
        delivery_status = "delivering"  # some delivered, not all (an order of nothing is never "delivered")

    # SO-10 / CT-12
    receipted = sum(receipts.values(), ZERO)
    remaining = order.total - receipted
    # SO-14 / CT-12: paid when nothing remains; unpaid when money is owed and none came; else partly.
    if order.total > 0 and receipted <= 0:
        pay_status = "unpaid"
    elif remaining <= 0:
        pay_status = "paid"  # an order of 0 owes nothing: paid
    else:
        pay_status = "partially_paid"

    # SO-12: invoiced when some live voucher has an invoice number or a published e-invoice.
    invoiced = [v for v in vouchers.values() if v.invoiced]
    invoiced_total = sum((v.amount for v in invoiced), ZERO)
    dates = [v.invoiced_date for v in invoiced if v.invoiced_date]

    # SO-11: completed when the invoiced total equals the order total (not above it); an order with
    # live vouchers is being worked on; one whose vouchers were all deleted is back to not_started.
    if order.total > 0 and invoiced_total == order.total:
        order_status: str | None = "completed"
    elif vouchers:
        order_status = "in_progress"
    elif had_vouchers:
        order_status = "not_started"
    else:
        order_status = None  # never had a voucher: CRM keeps its own status

    return {
        "delivered_quantities": delivered,
        "delivery_status": delivery_status,
        "receipted_amount": receipted,
        "remaining_receivable": remaining,
        "pay_status": pay_status,
        "status": order_status,
        "invoicing_status": "invoiced" if invoiced else "not_invoiced",
        "invoiced_amount": invoiced_total,
        "invoiced_date": max(dates) if dates else None,
        "receipts": {rid: (order.receipt_codes.get(rid), amount) for rid, amount in receipts.items()},
    }


def truths(events: Iterable[ChangeEvent]) -> dict[tuple[str, str], OrderTruth]:
    """(tenant, acct order id) -> the order as its documents say, from accounting events in the
    order the processor was given them (repeats of an ``event_id`` ignored)."""
    once: set[str] = set()
    versions: dict[tuple[str, str, str], list[ChangeEvent]] = defaultdict(list)
    ids_by_order: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        if event.system.value != "acct" or event.entity not in (*ORDER_ENTITIES, *DOCUMENT_ENTITIES):
            continue
        if event.event_id in once:
            continue
        once.add(event.event_id)
        order_id = order_id_of(event)
        if order_id is None:
            continue  # a document naming no order counts for none (dead-lettered)
        versions[(event.tenant, event.entity, event.record_id)].append(event)
        ids_by_order[(event.tenant, order_id)].append(event.event_id)

    orders = {
        key: OrderTruth(tenant=key[0], order_id=key[1], seen=ids[-DUPLICATE_WINDOW:])
        for key, ids in ids_by_order.items()
    }
    for (tenant, entity, record_id), history in versions.items():
        final = history[-1]
        if entity in ORDER_ENTITIES:
            _order(orders[(tenant, record_id)], entity, history)
        elif entity == "sales_voucher":
            for version in history:
                if version.op != "d":
                    orders[(tenant, str(order_id_of(version)))].had_vouchers = True
            if final.op != "d":
                orders[(tenant, str(order_id_of(final)))].vouchers[record_id] = _voucher(history)
        else:
            if final.op != "d":
                order = orders[(tenant, str(order_id_of(final)))]
                order.receipts[record_id] = number(final.record.get("amount"))
                code = _receipt_code(history)
                if code is not None:
                    order.receipt_codes[record_id] = code
    return orders


def _order(order: OrderTruth, entity: str, history: list[ChangeEvent]) -> None:
    # The code and the CRM id are the last ones any version named: an update that leaves them out
    # (or the order's delete) does not forget how CRM's order is addressed.
    for version in history:
        if version.op != "d":
            order.code = text_of(version.record.get("code")) or order.code
            order.crm_id = text_of(version.record.get("crm_id")) or order.crm_id
    final = history[-1]
    if final.op == "d":
        return  # a deleted order has no lines, no total, no status
    order.kind = entity
    record = final.record
    for line in record.get("lines") or []:
        line_id = str(line.get("line_id"))
        order.ordered[line_id] = order.ordered.get(line_id, ZERO) + number(line.get("quantity"))
    order.total = number(record.get("total_amount"))
    order.status = record.get("status")


def _voucher(history: list[ChangeEvent]) -> VoucherTruth:
    final = history[-1].record
    lines: dict[str, Decimal] = {}
    amount = ZERO
    for line in final.get("lines") or []:
        line_id = str(line.get("line_id"))
        lines[line_id] = lines.get(line_id, ZERO) + number(line.get("quantity"))
        amount += number(line.get("amount"))
    # The invoice date: the voucher's own, else the day it was first invoiced (kept while it stays
    # invoiced; a delete or an invoice cancelled starts over).
    date: str | None = None
    for version in history:
        record = version.record
        if version.op == "d" or not _invoiced(record):
            date = None  # not invoiced (or deleted): a later invoice starts a new date
            continue
        date = text_of(record.get("invoice_date")) or date or day_of(version.ts_ms)
    return VoucherTruth(lines=lines, amount=amount, invoiced=_invoiced(final), invoiced_date=date)


def _invoiced(record: Mapping[str, Any]) -> bool:
    return bool(record.get("invoice_no")) or record.get("einvoice_published") is True


def _receipt_code(history: list[ChangeEvent]) -> str | None:
    code: str | None = None
    for version in history:
        if version.op == "d":
            code = None  # a deleted receipt's code goes with it
            continue
        code = text_of(version.record.get("code")) or code  # an update without a code keeps it
    return code


# --- comparing with what CRM was sent ----------------------------------------------------------


def wire_text(value: Decimal) -> str:
    """A Decimal as an accountant writes it: all its digits, no exponent, no trailing zeros, 0 unsigned."""
    if value == 0:
        return "0"
    digits = f"{value:f}"
    return digits.rstrip("0").rstrip(".") if "." in digits else digits


def wire_values(values: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The oracle's typed ``values`` in the form CRM is sent them (decimal strings, lists by id)."""
    wire: dict[str, Any] = {}
    for name in fields:
        value = values[name]
        if name == "delivered_quantities":
            wire[name] = [{"line_id": k, "delivered_quantity": wire_text(q)} for k, q in sorted(value.items())]
        elif name == "receipts":
            wire[name] = [
                {"id": rid, "code": code, "amount": wire_text(amount)} for rid, (code, amount) in sorted(value.items())
            ]
        elif isinstance(value, Decimal):
            wire[name] = wire_text(value)
        else:
            wire[name] = value
    return wire


def wire_number(value: Any, where: str, problems: list[str]) -> Decimal | None:
    if not isinstance(value, str) or not CANONICAL.fullmatch(value) or value == "-0":
        problems.append(f"{where}: {value!r} is not a canonical decimal string")
        return None
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        problems.append(f"{where}: {value!r} is not a number")
        return None


def wire_problems(shown: Mapping[str, Any], expected: Mapping[str, Any], fields: Iterable[str]) -> list[str]:
    """How ``shown`` (wire form, as sent to CRM) differs from the oracle's ``expected`` values."""
    problems: list[str] = []
    for name in fields:
        value, want = shown.get(name), expected[name]
        if name == "delivered_quantities":
            if not isinstance(value, list):
                problems.append(f"{name}: {value!r} is not a list")
                continue
            line_ids = [item.get("line_id") for item in value]
            if line_ids != sorted(set(line_ids)):
                problems.append(f"{name}: lines {line_ids} not once each, by line_id")
            got = {
                item.get("line_id"): wire_number(
                    item.get("delivered_quantity"), f"{name} {item.get('line_id')}", problems
                )
                for item in value
            }
            if got != want:
                problems.append(f"{name}: shown {got}, the documents say {want}")
        elif name == "receipts":
            if not isinstance(value, list):
                problems.append(f"{name}: {value!r} is not a list")
                continue
            ids = [item.get("id") for item in value]
            if ids != sorted(set(ids)):
                problems.append(f"{name}: receipts {ids} not once each, by id")
            got_receipts = {
                item.get("id"): (
                    item.get("code"),
                    wire_number(item.get("amount"), f"receipt {item.get('id')}", problems),
                )
                for item in value
            }
            if got_receipts != want:
                problems.append(f"{name}: shown {got_receipts}, the documents say {want}")
        elif isinstance(want, Decimal):
            got_number = wire_number(value, name, problems)
            if got_number is not None and got_number != want:
                problems.append(f"{name}: shown {value}, the documents say {want}")
        elif value != want:
            problems.append(f"{name}: shown {value!r}, the documents say {want!r}")
    return problems


# --- CT-7 ------------------------------------------------------------------------------------------


def cancellation_problems(total: Any, amount: Any) -> list[str]:
    """CT-7: the cancellation line proposed for an order of ``total`` is ``-total``, as a decimal
    string an accountant can read ("-1000.50"; an order of 0 cancels 0, not "-0")."""
    problems: list[str] = []
    if not isinstance(amount, str) or not re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", amount):
        return [f"CT-7 amount {amount!r} for total {total!r} is not a decimal string"]
    if Decimal(amount) != -number(total):
        problems.append(f"CT-7 amount {amount} for total {total!r}: expected {-number(total)}")
    if Decimal(amount) == 0 and amount.startswith("-"):
        problems.append(f"CT-7 amount {amount!r} for total {total!r}: a zero shown negative")
    return problems
