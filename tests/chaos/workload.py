"""The chaos suite's business workload, driven into the sandboxes as their users would, and its ground truth.

Each tenant works a few *business units* at once, each what a small company does in a day across
the two systems (the demo's business day, generalised):

1. an accountant creates customer ``KA<n>`` in AMIS Kế toán (CUS-6 brings it to CRM, linked); a
   sales person then adds a phone number to it in CRM (CUS-3 carries it back to accounting);
2. sales creates customer ``KC<n>``, product ``SP<n>`` and order ``DH<n>`` (one or two lines) in
   CRM and proposes it for revenue (SO-4 with the X-4 dependencies: customer and product first);
3. the accountant generates the proposal into a sales order, enters a delivery ``XK<n>`` of part
   or all of it and one or two receipts ``PT<n>-k`` (the derived statuses SO-9…SO-14 go to CRM).

``Unit`` holds the generated numbers; ``expected_*`` say what each sandbox must show at the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

from amis import acct_mapping, crm_mapping
from amis.crm_client import CrmClient, CrmCredentials
from amis.errors import Refused, Transient
from sandboxes.acct_store import ActStore
from sandboxes.app import creations
from sandboxes.crm_store import CrmStore
from tests.core.oracle import OrderTruth, VoucherTruth, wire_values


@dataclass
class Line:
    product_code: str
    quantity: int
    unit_price: int
    delivered: int  # what the delivery voucher carries

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price


@dataclass
class Unit:
    tenant: str
    n: int
    lines: list[Line]
    receipts: list[int]
    phone: str
    start_after: float  # seconds after the workload begins
    # learnt while it runs
    crm_order_id: str | None = None
    acct_order_id: str | None = None
    line_ids: list[str] = field(default_factory=list)
    done: bool = False

    def code(self, prefix: str) -> str:
        return f"{prefix}{self.n:03d}"

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def products(self) -> list[str]:
        return sorted({line.product_code for line in self.lines})


def generate(tenants: list[str], units_per_tenant: int, spread_s: float, seed: int = 11) -> list[Unit]:
    rng = random.Random(seed)
    units = []
    for tenant in tenants:
        for n in range(units_per_tenant):
            products = [f"SP{n:03d}", f"SQ{n:03d}"][: rng.choice((1, 1, 2))]
            lines = []
            for product in products:
                quantity = rng.randint(2, 20)
                lines.append(Line(product, quantity, rng.choice((5_000, 12_000, 150_000)), 0))
            for i, line in enumerate(lines):  # delivered: all or part of the first line; all or none of a second
                line.delivered = rng.choice(
                    (line.quantity, rng.randint(1, line.quantity - 1)) if i == 0 else (line.quantity, 0)
                )
            total = sum(line.amount for line in lines)
            paid = rng.choice((total, total // 2, total // 3))
            receipts = [paid] if rng.random() < 0.6 else [paid // 2, paid - paid // 2]
            units.append(
                Unit(tenant, n, lines, receipts, f"09{rng.randint(10_000_000, 99_999_999)}", rng.uniform(0, spread_s))
            )
    return units


def product_price(unit: Unit, code: str) -> int:
    return next(line.unit_price for line in unit.lines if line.product_code == code)


# --- what each sandbox shows ------------------------------------------------------------------------


class Views:
    """Read the sandboxes' own databases (what their pages show), in the contract's field names."""

    def __init__(self, crm_db: Path, acct_db: Path) -> None:
        self.crm = CrmStore(crm_db)
        self.acct = ActStore(acct_db)

    def close(self) -> None:
        self.crm.close()
        self.acct.close()

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        spec = crm_mapping.RESOURCES[entity]
        found = self.crm.by_code(tenant, spec.resource, code)
        return spec.record.from_wire(found) if found else None

    def crm_all(self, tenant: str, entity: str) -> list[dict[str, Any]]:
        spec = crm_mapping.RESOURCES[entity]
        return [spec.record.from_wire(r) for r in self.crm.all(tenant, spec.resource)]

    def acct_dictionary(self, tenant: str, entity: str) -> list[dict[str, Any]]:
        spec = acct_mapping.DICTIONARIES[entity]
        rows = self.acct.dictionary_page(tenant, spec.data_type, skip=0, take=100_000, since_ms=None, deleted=False)
        return [spec.record.from_wire(r) for r in rows]

    def acct_documents(self, tenant: str, entity: str) -> list[dict[str, Any]]:
        """Vouchers of one kind (generated orders, deliveries, receipts), in the contract's names."""
        spec = acct_mapping.VOUCHERS[entity]
        return [
            spec.record.from_wire(v) for v in self.acct.vouchers(tenant) if v.get("voucher_type") == spec.voucher_type
        ]

    def acct_proposal(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        table = acct_mapping.VOUCHERS[entity].record
        for proposal, _state in self.acct.proposals(tenant):
            if proposal.get("org_refno") == code:
                return table.from_wire(proposal)
        return None

    def creations(self, system: str, tenant: str) -> dict[tuple[str, str], int]:
        """How many times each (kind, code) was created, from the sandbox's journal."""
        return creations(self.crm.journal(tenant) if system == "crm" else self.acct.journal(tenant))


# --- the people at work ---------------------------------------------------------------------------


async def patiently(what: str, call: Callable[[], Any], attempts: int = 200) -> Any:
    """A person retries what the injected faults broke (a 5xx, 429 or timeout never reached the records)."""
    for _ in range(attempts):
        try:
            return await call()
        except Transient:
            await asyncio.sleep(0.1)
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"the sandbox kept failing: {what}")


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"not within {timeout:g}s: {what}")


class CrmUser:
    """A sales person using CRM's API with an AppID of their own (origin ``user``)."""

    def __init__(self, api_url: str, tenant: str, session: aiohttp.ClientSession) -> None:
        self.tenant = tenant
        creds = {tenant: CrmCredentials(f"user-{tenant}", SecretStr(f"user-secret-{tenant}"))}
        self.client = CrmClient(api_url, session, creds, timeout=5)

    async def save(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        spec = crm_mapping.RESOURCES[entity]
        wire = spec.record.to_wire(record, entity)
        record_id = wire.pop("id", None)
        if record_id is not None:
            (result,) = await patiently(
                "update", lambda: self.client.update(self.tenant, spec.resource, [{"id": record_id, **wire}])
            )
        else:
            (result,) = await patiently("create", lambda: self.client.create(self.tenant, spec.resource, [wire]))
        if not result.success or result.id is None:
            raise Refused(f"CRM refused {entity}: {result.message()}", status=400)
        (row,) = await patiently("read", lambda: self.client.by_ids(self.tenant, spec.resource, [result.id]))
        return spec.record.from_wire(row)


class Accountant:
    """An accountant in AMIS Kế toán's screens (the sandbox's ``/sandbox/ui``)."""

    def __init__(self, url: str, tenant: str, session: aiohttp.ClientSession, admin_token: str) -> None:
        self.url, self.tenant, self.session = url, tenant, session
        self.headers = {"Authorization": f"Bearer {admin_token}"}  # the sandbox's /sandbox/... routes need it

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.url}/sandbox/ui/{self.tenant}/{path}"
        async with self.session.post(url, json=body, headers=self.headers) as answer:
            data = await answer.json()
            if answer.status != 200:
                raise AssertionError(f"the accounting sandbox refused {path}: {data}")
            return data["data"]

    async def save(self, entity: str, record: dict[str, Any]) -> Any:
        spec = acct_mapping.DICTIONARIES[entity]
        return await self._post(
            "dictionary", {**spec.record.to_wire(record, entity), "dictionary_type": spec.dictionary_type}
        )

    async def generate(self, org_refid: str) -> Any:
        return await self._post(f"proposals/{org_refid}/generate")

    async def enter(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        spec = acct_mapping.VOUCHERS[entity]
        voucher = {**spec.record.to_wire(record, entity), "voucher_type": spec.voucher_type, "reftype": spec.reftype}
        return spec.record.from_wire(await self._post("vouchers", voucher))


async def work(
    unit: Unit,
    views: Views,
    crm_api: str,
    acct_url: str,
    session: aiohttp.ClientSession,
    wait: float,
    admin_token: str,
) -> None:
    """One business unit, step by step, each step waiting until the other system shows what it must."""
    tenant = unit.tenant
    crm, acct = CrmUser(crm_api, tenant, session), Accountant(acct_url, tenant, session, admin_token)
    await asyncio.sleep(unit.start_after)

    # 1. CUS-6, then CUS-3 on the linked customer
    await acct.save("customer", {"code": unit.code("KA"), "name": f"Công ty A{unit.n}", "tax_code": f"01{unit.n:08d}"})
    crm_customer = await eventually(
        lambda: views.crm_record(tenant, "customer", unit.code("KA")), wait, f"{tenant} {unit.code('KA')} in CRM"
    )
    await crm.save("customer", {"id": crm_customer["id"], "phone": unit.phone})

    # 2. a CRM customer, products, an order drafted and proposed for revenue
    await crm.save("customer", {"code": unit.code("KC"), "name": f"Cửa hàng C{unit.n}"})
    for code in unit.products:
        await crm.save(
            "product",
            {"code": code, "name": f"Hàng {code}", "unit": "cái", "unit_price": str(product_price(unit, code))},
        )
    order = {
        "code": unit.code("DH"),
        "customer_code": unit.code("KC"),
        "revenue_status": "draft",
        "status": "not_started",
        "total_amount": str(unit.total),
        "lines": [
            {
                "product_code": line.product_code,
                "quantity": line.quantity,
                "unit_price": str(line.unit_price),
                "amount": str(line.amount),
            }
            for line in unit.lines
        ],
    }
    saved = await crm.save("sale_order", order)
    unit.crm_order_id = str(saved["id"])
    await asyncio.sleep(1.0)  # the draft is captured before the proposal (two changes, not one)
    await crm.save("sale_order", {"id": saved["id"], "revenue_status": "proposed"})
    proposal = await eventually(
        lambda: views.acct_proposal(tenant, "sale_order", unit.code("DH")), wait, f"{tenant} proposal {unit.code('DH')}"
    )

    # 3. generated; a delivery and receipts
    await acct.generate(proposal["id"])
    unit.acct_order_id = str(proposal["id"])
    unit.line_ids = [str(line["line_id"]) for line in proposal["lines"]]
    delivered = [
        {
            "line_id": line_id,
            "product_code": line.product_code,
            "quantity": line.delivered,
            "amount": str(line.delivered * line.unit_price),
        }
        for line_id, line in zip(unit.line_ids, unit.lines, strict=True)
        if line.delivered
    ]
    await acct.enter("sales_voucher", {"code": unit.code("XK"), "order_id": proposal["id"], "lines": delivered})
    for k, amount in enumerate(unit.receipts):
        await acct.enter(
            "receipt", {"code": f"{unit.code('PT')}-{k}", "order_id": proposal["id"], "amount": str(amount)}
        )
    unit.done = True


# --- ground truth -----------------------------------------------------------------------------------


def expected_derived(unit: Unit) -> dict[str, Any]:
    """What CRM's order must show once the delivery and receipts are counted: the documents the unit
    entered (its order, its delivery, its receipts, from the workload alone) through the oracle of
    ``tests/core/oracle.py`` (SO-9, SO-10, SO-13, SO-14 written out; not the core's aggregates)."""
    order = OrderTruth(
        tenant=unit.tenant, order_id=unit.acct_order_id or unit.code("DH"), kind="sale_order", had_vouchers=True
    )
    order.total = Decimal(unit.total)
    delivered: dict[str, Decimal] = {}
    for line_id, line in zip(unit.line_ids, unit.lines, strict=True):
        order.ordered[line_id] = order.ordered.get(line_id, Decimal(0)) + line.quantity
        if line.delivered:  # the delivery voucher carries only the lines it delivers
            delivered[line_id] = delivered.get(line_id, Decimal(0)) + line.delivered
    amount = sum((Decimal(line.delivered * line.unit_price) for line in unit.lines), Decimal(0))
    order.vouchers[unit.code("XK")] = VoucherTruth(lines=delivered, amount=amount, invoiced=False, invoiced_date=None)
    order.receipts = {f"{unit.code('PT')}-{k}": Decimal(amount) for k, amount in enumerate(unit.receipts)}
    return wire_values(order.crm(), DERIVED_FIELDS)


DERIVED_FIELDS = ("delivered_quantities", "delivery_status", "receipted_amount", "remaining_receivable", "pay_status")


def expected_crm(units: list[Unit], tenant: str) -> dict[str, dict[str, dict[str, Any]]]:
    """entity -> code -> the fields CRM must show (only those the workload decides)."""
    mine = [u for u in units if u.tenant == tenant]
    customers: dict[str, dict[str, Any]] = {}
    products: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, Any]] = {}
    for u in mine:
        customers[u.code("KA")] = {"name": f"Công ty A{u.n}", "tax_code": f"01{u.n:08d}", "phone": u.phone}
        customers[u.code("KC")] = {"name": f"Cửa hàng C{u.n}"}
        for code in u.products:
            products[code] = {"name": f"Hàng {code}", "unit_price": str(product_price(u, code))}
        orders[u.code("DH")] = {"customer_code": u.code("KC"), "total_amount": str(u.total), **expected_derived(u)}
    return {"customer": customers, "product": products, "sale_order": orders}


def expected_acct(units: list[Unit], tenant: str) -> dict[str, dict[str, dict[str, Any]]]:
    mine = [u for u in units if u.tenant == tenant]
    customers: dict[str, dict[str, Any]] = {}
    products: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, Any]] = {}
    for u in mine:
        customers[u.code("KA")] = {"name": f"Công ty A{u.n}", "tax_code": f"01{u.n:08d}", "phone": u.phone}
        customers[u.code("KC")] = {"name": f"Cửa hàng C{u.n}"}
        for code in u.products:
            products[code] = {"name": f"Hàng {code}"}
        orders[u.code("DH")] = {"crm_id": u.crm_order_id, "customer_code": u.code("KC")}
    return {"customer": customers, "product": products, "sale_order": orders}
