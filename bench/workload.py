"""A realistic, seeded workload of change events, built from the wire contract (docs/contract.md).

Per tenant it repeats a *business unit* until the requested number of events is reached. The mix,
in the order the events of one unit happen (each record's events stay in causal order):

| share | events | what the processor does |
|---|---|---|
| 2 | acct customer created; its CRM copy reported back (origin = sync) | CUS-6; X-1 (learns the link) |
| 1 | CRM user edits that customer | CUS-3 (linked) |
| 1 | accounting changes the customer's address | CUS-8 |
| 1 | CRM product created | PRD-1 |
| 2 | CRM order drafted, then proposed for revenue | SO-1 none (condition), SO-4 (+ X-4 deps) |
| 3 | acct sales order (SO-4's echo, origin sync), a sales voucher, a receipt | SO-9, SO-13, SO-10, SO-14 |
| 1 | CRM invoice request proposed | INV-1 |
| 1 | acct price policy over two categories | PP-1 (two CRM copies) |

That is 12 events per unit and about 13 commands (X-4's CUS-10 and PRD-1 dependencies included).
Amounts are decimal strings; record ids are unique per tenant; every event has a unique
``event_id``. ``events(n, tenants)`` yields them unit by unit, round-robin over tenants, as
``Event(topic, key, value)`` with the topic name without the deployment prefix.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import orjson

from common.names import System, cdc_topic
from streams.core.contract import change_event_json

TS_MS = 1_764_201_600_000


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    key: bytes
    value: bytes


def _change(
    tenant: str,
    system: System,
    entity: str,
    event_id: str,
    after: dict | None,
    *,
    op: str = "c",
    before: dict | None = None,
    origin: str = "user",
    ts_ms: int = TS_MS,
    action: str | None = None,
) -> Event:
    record = after if after is not None else before

    if record is None:
        raise ValueError("a change event needs after, or before for a delete")
    value = change_event_json(
        event_id=event_id,
        tenant=tenant,
        system=system,
        entity=entity,
        op=op,
        origin=origin,
        ts_ms=ts_ms,
        before=before,
        after=after,
        action=action,
    )
    return Event(cdc_topic(system, entity), f"{tenant}:{record['id']}".encode(), orjson.dumps(value))


def business_unit(tenant: str, n: int, rng: random.Random) -> list[Event]:
    """The events of unit ``n`` of a tenant, in causal order."""
    u = f"{n:07d}"
    ev = f"{tenant}-{u}"
    customer_code, product_code = f"KH{u}", f"SP{u}"
    customer = {
        "id": f"AC{u}",
        "code": customer_code,
        "name": f"Công ty {u}",
        "tax_code": f"01{u}",
        "address": "Hà Nội",
        "phone": "0901000000",
        "email": f"kh{u}@example.vn",
        "is_personal": False,
    }
    crm_customer = {**{k: v for k, v in customer.items() if k != "id"}, "id": f"CC{u}"}
    edited = {**crm_customer, "phone": f"09{rng.randrange(10**8):08d}"}
    price = str(rng.randrange(1, 500) * 1000)
    product = {
        "id": f"CP{u}",
        "code": product_code,
        "name": f"Hàng {u}",
        "category_code": "LH1",
        "unit": "cái",
        "unit_price": price,
        "vat_rate": "10",
    }
    quantity = rng.randrange(1, 20)
    total = str(int(price) * quantity)
    lines = [
        {"line_id": "L1", "product_code": product_code, "quantity": quantity, "unit_price": price, "amount": total}
    ]
    order = {
        "id": f"CO{u}",
        "code": f"DH{u}",
        "customer_code": customer_code,
        "lines": lines,
        "total_amount": total,
        "revenue_status": "draft",
        "status": "not_started",
    }
    proposed = {**order, "revenue_status": "proposed"}
    acct_order = {
        "id": f"AO{u}",
        "code": f"DH{u}",
        "crm_id": order["id"],
        "customer_code": customer_code,
        "lines": [{k: v for k, v in line.items() if k != "unit_price"} for line in lines],
        "total_amount": total,
        "revenue_status": "proposed",
        "status": "in_progress",
    }
    delivered = rng.randrange(1, quantity + 1)
    voucher = {
        "id": f"AV{u}",
        "code": f"XK{u}",
        "order_id": acct_order["id"],
        "lines": [
            {
                "line_id": "L1",
                "product_code": product_code,
                "quantity": delivered,
                "amount": str(int(price) * delivered),
            }
        ],
        "invoice_no": None,
        "einvoice_published": False,
    }
    receipt = {"id": f"AR{u}", "code": f"PT{u}", "order_id": acct_order["id"], "amount": str(int(price) * delivered)}
    invoice = {"id": f"CI{u}", "code": f"HD{u}", "order_code": order["code"], "status": "proposed", "amount": total}
    policy = {
        "id": f"AP{u}",
        "code": f"CSG{u}",
        "name": f"Bảng giá {u}",
        "category_codes": ["LH1", "LH2"],
        "prices": [
            {"product_code": product_code, "category_code": "LH1", "price": price},
            {"product_code": f"SPX{u}", "category_code": "LH2", "price": "1000"},
        ],
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
    }
    return [
        _change(tenant, System.ACCT, "customer", f"{ev}-1", customer),
        _change(tenant, System.CRM, "customer", f"{ev}-2", crm_customer, origin="sync"),
        _change(tenant, System.CRM, "customer", f"{ev}-3", edited, op="u", before=crm_customer),
        _change(tenant, System.CRM, "product", f"{ev}-4", product),
        _change(tenant, System.CRM, "sale_order", f"{ev}-5", order),
        _change(tenant, System.CRM, "sale_order", f"{ev}-6", proposed, op="u", before=order),
        _change(tenant, System.ACCT, "sale_order", f"{ev}-7", acct_order, origin="sync"),
        _change(tenant, System.ACCT, "sales_voucher", f"{ev}-8", voucher),
        _change(tenant, System.ACCT, "receipt", f"{ev}-9", receipt),
        _change(tenant, System.CRM, "invoice", f"{ev}-10", invoice),
        _change(tenant, System.ACCT, "price_policy", f"{ev}-11", policy),
        _change(
            tenant, System.ACCT, "customer", f"{ev}-12", {**customer, "address": "Hồ Chí Minh"}, op="u", before=customer
        ),
    ]


def events(count: int, tenants: int = 50, *, seed: int = 1, prefix: str = "t") -> Iterator[Event]:
    """``count`` events over ``tenants`` tenants, unit by unit, round-robin over tenants."""
    rng = random.Random(seed)
    produced = 0
    unit = 0
    while produced < count:
        for t in range(tenants):
            for event in business_unit(f"{prefix}{t:03d}", unit, rng):
                if produced >= count:
                    return
                yield event
                produced += 1
        unit += 1


def bulk_import(count: int, tenant: str = "bulk") -> Iterator[Event]:
    """One company imports ``count`` products into accounting at once (PRD-3: each to CRM)."""
    for n in range(count):
        product = {"id": f"HH{n:07d}", "code": f"SP{n:07d}", "name": f"Sản phẩm {n}", "unit": "cái", "price": "150000"}
        yield _change(tenant, System.ACCT, "product", f"{tenant}-import-{n}", product, action="import")


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description="Write a workload as JSON lines (topic, key, value) to stdout.")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    for event in events(args.events, args.tenants, seed=args.seed):
        line = {"topic": event.topic, "key": event.key.decode(), "value": orjson.loads(event.value)}
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
