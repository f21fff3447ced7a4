"""What a change event must be before anything is decided from it: checked at the edge, said plainly.

``decode_change_event`` (``streams.core.contract``) runs these checks on every event; a failure is
a ``BadInput`` whose message names the field, the value and what was expected, and the event goes
to the dead-letter topic whole. The rules (also in ``docs/contract.md``, "What is checked"):

* **tenant**: 1 to 64 ASCII letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit.
  No ``:``: every key the processor builds starts with ``<tenant>:``, so no tenant can reach into
  another's keys, whatever its name.
* **record ids and codes** (``id``, ``code``, ``crm_id``, ``order_id``, ``customer_code``,
  ``product_code``, ``category_code``, ``line_id``): a string of 1 to 256 printable characters, or an
  integer; never an object, a list, a boolean or a fraction.
* **money** (``total_amount``, ``amount``, ``unit_price``, ``price``, ``vat_rate`` and the optional money
  of orders: ``*_oc``, ``vat_amount``, ``discount_rate``, ``discount_amount``, ``sale_amount``,
  ``exchange_rate``; wherever they appear in the record and its lines, prices and revenue entries): a
  decimal string of ASCII digits (``"200000"``, ``"-12.5"``; at most 20 digits before the point and 10
  after, no exponent, no ``NaN``/``Infinity``) or an integer below 10^20; never a JSON float.
* **quantities** (``quantity`` of lines): the same, or a finite JSON number (``2.5`` kg).
* **states** (``status``, ``revenue_status``, ``delivery_status``, ``einvoice_published``, ``invoice_no``,
  ``invoice_date``, wherever they appear): a string, a number, a boolean or null; never an object or a
  list. A rule's condition and the action a change means (``streams.core.transitions``) compare them
  with names, so a value that is no name is refused here, not met there.
* **lists** (``lines``, ``prices``, ``revenue_entries``: of objects; ``codes``, ``category_codes``: of
  codes as above): a JSON list or null; the rules walk them item by item.
* **the message key** of a contract event: ``<tenant>:<record id>`` as the event says. A Debezium
  envelope's key is the source table's primary key in Debezium's own form and is not compared.
"""

from __future__ import annotations

import math
import re
from typing import Any

from streams.core.errors import BadInput, json_pointer

TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DECIMAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,10})?")
LARGEST_INTEGER = 10**20
LONGEST_ID = 256

ID_FIELDS = ("id", "code", "crm_id", "order_id", "customer_code", "product_code", "category_code", "line_id")
MONEY_FIELDS = (
    "total_amount",
    "amount",
    "unit_price",
    "price",
    "vat_rate",
    # the money of orders, contracts and quotes (docs/contract.md, "Money of orders"): a proposal's
    # totals are computed from them, and a float's binary value would not add up
    "amount_oc",
    "vat_amount",
    "vat_amount_oc",
    "discount_rate",
    "discount_amount",
    "discount_amount_oc",
    "sale_amount",
    "sale_amount_oc",
    "total_amount_oc",
    "exchange_rate",
)
QUANTITY_FIELDS = ("quantity",)
# The fields a rule's condition (rule_table's "when") or the action a change means (transitions.py)
# reads: compared with names and looked up in sets, so an object or a list there is bad input, never
# an internal error. tests/core/test_fuzz.py checks that every condition of the table reads one.
STATE_FIELDS = ("status", "revenue_status", "delivery_status", "einvoice_published", "invoice_no", "invoice_date")
# Lists the rules walk item by item: of sub-records, and of codes.
OBJECT_LIST_FIELDS = ("lines", "prices", "revenue_entries")
CODE_LIST_FIELDS = ("codes", "category_codes")
# Lists of sub-records whose fields are checked like the record's own.
NESTED = ("lines", "prices", "revenue_entries")


def _pointer(prefix: str, name: str) -> str:
    """``after.lines[0].`` + ``quantity`` -> ``/after/lines/0/quantity``: where a JSON Schema validator
    says the value is (``docs/contract/schemas/change-event.json``). Built only when the value is wrong."""
    return json_pointer(*re.findall(r"[^.\[\]]+", prefix + name))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_tenant(tenant: Any, where: str, pointer: str | None = None) -> str:
    """``pointer``: where the tenant is in the message (``/tenant``; ``""`` when it lacks one), if anywhere."""
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise BadInput(
            "schema",
            f"{where}: tenant {_shown(tenant)} is not a tenant id (1 to 64 ASCII letters, digits, '.', '_' or "
            f"'-', starting with a letter or digit; no ':')",
            pointer,
        )
    return tenant


def _check_id(value: Any, prefix: str, name: str, where: str) -> None:
    """``prefix`` + ``name`` is the field's path, spelled only when it is wrong (every event's every
    checked field passes here: building the path each time cost more than the check)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput(
            "schema",
            f"{where}: {prefix}{name} = {_shown(value)} must be a string or an integer (a record id or code)",
            _pointer(prefix, name),
        )
    if isinstance(value, str) and (not value or len(value) > LONGEST_ID or not value.isprintable()):
        raise BadInput(
            "schema",
            f"{where}: {prefix}{name} = {_shown(value)} must be 1 to {LONGEST_ID} printable characters",
            _pointer(prefix, name),
        )


def _check_amount(value: Any, prefix: str, name: str, where: str, *, quantity: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if abs(value) < LARGEST_INTEGER:
            return
    elif isinstance(value, str):
        if DECIMAL.fullmatch(value):
            return
    elif isinstance(value, float) and quantity and math.isfinite(value) and abs(value) < LARGEST_INTEGER:
        return
    expected = 'a decimal string like "12.5" (ASCII digits, no exponent) or an integer'
    if quantity:
        expected += ", or a JSON number"
    elif isinstance(value, float):
        expected += "; money is never a JSON float"
    raise BadInput("schema", f"{where}: {prefix}{name} = {_shown(value)} must be {expected}", _pointer(prefix, name))


def _check_state(value: Any, prefix: str, name: str, where: str) -> None:
    if isinstance(value, (dict, list)):
        raise BadInput(
            "schema",
            f"{where}: {prefix}{name} = {_shown(value)} must be a string, a number, a boolean or null (a state), "
            f"never an object or a list",
            _pointer(prefix, name),
        )


def _check_list(value: Any, prefix: str, name: str, where: str, *, of_codes: bool) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        what = "codes" if of_codes else "objects"
        raise BadInput(
            "schema", f"{where}: {prefix}{name} = {_shown(value)} must be a list of {what}", _pointer(prefix, name)
        )
    for index, item in enumerate(value):
        if of_codes:
            _check_id(item, prefix, f"{name}[{index}]", where)
        elif not isinstance(item, dict):
            raise BadInput(
                "schema",
                f"{where}: {prefix}{name}[{index}] = {_shown(item)} must be an object",
                _pointer(prefix, f"{name}[{index}]"),
            )


# What each checked field is: an id or code, money, a quantity, a state, a list of objects or of codes.
_ID, _MONEY, _QUANTITY, _STATE, _OBJECTS, _CODES = 1, 2, 3, 4, 5, 6
_CHECKED: dict[str, int] = {
    **dict.fromkeys(ID_FIELDS, _ID),
    **dict.fromkeys(MONEY_FIELDS, _MONEY),
    **dict.fromkeys(QUANTITY_FIELDS, _QUANTITY),
    **dict.fromkeys(STATE_FIELDS, _STATE),
    **dict.fromkeys(OBJECT_LIST_FIELDS, _OBJECTS),
    **dict.fromkeys(CODE_LIST_FIELDS, _CODES),
}


def _check_fields(fields: dict[str, Any], prefix: str, where: str) -> None:
    checked = _CHECKED
    for name, value in fields.items():
        kind = checked.get(name)
        if kind is None:
            continue
        if kind == _ID:
            if value is not None:
                _check_id(value, prefix, name, where)
        elif kind == _STATE:
            _check_state(value, prefix, name, where)
        elif kind >= _OBJECTS:
            _check_list(value, prefix, name, where, of_codes=kind == _CODES)
        else:
            _check_amount(value, prefix, name, where, quantity=kind == _QUANTITY)


def check_record(record: dict[str, Any] | None, side: str, where: str) -> None:
    """Ids, codes and amounts of ``before`` or ``after``, and of its lines, prices, revenue entries."""
    if record is None:
        return
    _check_fields(record, f"{side}.", where)
    for list_name in NESTED:
        items = record.get(list_name)
        if isinstance(items, list):
            for index, item in enumerate(items):
                if isinstance(item, dict):
                    _check_fields(item, f"{side}.{list_name}[{index}].", where)


def check_event_id(event_id: Any, where: str) -> None:
    if not isinstance(event_id, str) or not event_id or len(event_id) > LONGEST_ID or not event_id.isprintable():
        raise BadInput(
            "schema",
            f"{where}: event_id {_shown(event_id)} must be 1 to {LONGEST_ID} printable characters",
            "/event_id",
        )


def check_key(key: bytes | None, tenant: str, record_id: str, where: str) -> None:
    """A contract event's message key names its record: ``<tenant>:<record id>``."""
    expected = f"{tenant}:{record_id}"
    if key is None or key != expected.encode():
        shown = "no key" if key is None else f"key {_shown(key)}"
        raise BadInput(
            "key",
            f"{where}: {shown}, but the event is for {expected!r}: a change event's key is "
            f"'<tenant>:<record id>' as the event says (it decides the partition, and so the order, of the "
            f"record's changes)",
        )
