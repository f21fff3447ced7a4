"""The CRM sandbox's records: the resources it serves (documented and extensions), and the
store that holds their records (SQLite, in CRM's own field names) with a journal of every write.
``sandboxes/crm.py`` says what the sandbox is; ``sandboxes/crm_api.py`` serves these records.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sandboxes.wire import iso_vn

REVENUE_LABELS = {"Bản nháp", "Đề nghị ghi", "Đã ghi", "Từ chối ghi"}
STATUS_LABELS = {"Chưa thực hiện", "Đang thực hiện", "Đã thực hiện", "Đã hủy bỏ", "Đã giao đủ hàng"}
DELIVERY_LABELS = {"Chưa giao hàng", "Đang giao hàng", "Đã giao hàng"}
PAY_LABELS = {"Chưa thanh toán", "Đã thanh toán", "Đã thanh toán một phần"}
APPROVED_LABELS = {"Chờ duyệt", "Đã duyệt", "Từ chối"}
INVOICE_REQUEST_LABELS = {
    "Bản nháp",
    "Đề nghị xuất",
    "Đã duyệt",
    "Từ chối",
    "Đã xuất",
    "Từ chối xuất hóa đơn",
    "Đã hủy bỏ",
}


@dataclass(frozen=True)
class Resource:
    name: str
    code_field: str
    required: tuple[str, ...]
    labels: dict[str, set[str]]
    lines_field: str | None = None
    extension: str | None = None


RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("Customers", "account_number", ("account_name",), {}),
        Resource("Contacts", "contact_code", ("contact_name",), {}),
        Resource("Products", "product_code", ("product_code", "product_name"), {}),
        Resource(
            "SaleOrders",
            "sale_order_no",
            ("sale_order_no",),
            {
                "revenue_status": REVENUE_LABELS,
                "status": STATUS_LABELS,
                "delivery_status": DELIVERY_LABELS,
                "pay_status": PAY_LABELS,
                "approved_status": APPROVED_LABELS,
            },
            lines_field="sale_order_product_mappings",
        ),
        Resource(
            "ProductCategories",
            "product_category_code",
            ("product_category_code",),
            {},
            extension="not part of AMIS CRM Open API v2: product categories are only a text field of Products",
        ),
        Resource(
            "Quotes",
            "quote_code",
            ("quote_code",),
            {},
            lines_field="quote_product_mappings",
            extension="not part of AMIS CRM Open API v2: quotes have no public endpoint",
        ),
        Resource(
            "InvoiceRequests",
            "invoice_request_code",
            ("invoice_request_code",),
            {"status": INVOICE_REQUEST_LABELS},
            extension="not part of AMIS CRM Open API v2: invoice requests have no public endpoint",
        ),
        Resource(
            "PricePolicies",
            "price_policy_code",
            ("price_policy_code",),
            {},
            extension="not part of AMIS CRM Open API v2: price policies have no public endpoint",
        ),
    )
}
# Fields of documented resources the public API does not have (the matrix needs them): answers that
# carry one say so in "extension_fields" and the X-Sandbox-Extension header.
EXTENSION_FIELDS: dict[str, dict[str, str]] = {
    "SaleOrders": {
        "delivered_quantities": "not part of AMIS CRM Open API v2: no per-line delivered quantity",
        "revenue_entries": "not part of AMIS CRM Open API v2: no revenue-recognition entries on orders",
        "receipts": "not part of AMIS CRM Open API v2: no list of receipts on orders",
    }
}
SYSTEM_FIELDS = ("id", "created_date", "modified_date", "created_by", "modified_by")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    resource TEXT NOT NULL,
    code TEXT,
    data BLOB NOT NULL,
    modified_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_time ON records (tenant, resource, modified_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS records_by_code ON records (tenant, resource, code);
CREATE TABLE IF NOT EXISTS line_ids (n INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    resource TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    code TEXT,
    op TEXT NOT NULL,
    client_id TEXT,
    ts_ms INTEGER NOT NULL
);
"""


class CrmStore:
    """The CRM sandbox's records (SQLite), in CRM's own field names, and a journal of every write."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads -----------------------------------------------------------------------------------

    def page(
        self, tenant: str, resource: str, *, page: int, size: int, order_by: str, descending: bool
    ) -> list[dict[str, Any]]:
        offset = (max(page, 1) - 1) * size
        if order_by in ("modified_date", "id"):
            column = "modified_ms" if order_by == "modified_date" else "id"
            direction = "DESC" if descending else "ASC"
            rows = self._db.execute(
                f"SELECT data FROM records WHERE tenant=? AND resource=? ORDER BY {column} {direction}, id {direction} "
                "LIMIT ? OFFSET ?",
                (tenant, resource, size, offset),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows]
        everything = [
            orjson.loads(r[0])
            for r in self._db.execute(
                "SELECT data FROM records WHERE tenant=? AND resource=? ORDER BY id", (tenant, resource)
            )
        ]
        everything.sort(key=lambda r: (str(r.get(order_by) or ""), r["id"]), reverse=descending)
        return everything[offset : offset + size]

    def by_codes(self, tenant: str, resource: str, codes: list[str]) -> list[dict[str, Any]]:
        """The records of these codes; a code's record deleted but kept (``deleted_rows`` listed) comes
        after the live one that took the code again."""
        found = []
        for code in codes:
            rows = self._db.execute(
                "SELECT data FROM records WHERE tenant=? AND resource=? AND code=? ORDER BY id",
                (tenant, resource, code),
            ).fetchall()
            records = [orjson.loads(r[0]) for r in rows]
            found += sorted(records, key=lambda r: bool(r.get("is_deleted")))
        return found

    def by_ids(self, tenant: str, resource: str, ids: list[int]) -> list[dict[str, Any]]:
        found = []
        for record_id in ids:
            row = self._db.execute(
                "SELECT data FROM records WHERE tenant=? AND resource=? AND id=?", (tenant, resource, record_id)
            ).fetchone()
            if row:
                found.append(orjson.loads(row[0]))
        return found

    def by_code(self, tenant: str, resource: str, code: str) -> dict[str, Any] | None:
        """The live record of this code (a deleted one kept in the lists frees its code)."""
        found = [r for r in self.by_codes(tenant, resource, [code]) if not r.get("is_deleted")]
        return found[0] if found else None

    def all(self, tenant: str, resource: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data FROM records WHERE tenant=? AND resource=? ORDER BY id", (tenant, resource)
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def tenants(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT tenant FROM records ORDER BY tenant")]

    def journal(self, tenant: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT resource, record_id, code, op, client_id, ts_ms FROM journal WHERE tenant=? ORDER BY seq", (tenant,)
        ).fetchall()
        keys = ("resource", "id", "code", "op", "client_id", "ts_ms")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- writes ------------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _lines(self, lines: Any) -> Any:
        if not isinstance(lines, list):
            return lines
        out = []
        for line in lines:
            if isinstance(line, dict) and not line.get("id"):
                line = {**line, "id": self._db.execute("INSERT INTO line_ids DEFAULT VALUES").lastrowid}
            out.append(line)
        return out

    def create(self, tenant: str, resource: Resource, item: dict[str, Any], client_id: str | None) -> int:
        now = self._now_ms()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                data = dict(item)
                if resource.lines_field and resource.lines_field in data:
                    data[resource.lines_field] = self._lines(data[resource.lines_field])
                cursor = self._db.execute(
                    "INSERT INTO records (tenant, resource, code, data, modified_ms) VALUES (?, ?, ?, ?, ?)",
                    (tenant, resource.name, data.get(resource.code_field), b"{}", now),
                )
                record_id = int(cursor.lastrowid or 0)
                data.update(id=record_id, created_date=iso_vn(now), modified_date=iso_vn(now), created_by=client_id)
                data["modified_by"] = client_id
                self._db.execute("UPDATE records SET data=? WHERE id=?", (orjson.dumps(data), record_id))
                self._journal(tenant, resource.name, record_id, data.get(resource.code_field), "create", client_id, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return record_id

    def update(self, tenant: str, resource: Resource, item: dict[str, Any], client_id: str | None) -> bool:
        """Change only the fields sent; False when there is no such record."""
        now = self._now_ms()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT data FROM records WHERE tenant=? AND resource=? AND id=?",
                    (tenant, resource.name, item["id"]),
                ).fetchone()
                data = orjson.loads(row[0]) if row is not None else None
                if data is None or data.get("is_deleted"):
                    self._db.execute("COMMIT")
                    return False
                changes = {k: v for k, v in item.items() if k not in SYSTEM_FIELDS}
                if resource.lines_field and resource.lines_field in changes:
                    changes[resource.lines_field] = self._lines(changes[resource.lines_field])
                data.update(changes)
                data.update(modified_date=iso_vn(now), modified_by=client_id)
                self._db.execute(
                    "UPDATE records SET data=?, code=?, modified_ms=? WHERE id=?",
                    (orjson.dumps(data), data.get(resource.code_field), now, item["id"]),
                )
                self._journal(
                    tenant, resource.name, int(item["id"]), data.get(resource.code_field), "update", client_id, now
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def delete(
        self, tenant: str, resource: Resource, record_id: int, client_id: str | None, *, keep: bool = False
    ) -> bool:
        """Delete a record; ``keep``: it stays listed with ``is_deleted`` true and its deletion as
        ``modified_date`` (the reference does not say which a real CRM does). False: no such record."""
        now = self._now_ms()
        with self._lock:
            row = self._db.execute(
                "SELECT code, data FROM records WHERE tenant=? AND resource=? AND id=?",
                (tenant, resource.name, record_id),
            ).fetchone()
            if row is None or orjson.loads(row[1]).get("is_deleted"):
                return False
            if keep:
                data = {
                    **orjson.loads(row[1]),
                    "is_deleted": True,
                    "modified_date": iso_vn(now),
                    "modified_by": client_id,
                }
                self._db.execute(
                    "UPDATE records SET data=?, modified_ms=? WHERE id=?", (orjson.dumps(data), now, record_id)
                )
            else:
                self._db.execute("DELETE FROM records WHERE id=?", (record_id,))
            self._journal(tenant, resource.name, record_id, row[0], "delete", client_id, now)
        return True

    def _journal(
        self, tenant: str, resource: str, record_id: int, code: Any, op: str, client_id: str | None, now: int
    ) -> None:
        self._db.execute(
            "INSERT INTO journal (tenant, resource, record_id, code, op, client_id, ts_ms) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant, resource, record_id, None if code is None else str(code), op, client_id, now),
        )
