"""CRM's field names: the AMIS CRM API's PascalCase names, with its own names for a few fields.

``to_crm(entity, record)`` turns a canonical record (contract field names) into the API's;
``from_crm(entity, record)`` turns it back. Used by the CRM sandbox, the CRM connector and the
webhook receiver, so all three agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

# canonical name -> CRM API name, where CRM does not simply PascalCase it
CRM_NAMES: dict[str, dict[str, str]] = {
    "customer": {"name": "AccountName", "phone": "OfficeTel", "email": "OfficeEmail", "address": "BillingAddress"},
    "product": {"name": "ProductName", "code": "ProductCode"},
    "sale_order": {"code": "SaleOrderNo", "total_amount": "SaleOrderAmount"},
}


def to_pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def convert(value: Any, key_fn: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        return {key_fn(k): convert(v, key_fn) for k, v in value.items()}
    if isinstance(value, list):
        return [convert(v, key_fn) for v in value]
    return value


def to_crm(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    names = CRM_NAMES.get(entity, {})
    return {names.get(k) or to_pascal(k): convert(v, to_pascal) for k, v in record.items()}


def from_crm(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    reverse = {api: canonical for canonical, api in CRM_NAMES.get(entity, {}).items()}
    return {reverse.get(k) or to_snake(k): convert(v, to_snake) for k, v in record.items()}
