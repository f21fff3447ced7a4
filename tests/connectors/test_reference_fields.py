"""Against a real tenant the connectors send only the field names of the reference (amis-apis.md).

The connectors (``CrmWriter``, ``ActWriter``) are run with extensions off, as a live deployment runs
them (``LIENTHONG_CONNECTOR_EXTENSIONS`` unset), against the in-process sandboxes, over commands of
every documented entity each writes (CRM customer, product, sale_order; ACT customer and product
dictionaries and sale_order proposals), each created, updated and deleted. Every request body the
sandboxes receive is recorded, and every field of it must be one of the reference's names for that
kind of request (``REFERENCE_FIELDS`` of ``amis/crm_mapping.py`` and ``amis/acct_mapping.py``): a
failure names the field, the request and the reference's section. Commands for the sandboxes'
extensions are refused with a line naming the setting, and nothing is sent for them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from amis import acct_mapping, crm_mapping
from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmClient, CrmCredentials
from amis.errors import Refused
from amis.ledger import LocalWrites, WriteLedger
from amis.mapping import in_reference
from common.names import System
from connectors.writers import ActWriter, CrmWriter
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id

TENANT = "cty-abc"
APP_ID = "0c9f6d2e-app"


@dataclass
class Sent:
    method: str
    path: str
    body: Any

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def recording(sent: list[Sent]) -> Callable:
    """A middleware keeping every request body a sandbox receives (the connector's side of the wire)."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()  # aiohttp keeps the body: the handler reads it again
        sent.append(Sent(request.method, request.path, orjson.loads(raw) if raw else None))
        return await handler(request)

    return record


# --- the check: every field of a request body among the reference's names of its kind ----------------


def undocumented(sent: list[Sent]) -> list[str]:
    """One line per field the reference does not name for its request: the field, the request, the section."""
    problems: list[str] = []
    for request in sent:
        if request.body is None:
            continue
        system, _, name = ("crm", "", request.path.rsplit("/", 1)[-1])
        if request.path.startswith(("/api/oauth/", "/apir/", "/api/sync/")):
            system = "acct"
        if system == "crm":
            problems += _crm(request, name)
        else:
            problems += _acct(request, name)
    return problems


def _fields(
    obj: Any, kind: tuple, request: Sent, table: dict, nested: Callable[[str], tuple | None] = lambda _f: None
) -> list[str]:
    if kind not in table:
        return [f"{request}: the reference has no field list for {kind}"]
    section, names = table[kind]
    if not isinstance(obj, dict):
        return [f"{request}: {kind} is not an object: {obj!r}"]
    problems = [
        f"field {field!r} of {request} ({'/'.join(map(str, kind))}) is not in the reference ({section})"
        for field in obj
        if not in_reference(field, names)
    ]
    for field, value in obj.items():
        inner = nested(field)
        if inner is not None and isinstance(value, (list, dict)):
            for item in value if isinstance(value, list) else [value]:
                problems += _fields(item, inner, request, table)
    return problems


def _crm(request: Sent, resource: str) -> list[str]:
    table = crm_mapping.REFERENCE_FIELDS
    if resource == "Account":
        return _fields(request.body, ("crm", "Account"), request, table)
    if request.method == "DELETE":  # an array of ids (§1.3)
        return [f"{request}: {item!r} is not an id" for item in request.body if not isinstance(item, int)]
    problems: list[str] = []
    for item in request.body:
        kind = ("crm", resource)
        problems += _fields(
            item, kind, request, table, lambda field, kind=kind: (*kind, field) if (*kind, field) in table else None
        )
    return problems


def _acct(request: Sent, function: str) -> list[str]:
    table = acct_mapping.REFERENCE_FIELDS
    body = request.body
    problems = _fields(body, ("acct", function), request, table)
    if function == "save_dictionary":
        for item in body.get("dictionary") or []:
            problems += _fields(item, ("acct", "save_dictionary", item.get("dictionary_type")), request, table)
    elif function == "save":
        for voucher in body.get("voucher") or []:
            kind = ("acct", "save", voucher.get("voucher_type"))
            problems += _fields(
                voucher,
                kind,
                request,
                table,
                lambda field, kind=kind: (*kind, field) if (*kind, field) in table else None,
            )
    elif function == "delete":
        for voucher in body.get("voucher") or []:
            problems += _fields(voucher, ("acct", "delete", "voucher"), request, table)
    return problems


# --- the commands: every documented entity, created, updated, deleted -------------------------------


def command(target: System, entity: str, code: str, fields: dict, op: Op = Op.UPSERT) -> Command:
    event_id = uuid.uuid4().hex
    return Command(
        command_id=command_id(
            tenant=TENANT, event_id=event_id, rule="T", target=target.value, entity=entity, op=op.value, key=code
        ),
        tenant=TENANT,
        target=target,
        entity=entity,
        op=op,
        key=CommandKey(id=None, code=code),
        source=CommandSource(
            system=System.ACCT if target == System.CRM else System.CRM, entity=entity, id=code, event_id=event_id
        ),
        fields=fields,
        rule="T",
        ts_ms=int(time.time() * 1000),
    )


CUSTOMER = {
    "name": "Công ty ABC",
    "tax_code": "0101234567",
    "address": "1 Lê Lợi",
    "phone": "0901",
    "email": "a@b.vn",
    "is_personal": False,
}
PRODUCT = {"name": "Bút", "category_code": "Văn phòng phẩm", "unit": "cái", "unit_price": "5000", "vat_rate": "8"}
LINES = [{"line_id": "31", "product_code": "SP01", "quantity": 2, "unit_price": "5000", "amount": "10000"}]
CRM_ORDER = {
    "customer_code": "KH0001",
    "lines": [{k: v for k, v in line.items() if k != "line_id"} for line in LINES],
    "total_amount": "10000",
    "revenue_status": "proposed",
    "status": "in_progress",
    "delivery_deadline": "2026-12-01",
    "payment_deadline": "2026-12-31",
}
# what the accounting side sends back to a CRM order (SO-9 … SO-14), extension fields included
CRM_ORDER_DERIVED = {
    "delivery_status": "delivering",
    "pay_status": "partially_paid",
    "is_invoiced": True,
    "invoiced_amount": "10000",
    "invoiced_date": "2026-11-28",
    "receipted_amount": "2000",
    "remaining_receivable": "8000",
    "delivered_quantities": [{"line_id": "31", "delivered_quantity": "1"}],
    "revenue_entries": [{"id": "r1", "amount": "100", "status": "recorded"}],
    "receipts": [{"code": "PT1", "amount": "2000"}],
}
ACCT_ORDER = {
    "crm_id": "9",
    "customer_code": "KH0001",
    "lines": LINES,
    "total_amount": "10000",
    "revenue_status": "proposed",
    "status": "in_progress",
    "delivery_status": "not_delivered",
    "is_invoiced": False,
    "delivery_deadline": "2026-12-01",
    "payment_deadline": "2026-12-31",
}


def crm_commands() -> list[Command]:
    return [
        command(System.CRM, "customer", "KH0001", CUSTOMER),
        command(System.CRM, "customer", "KH0001", {**CUSTOMER, "name": "Công ty ABC mới"}),
        command(System.CRM, "product", "SP01", PRODUCT),
        command(System.CRM, "product", "SP01", {**PRODUCT, "unit_price": "6000"}),
        command(System.CRM, "sale_order", "DH0001", CRM_ORDER),
        command(System.CRM, "sale_order", "DH0001", CRM_ORDER_DERIVED),
        command(System.CRM, "sale_order", "DH0001", {}, Op.DELETE),
        command(System.CRM, "product", "SP01", {}, Op.DELETE),
        command(System.CRM, "customer", "KH0001", {}, Op.DELETE),
    ]


def acct_commands() -> list[Command]:
    return [
        command(System.ACCT, "customer", "KH0001", {**CUSTOMER, "is_personal": True, "crm_id": "17"}),
        command(System.ACCT, "customer", "KH0001", {**CUSTOMER, "name": "Công ty ABC mới"}, Op.UPDATE),
        command(System.ACCT, "product", "SP01", PRODUCT),
        command(System.ACCT, "product", "SP01", {**PRODUCT, "unit_price": "6000"}, Op.UPDATE),
        command(System.ACCT, "sale_order", "DH0001", ACCT_ORDER),
        command(System.ACCT, "sale_order", "DH0001", {**ACCT_ORDER, "status": "completed"}),
        command(System.ACCT, "sale_order", "DH0001", {}, Op.DELETE),
        command(System.ACCT, "product", "SP01", {}, Op.DELETE),
        command(System.ACCT, "customer", "KH0001", {}, Op.DELETE),
    ]


# --- the sandboxes, recorded ---------------------------------------------------------------------------


@dataclass
class Wire:
    crm: CrmWriter
    acct: ActWriter
    sent: list[Sent]


@pytest.fixture()
async def wire(tmp_path: Path) -> AsyncIterator[Callable[[bool], Wire]]:
    sent: list[Sent] = []
    crm_store, acct_store = CrmStore(tmp_path / "crm.sqlite"), ActStore(tmp_path / "acct.sqlite")
    crm_app = create_crm_sandbox(crm_store, credentials={"app-abc": TENANT, "app-abc:secret": "s3cret"})
    acct_app = create_acct_sandbox(acct_store, app_id=APP_ID, credentials={f"{APP_ID}:acc3ss": TENANT})
    for app in (crm_app, acct_app):
        app.middlewares.insert(0, recording(sent))
    servers = [TestServer(crm_app), TestServer(acct_app)]
    for server in servers:
        await server.start_server()
    session = aiohttp.ClientSession()
    ledgers = [WriteLedger(tmp_path / "crm-shared.sqlite"), WriteLedger(tmp_path / "acct-shared.sqlite")]
    crm_client = CrmClient(
        str(servers[0].make_url("/api/v2")), session, {TENANT: CrmCredentials("app-abc", SecretStr("s3cret"))}
    )
    acct_client = ActClient(
        str(servers[1].make_url("")), session, APP_ID, {TENANT: ActCredentials(SecretStr("acc3ss"), "0101234567")}
    )

    def writers(extensions: bool) -> Wire:
        return Wire(
            CrmWriter(crm_client, LocalWrites(ledgers[0]), extensions=extensions),
            ActWriter(acct_client, LocalWrites(ledgers[1]), extensions=extensions),
            sent,
        )

    yield writers
    await session.close()
    for server in servers:
        await server.close()
    for closeable in (*ledgers, crm_store, acct_store):
        closeable.close()


async def apply_all(w: Wire) -> None:
    for c in crm_commands():
        await w.crm.apply(c)
    for c in acct_commands():
        await w.acct.apply(c)


async def test_with_extensions_off_every_field_sent_is_one_the_reference_names(wire) -> None:
    w = wire(False)
    await apply_all(w)
    writes = {(s.method, s.path.rsplit("/", 1)[-1]) for s in w.sent if s.body is not None}
    # every kind of write was made: creations, updates and deletions on both sides
    assert {("POST", "Customers"), ("PUT", "Customers"), ("DELETE", "Customers")} <= writes
    assert {("POST", "Products"), ("PUT", "Products"), ("POST", "SaleOrders"), ("PUT", "SaleOrders")} <= writes
    assert {("POST", "save_dictionary"), ("POST", "save"), ("DELETE", "delete")} <= writes
    assert undocumented(w.sent) == []


async def test_with_extensions_on_the_sandbox_gets_its_extension_fields_and_the_check_names_them(wire) -> None:
    """The same commands with LIENTHONG_CONNECTOR_EXTENSIONS on (the demo, the chaos suite): the
    extension fields travel, and the check above would name each of them."""
    w = wire(True)
    await apply_all(w)
    problems = "\n".join(undocumented(w.sent))
    for field, request in (
        ("delivered_quantities", "PUT /api/v2/SaleOrders"),
        ("inventory_item_category_code", "POST /apir/sync/actopen/save_dictionary"),
        ("tax_rate", "POST /apir/sync/actopen/save_dictionary"),
        ("due_date", "POST /apir/sync/actopen/save"),
    ):
        assert f"field {field!r} of {request}" in problems


@pytest.mark.parametrize(
    ("target", "entity"),
    [
        (System.CRM, "quote"),
        (System.CRM, "invoice"),
        (System.CRM, "price_policy"),
        (System.CRM, "product_category"),
        (System.ACCT, "contract"),
        (System.ACCT, "quote"),
        (System.ACCT, "invoice"),
        (System.ACCT, "price_policy"),
        (System.ACCT, "product_category"),
    ],
)
async def test_with_extensions_off_a_command_for_an_extension_is_refused_naming_the_setting(
    wire, target: System, entity: str
) -> None:
    w = wire(False)
    writer = w.crm if target == System.CRM else w.acct
    with pytest.raises(Refused) as refused:
        await writer.apply(command(target, entity, "X1", {"name": "x"}))
    message = str(refused.value)
    assert message.startswith(f"not sent: {'CRM' if target == System.CRM else 'ACT'} {entity} (")
    assert "LIENTHONG_CONNECTOR_EXTENSIONS=true" in message
    assert "\n" not in message and refused.value.status == 404
    assert w.sent == []  # not even a lookup: nothing reached the system


@pytest.mark.parametrize(
    ("target", "entity", "fields"),
    [
        (System.CRM, "sale_order", {"revenue_entries": [{"id": "r1", "amount": "100", "status": "recorded"}]}),
        (System.CRM, "sale_order", {"delivered_quantities": [{"line_id": "31", "delivered_quantity": "1"}]}),
        (System.ACCT, "product", {"category_code": "VPP"}),
    ],
)
async def test_with_extensions_off_a_command_of_extension_fields_only_is_refused_and_nothing_is_written(
    wire, target: System, entity: str, fields: dict
) -> None:
    """Left out, the extension fields would leave an empty write that still touches the record."""
    w = wire(False)
    writer = w.crm if target == System.CRM else w.acct
    with pytest.raises(Refused) as refused:
        await writer.apply(command(target, entity, "X1", fields))
    message = str(refused.value)
    assert message.startswith(f"not sent: the public API has no {entity} field {', '.join(fields)} ")
    assert "LIENTHONG_CONNECTOR_EXTENSIONS=true" in message and "\n" not in message
    assert w.sent == []
