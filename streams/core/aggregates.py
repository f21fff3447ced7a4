"""Aggregates of one accounting order or contract, and the CRM statuses derived from them.

Pure (no faust). An ``OrderAggregate`` keeps every document's *contribution* — voucher id -> its
lines, receipt id -> its amount — so that applying the same document twice changes nothing, an
edited document replaces its old contribution and a deleted one removes it. Documents that arrive
before their order are kept and count as soon as the order arrives.

``derive()`` turns an aggregate into the values CRM shows (SO-9..SO-14 for sales orders, CT-11 and
CT-12 for contracts); ``derived_commands()`` emits a command per rule whose values changed since
they were last sent (X-2). Money and quantities are ``Decimal`` here and decimal strings on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from common.names import System
from streams.core.commands import audit_record, build_command
from streams.core.contract import Action, AuditNote, ChangeEvent, Command, CommandKey, Note, named
from streams.core.decide import Decision, State, decide
from streams.core.errors import BadInput, masked
from streams.core.rules import RuleBook

ZERO = Decimal(0)
AGGREGATE_ENTITIES = frozenset({"sale_order", "contract", "sales_voucher", "receipt"})
SEEN_PER_AGGREGATE = 64


def money(value: Any, where: str, *, quantity: bool = False) -> Decimal:
    """A decimal string or an integer -> Decimal. Amounts that are floats are refused (contract:
    "never floats"); a quantity may be a JSON number with a fraction (2.5 kg)."""
    if value is None or value == "":
        return ZERO
    if isinstance(value, bool) or (isinstance(value, float) and not quantity):
        raise BadInput("schema", f"{where}: {masked(value)} must be a decimal string or an integer, not a float")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise BadInput("schema", f"{where}: {masked(value)} is not a decimal number") from None


def text(value: Decimal) -> str:
    """Canonical decimal text: no exponent, no trailing zeros ("200000", "2.5")."""
    normal = value.normalize()
    return format(normal if normal != 0 else ZERO, "f")


def check_document(event: ChangeEvent) -> None:
    """Raise ``BadInput`` for an accounting document that cannot be counted (checked before it is
    re-keyed, so that its dead letter carries the original key and bytes)."""
    if (
        event.system is System.ACCT
        and event.entity in ("sales_voucher", "receipt")
        and named(event.record.get("order_id")) is None
    ):
        raise BadInput(
            "schema",
            f"event {event.event_id!r}: {event.entity} {event.record_id} has no order_id; "
            f"it cannot be counted for an order (SO-9..SO-14)",
        )
    OrderAggregate(tenant=event.tenant, order_id="check").apply(event)


def order_key_of(event: ChangeEvent) -> str | None:
    """``<tenant>:<acct order or contract id>`` of the aggregate an acct event belongs to."""
    if event.system is not System.ACCT or event.entity not in AGGREGATE_ENTITIES:
        return None
    if event.entity in ("sale_order", "contract"):
        return f"{event.tenant}:{event.record_id}"
    order_id = named(event.record.get("order_id"))
    return f"{event.tenant}:{order_id}" if order_id is not None else None


@dataclass
class Voucher:
    lines: dict[str, Decimal]  # line_id -> quantity
    amount: Decimal
    invoiced: bool
    invoiced_date: str | None


@dataclass
class OrderAggregate:
    """What accounting knows of one order or contract, document by document."""

    tenant: str
    order_id: str
    kind: str | None = None  # "sale_order" | "contract"; None until the order itself arrived
    code: str | None = None
    crm_id: str | None = None
    ordered: dict[str, Decimal] = field(default_factory=dict)  # line_id -> ordered quantity
    total: Decimal = ZERO
    status: str | None = None  # acct status (CT-11 reads fully_delivered)
    vouchers: dict[str, Voucher] = field(default_factory=dict)
    receipts: dict[str, Decimal] = field(default_factory=dict)
    receipt_codes: dict[str, str] = field(default_factory=dict)
    had_vouchers: bool = False
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule -> {"values", "event_id", "command_id"}
    seen: list[str] = field(default_factory=list)  # recent event ids (duplicates are dropped)

    # --- contributions -----------------------------------------------------------------------

    def apply(self, event: ChangeEvent) -> None:
        """Replace (or remove) the contribution of the document this event is about."""
        where = f"event {event.event_id} ({event.system.value} {event.entity} {event.record_id})"
        record, deleted = event.record, event.op == "d"
        if event.entity in ("sale_order", "contract"):
            if deleted:
                self.kind, self.ordered, self.total, self.status = None, {}, ZERO, None
                return
            self.kind = event.entity
            self.code = record.get("code") or self.code
            self.crm_id = record.get("crm_id") or self.crm_id
            # a line_id the order repeats is one line ordered in parts: its quantities add up
            # (as a voucher's do), the last part does not replace the others
            ordered: dict[str, Decimal] = {}
            for line in record.get("lines") or []:
                if isinstance(line, dict):
                    line_id = str(line.get("line_id"))
                    ordered[line_id] = ordered.get(line_id, ZERO) + money(
                        line.get("quantity"), f"{where} line {line_id}", quantity=True
                    )
            self.ordered = ordered
            self.total = money(record.get("total_amount"), f"{where} total_amount")
            self.status = record.get("status")
        elif event.entity == "sales_voucher":
            voucher_id = event.record_id
            if deleted:
                self.vouchers.pop(voucher_id, None)
                return
            lines: dict[str, Decimal] = {}
            amount = ZERO
            for line in record.get("lines") or []:
                if not isinstance(line, dict):
                    continue
                line_id = str(line.get("line_id"))
                lines[line_id] = lines.get(line_id, ZERO) + money(
                    line.get("quantity"), f"{where} line {line_id}", quantity=True
                )
                amount += money(line.get("amount"), f"{where} line {line_id} amount")
            invoiced = bool(record.get("invoice_no")) or bool(record.get("einvoice_published"))
            previous = self.vouchers.get(voucher_id)
            invoiced_date = record.get("invoice_date")
            if invoiced and not invoiced_date:
                # Keep the date it was first invoiced; else the date of this change at the source.
                invoiced_date = (
                    previous.invoiced_date if previous and previous.invoiced else None
                ) or datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date().isoformat()
            self.vouchers[voucher_id] = Voucher(
                lines=lines, amount=amount, invoiced=invoiced, invoiced_date=invoiced_date if invoiced else None
            )
            self.had_vouchers = True
        elif event.entity == "receipt":
            receipt_id = event.record_id
            if deleted:
                self.receipts.pop(receipt_id, None)
                self.receipt_codes.pop(receipt_id, None)
                return
            self.receipts[receipt_id] = money(record.get("amount"), f"{where} amount")
            if record.get("code"):
                self.receipt_codes[receipt_id] = str(record["code"])

    def remember_seen(self, event_id: str) -> None:
        self.seen = ([*self.seen, event_id])[-SEEN_PER_AGGREGATE:]

    # --- totals ------------------------------------------------------------------------------

    def delivered(self) -> dict[str, Decimal]:
        """Per ordered line (and any line a voucher names): the sum over live vouchers."""
        sums = dict.fromkeys(self.ordered, ZERO)
        for voucher in self.vouchers.values():
            for line_id, quantity in voucher.lines.items():
                sums[line_id] = sums.get(line_id, ZERO) + quantity
        return sums

    def receipted(self) -> Decimal:
        return sum(self.receipts.values(), ZERO)

    def invoiced(self) -> Decimal:
        return sum((v.amount for v in self.vouchers.values() if v.invoiced), ZERO)

    # --- storage -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "order_id": self.order_id,
            "kind": self.kind,
            "code": self.code,
            "crm_id": self.crm_id,
            "ordered": {k: str(v) for k, v in self.ordered.items()},
            "total": str(self.total),
            "status": self.status,
            "vouchers": {
                k: {
                    "lines": {lk: str(lv) for lk, lv in v.lines.items()},
                    "amount": str(v.amount),
                    "invoiced": v.invoiced,
                    "invoiced_date": v.invoiced_date,
                }
                for k, v in self.vouchers.items()
            },
            "receipts": {k: str(v) for k, v in self.receipts.items()},
            "receipt_codes": self.receipt_codes,
            "had_vouchers": self.had_vouchers,
            "sent": self.sent,
            "seen": self.seen,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OrderAggregate:
        return cls(
            tenant=data["tenant"],
            order_id=data["order_id"],
            kind=data.get("kind"),
            code=data.get("code"),
            crm_id=data.get("crm_id"),
            ordered={k: Decimal(v) for k, v in (data.get("ordered") or {}).items()},
            total=Decimal(data.get("total") or 0),
            status=data.get("status"),
            vouchers={
                k: Voucher(
                    lines={lk: Decimal(lv) for lk, lv in v["lines"].items()},
                    amount=Decimal(v["amount"]),
                    invoiced=v["invoiced"],
                    invoiced_date=v.get("invoiced_date"),
                )
                for k, v in (data.get("vouchers") or {}).items()
            },
            receipts={k: Decimal(v) for k, v in (data.get("receipts") or {}).items()},
            receipt_codes=dict(data.get("receipt_codes") or {}),
            had_vouchers=bool(data.get("had_vouchers")),
            sent=dict(data.get("sent") or {}),
            seen=list(data.get("seen") or []),
        )


# --- derived values ------------------------------------------------------------------------------


def derive(agg: OrderAggregate) -> dict[str, Any]:
    """Every value CRM shows for this order, by field name (wire form: decimal strings)."""
    delivered = agg.delivered()
    total_delivered = sum(delivered.values(), ZERO)
    total_ordered = sum(agg.ordered.values(), ZERO)
    receipted = agg.receipted()
    remaining = agg.total - receipted
    invoiced = agg.invoiced()

    if agg.kind == "contract":
        # CT-11: from the contract's own status in accounting.
        delivery_status = "delivered" if agg.status == "fully_delivered" else "not_delivered"
    elif total_delivered <= 0:
        delivery_status = "not_delivered"
    elif total_delivered >= total_ordered > 0:
        delivery_status = "delivered"
    else:
        delivery_status = "delivering"

    if receipted <= 0 and agg.total > 0:
        pay_status = "unpaid"
    elif remaining <= 0:
        pay_status = "paid"
    else:
        pay_status = "partially_paid"

    # SO-11 names "completed" and the reset to "not_started"; between them an order with live
    # vouchers is "in_progress", so that a completion undone (an invoice cancelled) does not stay
    # "completed" in CRM. An order that never had a voucher: CRM keeps its own status.
    if agg.total > 0 and invoiced == agg.total:
        status: str | None = "completed"
    elif agg.vouchers:
        status = "in_progress"
    elif agg.had_vouchers:
        status = "not_started"  # the order's sales vouchers were deleted
    else:
        status = None

    invoiced_dates = sorted(v.invoiced_date for v in agg.vouchers.values() if v.invoiced and v.invoiced_date)
    return {
        "delivered_quantities": [
            {"line_id": line_id, "delivered_quantity": text(quantity)}
            for line_id, quantity in sorted(delivered.items())
        ],
        "delivery_status": delivery_status,
        "receipted_amount": text(receipted),
        "remaining_receivable": text(remaining),
        "pay_status": pay_status,
        "status": status,
        # SO-12: an invoice number or a published e-invoice is the trigger, whatever the amount
        # (a voucher of free goods, invoiced at 0, is invoiced all the same).
        "invoicing_status": "invoiced" if any(v.invoiced for v in agg.vouchers.values()) else "not_invoiced",
        "invoiced_amount": text(invoiced),
        "invoiced_date": invoiced_dates[-1] if invoiced_dates else None,
        "receipts": [
            {"id": receipt_id, "code": agg.receipt_codes.get(receipt_id), "amount": text(amount)}
            for receipt_id, amount in sorted(agg.receipts.items())
        ],
    }


def baseline(agg: OrderAggregate) -> dict[str, Any]:
    """What CRM shows for an order nothing has happened to yet: no command is needed to say it."""
    return derive(
        OrderAggregate(tenant=agg.tenant, order_id=agg.order_id, kind=agg.kind, ordered=agg.ordered, total=agg.total)
    )


def derived_commands(
    agg: OrderAggregate,
    event: ChangeEvent,
    rules: RuleBook,
    *,
    order_target: str,
    crm_id: str | None,
    now_ms: int,
    rules_off: frozenset[str] = frozenset(),
    switched_off: list[str] | None = None,
) -> list[Command]:
    """One command per derived rule whose values changed since last sent (X-2); remembers them in ``agg``.

    Nothing while the order itself has not arrived (its documents are held). ``crm_id``: the CRM
    order's id when known (the acct record's ``crm_id`` or a link, X-3). A rule's ``when`` reads the
    derived values (SO-11 sends nothing while the order never had a voucher); ``derives_also`` adds
    values when one says so (SO-11's reset also writes the delivered quantities). A rule in ``rules_off``
    (the tenant's settings) sends nothing and remembers nothing: switched on again, it sends what changed
    since its last command; its id goes to ``switched_off`` when it would have sent something.
    """
    if agg.kind is None:
        return []
    values = derive(agg)
    base: dict[str, Any] | None = None  # computed only for a rule that has sent nothing yet
    key = CommandKey(id=crm_id, code=agg.code)
    commands: list[Command] = []
    for rule in rules.derived.get(order_target, ()):
        if rule.when is not None and not rule.when.holds(values):
            continue
        write = rule.write_target()
        fields = {name: values[name] for name in rule.derives}
        for extra in rule.derives_also:
            if extra.when.holds(values):
                fields.update((name, values[name]) for name in extra.fields)
        previous = agg.sent.get(rule.id)
        if previous is None and base is None:
            base = baseline(agg)
        reference = previous["values"] if previous else {name: (base or {})[name] for name in fields}
        replay = previous is not None and previous.get("event_id") == event.event_id
        if fields == reference and not replay:
            continue
        if rule.id in rules_off:
            if switched_off is not None:
                switched_off.append(rule.id)
            continue
        command = build_command(
            rule,
            write,
            event=event,
            key=key,
            fields=fields,
            now_ms=now_ms,
            # the order as the command id names it: stable before and after the CRM id is known
            record_key=f"{agg.tenant}:{write.system.value}:{write.entity}:{agg.code or agg.order_id}",
        )
        commands.append(command)
        agg.sent[rule.id] = {"values": fields, "event_id": event.event_id, "command_id": command.command_id}
    return commands


def decide_for_order(
    event: ChangeEvent, agg: OrderAggregate, state: State, rules: RuleBook, *, now_ms: int
) -> Decision:
    """An acct order, contract, sales voucher or receipt event: the matrix rules (``decide``) plus
    the derived statuses of the order it belongs to. Updates ``agg`` in place; the caller stores it
    only once the commands are on the broker."""
    decision = decide(event, state, rules, now_ms=now_ms)
    agg.apply(event)
    crm_id = agg.crm_id or state.linked_id(agg.tenant, System.CRM, "sale_order", code=agg.code, other_id=agg.order_id)
    settings = state.sync_settings(agg.tenant)
    switched_off: list[str] = []
    derived = derived_commands(
        agg,
        event,
        rules,
        order_target=state.order_target(agg.tenant),
        crm_id=crm_id,
        now_ms=now_ms,
        rules_off=settings.rules_off,
        switched_off=switched_off,
    )
    agg.remember_seen(event.event_id)
    audit = decision.audit
    notes = audit.notes
    if derived:
        decision.commands.extend(derived)
        # the change did lead somewhere: "no rule of the matrix" is no longer why nothing happened
        notes = [note for note in notes if note.tag is not Note.NO_RULE]
    elif event.entity in ("sales_voucher", "receipt"):
        if agg.kind is None:
            held = f"held: {event.entity} {event.record_id} counts once order {agg.order_id} arrives"
            notes = [AuditNote(tag=Note.HELD, rule=None, text=held)]
        else:
            unchanged = f"aggregates of order {agg.code or agg.order_id} updated; no derived value changed (X-2)"
            notes = [AuditNote(tag=Note.AGGREGATES_UNCHANGED, rule=None, text=unchanged)]
    for rule_id in switched_off:
        off = f"{rule_id}: switched off in the tenant's settings (revision {settings.revision}): none"
        notes = [*notes, AuditNote(tag=Note.SWITCHED_OFF, rule=rule_id, text=off)]
    decision.audit = audit_record(
        event,
        Action(audit.action),
        rules=[*audit.rules, *(command.rule for command in derived)],
        commands=decision.commands,
        notes=notes,
        now_ms=now_ms,
        settings_revision=settings.revision,
    )
    return decision


DOCUMENT, REMOVAL = "document", "removal"


def aggregate_inputs(event: ChangeEvent) -> list[tuple[str, ChangeEvent, str]]:
    """What an acct document event contributes to, as (``<tenant>:<order id>``, event, part): the
    order it names now (part ``document``) and, for a voucher or receipt moved to another order, a
    removal from the old one (part ``removal``). The aggregates of one order are kept where its key
    is, so each goes there."""
    order_key = order_key_of(event)
    if order_key is None:
        raise BadInput(
            "schema", f"event {event.event_id!r}: {event.entity} {event.record_id} names no order it belongs to"
        )
    pairs: list[tuple[str, ChangeEvent, str]] = []
    before_order = named((event.before or {}).get("order_id"))
    moved = (
        event.entity in ("sales_voucher", "receipt")
        and event.op == "u"
        and before_order
        and before_order != named((event.after or {}).get("order_id"))
    )
    if moved:
        removal = event.model_copy(
            update={
                "op": "d",
                "after": None,
                "action": None,
                "event_id": f"{event.event_id}:moved-from:{before_order}",
            }
        )
        pairs.append((f"{event.tenant}:{before_order}", removal, REMOVAL))
    pairs.append((order_key, event, DOCUMENT))
    return pairs
