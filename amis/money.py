"""A proposal's money, from its lines: Decimal in, Decimal out, no floats, no I/O.

What the accounting connector sends in a ``save`` voucher (``amis-apis.md`` §2.6) must add up the
way an accountant checks it in AMIS Kế toán:

* every money field is a pair: ``*_oc`` in the order's currency (whole dong for VND, 2 decimals for a
  foreign currency), and the plain one in VND: ``_oc`` × ``exchange_rate``, rounded to whole dong
  (VND has no minor unit), half away from zero, **line by line**;
* a header total is the sum of its (rounded) lines, so ``total_sale_amount == Σ amount``,
  ``total_vat_amount == Σ vat_amount``, ``total_discount_amount == Σ line discounts`` and
  ``total_amount == total_sale_amount − total_discount_amount + total_vat_amount``, in VND and in
  the original currency alike;
* VAT of a line is charged on its amount after its discount (CRM's ``total_oc = to_currency_oc −
  discount_oc + tax_oc``, §1.6).

Discounts follow ACT's ``discount_type`` (§2.6, ``sa_order``): ``none`` (0), ``per_line`` (1, each
line's own rate or amount), ``invoice_percent`` (2, a rate of the order's sale amount) and
``invoice_amount`` (3, an amount off the order's total). An order-level discount is shared out over
the lines in proportion to their amounts (so that each line's VAT is charged on what is really
sold); the shares add up to the discount exactly.

The input is a contract record (``docs/contract.md``, "Money of orders, contracts and quotes"): a
line's ``unit_price`` and the ``*_oc`` fields are in the order's ``currency``; ``amount``,
``vat_amount`` and ``discount_amount`` are VND (CRM gives both). For a VND order a missing ``_oc``
figure is the plain one; for a foreign-currency order the plain (VND) figures are not used: the VND
amounts are converted here, line by line, with the order's ``exchange_rate``. Given figures win over
computed ones (the order says what was sold: a tax-inclusive price, a VAT amount typed by hand).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

ZERO = Decimal(0)
HUNDRED = Decimal(100)
VND = "VND"
WHOLE = Decimal(1)
CENT = Decimal("0.01")

NONE, PER_LINE, INVOICE_PERCENT, INVOICE_AMOUNT = "none", "per_line", "invoice_percent", "invoice_amount"
# ACT's discount_type (sa_order, amis-apis.md §2.6): the contract's names for its four values.
DISCOUNT_TYPES: dict[str, int] = {NONE: 0, PER_LINE: 1, INVOICE_PERCENT: 2, INVOICE_AMOUNT: 3}


class MoneyError(ValueError):
    """An amount, rate or currency a proposal cannot be computed from (the message names it)."""


# --- one value -----------------------------------------------------------------------------------


def decimal(value: Any, where: str) -> Decimal | None:
    """A decimal string, an integer or a Decimal; None (or "") when absent. A float is refused:
    money is never a float (``0.1 + 0.2`` is not ``0.3``)."""
    if value is None or value == "":
        return None
    if isinstance(value, (bool, float)):
        raise MoneyError(f"{where} = {value!r} must be a decimal string or an integer, not a float")
    if isinstance(value, Decimal):
        number = value
    else:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise MoneyError(f"{where} = {value!r} is not a decimal number") from None
    if not number.is_finite():
        raise MoneyError(f"{where} = {value!r} is not a finite number")
    return number


def quantity(value: Any, where: str) -> Decimal:
    """A quantity may be a JSON number with a fraction (2.5 kg): read by its shortest text, never by
    its binary value."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    found = decimal(value, where)
    if found is None:
        raise MoneyError(f"{where} is missing: a line needs a quantity")
    return found


def percent(value: Any, where: str) -> Decimal | None:
    """A rate in percent: ``"10%"``, ``"8 %"``, ``"0%"``, ``"5"``, ``10``; None when absent. A text
    that is no number (``"KCT"``) is refused: ACT takes VAT rates as numbers."""
    if isinstance(value, str):
        value = value.strip().removesuffix("%").strip()
        if value == "":
            return None
    try:
        return decimal(value, where)
    except MoneyError:
        raise MoneyError(f"{where} = {value!r} is not a percentage (a number, e.g. 10 or '10%')") from None


def currency(value: Any) -> str:
    """The order's currency code (CRM's ``currency_type``: VND, USD, EUR…); absent: VND."""
    if value is None or str(value).strip() == "":
        return VND
    code = str(value).strip().upper()
    if not (len(code) == 3 and code.isascii() and code.isalpha()):
        raise MoneyError(f"currency = {value!r} is not a currency code such as VND or USD")
    return code


def unit(code: str) -> Decimal:
    """The smallest amount of a currency as ACT keeps it: whole dong, else cents."""
    return WHOLE if code == VND else CENT


def rounded(value: Decimal, code: str) -> Decimal:
    """``value`` in whole units of ``code``, half away from zero (Decimal's ROUND_HALF_UP)."""
    return value.quantize(unit(code), rounding=ROUND_HALF_UP)


def to_vnd(amount_oc: Decimal, exchange_rate: Decimal) -> Decimal:
    """An original-currency amount in VND, to the whole dong."""
    return rounded(amount_oc * exchange_rate, VND)


def exchange_rate(value: Any, code: str) -> Decimal:
    """VND is at 1 whatever the record says; a foreign currency needs a positive rate."""
    if code == VND:
        return WHOLE
    rate = decimal(value, "exchange_rate")
    if rate is None or rate <= 0:
        raise MoneyError(
            f"the order is in {code} but has no positive exchange_rate (got {value!r}): set it on the order"
        )
    return rate


def share(total: Decimal, weights: Sequence[Decimal], code: str) -> list[Decimal]:
    """``total`` shared out in proportion to ``weights``, in whole units of ``code``; the shares add
    up to ``total`` exactly (the units left by rounding down go to the largest remainders, first line
    first on a tie)."""
    if total == 0 or not weights:
        return [ZERO for _ in weights]
    whole = sum(weights, ZERO)
    if whole == 0:
        raise MoneyError(f"a discount of {total} cannot be shared out over lines that add up to 0")
    step = unit(code)
    exact = [total * w / whole for w in weights]
    shares = [e.quantize(step, rounding=ROUND_DOWN) for e in exact]
    left = int((total - sum(shares, ZERO)) / step)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]).copy_abs(), i))
    sign = 1 if left >= 0 else -1
    for i in order[: abs(left)]:
        shares[i] += sign * step
    return shares


# --- a proposal ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineMoney:
    quantity: Decimal
    unit_price: Decimal | None
    amount_oc: Decimal  # price × quantity, before discount and VAT
    amount: Decimal
    discount_oc: Decimal  # the line's discount (its own, or its share of the order's)
    discount: Decimal
    vat_rate: Decimal | None  # percent; None when the line says none
    vat_amount_oc: Decimal
    vat_amount: Decimal


@dataclass(frozen=True)
class ProposalMoney:
    currency: str
    exchange_rate: Decimal
    discount_type: str
    lines: tuple[LineMoney, ...]
    sale_amount_oc: Decimal
    sale_amount: Decimal
    discount_amount_oc: Decimal
    discount_amount: Decimal
    vat_amount_oc: Decimal
    vat_amount: Decimal
    total_amount_oc: Decimal
    total_amount: Decimal


def original(record: Mapping[str, Any], name: str, code: str, where: str) -> Decimal | None:
    """A figure in the order's currency: ``<name>_oc``, else (VND only) ``<name>``."""
    found = decimal(record.get(f"{name}_oc"), f"{where}.{name}_oc")
    if found is None and code == VND:
        found = decimal(record.get(name), f"{where}.{name}")
    return None if found is None else rounded(found, code)


def line_amount(line: Mapping[str, Any], code: str, where: str) -> tuple[Decimal, Decimal | None, Decimal]:
    """(quantity, unit price, amount before discount and VAT) in the order's currency."""
    count = quantity(line.get("quantity"), f"{where}.quantity")
    price = decimal(line.get("unit_price"), f"{where}.unit_price")
    given = original(line, "amount", code, where)
    if given is not None:
        return count, price, given
    if price is None:
        raise MoneyError(f"{where} has neither an amount nor a unit_price")
    return count, price, rounded(count * price, code)


def line_discount(line: Mapping[str, Any], amount_oc: Decimal, code: str, where: str) -> Decimal:
    """A line's own discount (``per_line``): its amount, else its rate of the line's amount."""
    given = original(line, "discount_amount", code, where)
    if given is not None:
        return given
    rate = percent(line.get("discount_rate"), f"{where}.discount_rate")
    return ZERO if rate is None else rounded(amount_oc * rate / HUNDRED, code)


def line_vat(line: Mapping[str, Any], base_oc: Decimal, code: str, where: str) -> tuple[Decimal | None, Decimal]:
    """(rate, VAT) of a line whose amount after discount is ``base_oc``."""
    rate = percent(line.get("vat_rate"), f"{where}.vat_rate")
    given = original(line, "vat_amount", code, where)
    if given is not None:
        return rate, given
    return rate, ZERO if rate is None else rounded(base_oc * rate / HUNDRED, code)


def discount_type(order: Mapping[str, Any], lines: Sequence[Mapping[str, Any]], code: str) -> str:
    """The order's ``discount_type``; when it does not say: a rate on the order is ``invoice_percent``,
    lines with discounts are ``per_line``, an amount on the order alone is ``invoice_amount``."""
    said = order.get("discount_type")
    if said is not None:
        if isinstance(said, int) and not isinstance(said, bool):
            by_number = {v: k for k, v in DISCOUNT_TYPES.items()}
            if said in by_number:
                return by_number[said]
        if said in DISCOUNT_TYPES:
            return str(said)
        known = ", ".join(DISCOUNT_TYPES)
        raise MoneyError(f"discount_type = {said!r} is not one of {known} (or ACT's 0 to 3)")
    if percent(order.get("discount_rate"), "discount_rate"):
        return INVOICE_PERCENT
    for n, line in enumerate(lines):
        where = f"lines[{n}]"
        if original(line, "discount_amount", code, where) or percent(
            line.get("discount_rate"), f"{where}.discount_rate"
        ):
            return PER_LINE
    if original(order, "discount_amount", code, "order"):
        return INVOICE_AMOUNT
    return NONE


def proposal_money(order: Mapping[str, Any]) -> ProposalMoney:
    """Every amount of a proposal for ``order`` (a contract record with ``lines``)."""
    code = currency(order.get("currency"))
    rate = exchange_rate(order.get("exchange_rate"), code)
    lines = [line for line in order.get("lines") or [] if isinstance(line, Mapping)]
    kind = discount_type(order, lines, code)
    bases = [line_amount(line, code, f"lines[{n}]") for n, line in enumerate(lines)]
    amounts = [amount for _, _, amount in bases]
    sale_oc = sum(amounts, ZERO)
    if kind == PER_LINE:
        discounts = [
            line_discount(line, a, code, f"lines[{n}]") for n, (line, a) in enumerate(zip(lines, amounts, strict=True))
        ]
    elif kind == INVOICE_PERCENT:
        order_rate = percent(order.get("discount_rate"), "discount_rate") or ZERO
        discounts = share(rounded(sale_oc * order_rate / HUNDRED, code), amounts, code)
    elif kind == INVOICE_AMOUNT:
        discounts = share(original(order, "discount_amount", code, "order") or ZERO, amounts, code)
    else:
        discounts = [ZERO for _ in lines]
    built = []
    for n, (line, (count, price, amount_oc), discount_oc) in enumerate(zip(lines, bases, discounts, strict=True)):
        vat_rate, vat_oc = line_vat(line, amount_oc - discount_oc, code, f"lines[{n}]")
        built.append(
            LineMoney(
                quantity=count,
                unit_price=price,
                amount_oc=amount_oc,
                amount=to_vnd(amount_oc, rate),
                discount_oc=discount_oc,
                discount=to_vnd(discount_oc, rate),
                vat_rate=vat_rate,
                vat_amount_oc=vat_oc,
                vat_amount=to_vnd(vat_oc, rate),
            )
        )
    return totals(code, rate, kind, built)


def totals(code: str, rate: Decimal, kind: str, lines: Sequence[LineMoney]) -> ProposalMoney:
    """The header of a proposal: the sums of its lines, so that they add up by construction."""

    def total(name: str) -> Decimal:
        return sum((getattr(line, name) for line in lines), ZERO)

    sale_oc, discount_oc, vat_oc = total("amount_oc"), total("discount_oc"), total("vat_amount_oc")
    sale, discount, vat = total("amount"), total("discount"), total("vat_amount")
    return ProposalMoney(
        currency=code,
        exchange_rate=rate,
        discount_type=kind,
        lines=tuple(lines),
        sale_amount_oc=sale_oc,
        sale_amount=sale,
        discount_amount_oc=discount_oc,
        discount_amount=discount,
        vat_amount_oc=vat_oc,
        vat_amount=vat,
        total_amount_oc=sale_oc - discount_oc + vat_oc,
        total_amount=sale - discount + vat,
    )
