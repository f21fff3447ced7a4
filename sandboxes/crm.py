"""A sandbox of AMIS CRM that speaks the public CRM Open API v2 (``amis-apis.md`` Part 1, checklist Part 6).

* ``POST {root}/Account`` ``{"client_id", "client_secret"}`` -> ``{"success": true, "code": 0,
  "data": "<JWT>"}``: an HS256 JWT with ``payloaddata``, ``exp`` (``token_ttl_s`` ahead, 24 h by
  default), ``iss`` ``MISA``, ``aud`` ``AMISCRM2``.
* Every data call needs ``Authorization: Bearer <token>`` **and** ``Clientid`` (the token's own
  AppID); otherwise HTTP 401 with an empty body.
* Resources ``Customers``, ``Contacts``, ``Products``, ``SaleOrders``, ``Stocks`` (``Product`` is an
  alias of ``Products``), snake_case fields, numeric ``id``, codes ``account_number``,
  ``contact_code``, ``product_code``, ``sale_order_no``, pick-lists as Vietnamese labels.
* ``GET {root}/<Resource>?page=&pageSize=&orderBy=&isDescending=``: ``page`` 0 and 1 are both the
  first page, ``pageSize`` 10 by default and at most 100, newest first by ``modified_date`` by
  default (ties in a stable order: the higher id first); ``{"success", "code": 200, "data"}`` and
  no total. ``/<Resource>/code?code=A&code=B`` and ``/<Resource>/id?id=1&id=2`` look records up.
* ``POST`` / ``PUT`` take JSON arrays and answer ``{"success", "code": 200, "results": [{"success",
  "data": <id>} | {"success": false, "validate_infos": [{"field_name", "error_message"}]}]}``; PUT
  changes only the fields sent; ``DELETE`` takes an array of ids. Deleted records leave the lists
  (the reference leaves it open; this sandbox decides so, and capture has to notice).

**Extensions** (not in the public API; the matrix needs them): ``ProductCategories``, ``Quotes``,
``InvoiceRequests``, ``PricePolicies``, the same protocol; their answers carry ``"extension"`` and
the header ``X-Sandbox-Extension``. CRM pushes nothing to partners: changes are found by polling.
"""

from __future__ import annotations

import base64
import html
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jwt
import orjson
from aiohttp import web

from sandboxes.admin import protect
from sandboxes.faults import FaultConfig, fault_middleware

VN = timezone(timedelta(hours=7))
ROOTS = ("/api/v2", "/crm/gc/api/public/api/v2")
EXTENSION_HEADER = "X-Sandbox-Extension"

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
ALIASES = {"Product": "Products"}
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


def iso_vn(ms: int) -> str:
    """``2025-07-16T10:00:00.123+07:00``: how CRM writes dates."""
    return datetime.fromtimestamp(ms / 1000, tz=VN).isoformat(timespec="milliseconds")


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
        found = []
        for code in codes:
            row = self._db.execute(
                "SELECT data FROM records WHERE tenant=? AND resource=? AND code=?", (tenant, resource, code)
            ).fetchone()
            if row:
                found.append(orjson.loads(row[0]))
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
        found = self.by_codes(tenant, resource, [code])
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
                if row is None:
                    self._db.execute("COMMIT")
                    return False
                data = orjson.loads(row[0])
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

    def delete(self, tenant: str, resource: Resource, record_id: int, client_id: str | None) -> bool:
        now = self._now_ms()
        with self._lock:
            row = self._db.execute(
                "SELECT code FROM records WHERE tenant=? AND resource=? AND id=?", (tenant, resource.name, record_id)
            ).fetchone()
            if row is None:
                return False
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


# --- the HTTP API --------------------------------------------------------------------------------

STORE = web.AppKey("crm_store", CrmStore)
CONFIG = web.AppKey("crm_config", dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def doc_error(status: int, code: str, message: str) -> web.Response:
    """The documented error body (amis-apis.md §1.5)."""
    return json_response(
        {"ErrorCode": code, "DevMsg": message, "UserMsg": message, "TraceId": uuid.uuid4().hex}, status=status
    )


def unauthorized() -> web.Response:
    return web.Response(status=401)  # empty body, as observed


def issue_token(config: dict[str, Any], client_id: str, tenant: str) -> str:
    now = int(config["clock"]())
    issued = {"tenant": tenant, "client_id": client_id, "issued": config["clock"](), "nonce": secrets.token_hex(4)}
    payload = base64.b64encode(orjson.dumps(issued))
    claims = {
        "payloaddata": payload.decode(),
        "exp": now + int(config["token_ttl_s"]),
        "iss": "MISA",
        "aud": "AMISCRM2",
    }
    return jwt.encode(claims, config["key"], algorithm="HS256")


async def login(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return doc_error(400, "InvalidParam", "the body is not JSON")
    if not isinstance(body, dict):
        return doc_error(400, "InvalidParam", "the body must be {client_id, client_secret}")
    client_id = str(body.get("client_id") or "")
    tenant = config["credentials"].get(client_id)
    if tenant is None or body.get("client_secret") != config["credentials"].get(f"{client_id}:secret"):
        return doc_error(401, "InvalidAppID", "unknown client_id or wrong client_secret")
    return json_response({"success": True, "code": 0, "data": issue_token(config, client_id, tenant)})


def caller(request: web.Request) -> tuple[str, str] | None:
    """(tenant, client id) of a data call, or None: a valid, unexpired token and the matching Clientid."""
    config = request.app[CONFIG]
    header = request.headers.get("Authorization", "")
    client_id = request.headers.get("Clientid")
    if not header.startswith("Bearer ") or not client_id:
        return None
    try:
        claims = jwt.decode(
            header.removeprefix("Bearer ").strip(),
            config["key"],
            algorithms=["HS256"],
            audience="AMISCRM2",
            issuer="MISA",
            options={"verify_exp": False},
        )
        payload = orjson.loads(base64.b64decode(claims["payloaddata"]))
    except (jwt.PyJWTError, KeyError, ValueError, orjson.JSONDecodeError):
        return None
    if claims.get("exp", 0) <= config["clock"]():
        return None  # expired
    if payload.get("client_id") != client_id or payload.get("issued", 0) < config["revoked_before"]:
        return None
    return payload["tenant"], client_id


def resource_of(request: web.Request) -> Resource | None:
    name = request.match_info["resource"]
    return RESOURCES.get(ALIASES.get(name, name))


def labelled(resource: Resource, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    if resource.extension:
        return {**body, "extension": resource.extension}, {EXTENSION_HEADER: resource.extension}
    known = EXTENSION_FIELDS.get(resource.name, {})
    data = body.get("data")
    records: list[Any] = data if isinstance(data, list) else []
    used = {name: known[name] for record in records if isinstance(record, dict) for name in record if name in known}
    if used:
        return {**body, "extension_fields": used}, {EXTENSION_HEADER: "; ".join(f"{k}: {v}" for k, v in used.items())}
    return body, {}


def authenticated(handler: Callable[[web.Request, str, str, Resource], Awaitable[web.Response]]):
    async def wrapped(request: web.Request) -> web.Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        resource = resource_of(request)
        if resource is None:
            return doc_error(404, "InvalidParam", f"no resource {request.match_info['resource']!r}")
        return await handler(request, who[0], who[1], resource)

    return wrapped


def _bool(text: str | None, default: bool) -> bool:
    return default if text is None else text.strip().lower() in ("true", "1")


@authenticated
async def list_records(request: web.Request, tenant: str, _client: str, resource: Resource) -> web.Response:
    try:
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("pageSize", "10"))
    except ValueError:
        return doc_error(400, "InvalidParam", "page and pageSize must be integers")
    if not 1 <= size <= 100:
        return doc_error(400, "InvalidParam", f"pageSize must be between 1 and 100, not {size}")
    order_by = request.query.get("orderBy", "modified_date")
    descending = _bool(request.query.get("isDescending"), True)
    data = request.app[STORE].page(
        tenant, resource.name, page=page, size=size, order_by=order_by, descending=descending
    )
    body, headers = labelled(resource, {"success": True, "code": 200, "data": data})
    return json_response(body, headers=headers)


@authenticated
async def lookup(request: web.Request, tenant: str, _client: str, resource: Resource) -> web.Response:
    store = request.app[STORE]
    if request.match_info["field"].lower() == "code":
        data = store.by_codes(tenant, resource.name, request.query.getall("code", []))
    elif request.match_info["field"].lower() == "id":
        raw = request.query.getall("id", []) or request.query.getall("ids", [])
        ids = [int(i) for part in raw for i in part.split(",") if i.strip().isdigit()]
        data = store.by_ids(tenant, resource.name, ids)
    else:
        return doc_error(404, "InvalidParam", f"no lookup by {request.match_info['field']!r}")
    body, headers = labelled(resource, {"success": True, "code": 200, "data": data})
    return json_response(body, headers=headers)


def _validate(resource: Resource, item: dict[str, Any], creating: bool, store: CrmStore, tenant: str) -> list[dict]:
    infos: list[dict[str, str]] = []
    if creating:
        for name in SYSTEM_FIELDS:
            if name in item and item[name] not in (None, 0, ""):
                infos.append({"field_name": name, "error_message": f"{name} must not be sent when creating"})
        for name in resource.required:
            if item.get(name) in (None, ""):
                infos.append({"field_name": name, "error_message": "Không được để trống"})
    for name, labels in resource.labels.items():
        if name in item and item[name] is not None and item[name] not in labels:
            infos.append(
                {
                    "field_name": name,
                    "error_message": f"Giá trị {item[name]!r} không hợp lệ ({', '.join(sorted(labels))})",
                }
            )
    code = item.get(resource.code_field)
    if code not in (None, ""):
        existing = store.by_code(tenant, resource.name, str(code))
        if existing is not None and (creating or str(existing["id"]) != str(item.get("id"))):
            infos.append({"field_name": resource.code_field, "error_message": f"Mã {code} đã tồn tại"})
    if resource.lines_field and resource.lines_field in item:
        lines = item[resource.lines_field]
        if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
            infos.append({"field_name": resource.lines_field, "error_message": "must be an array of lines"})
    return infos


async def _items(request: web.Request) -> list[Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return doc_error(400, "InvalidParam", "the body is not JSON")
    if not isinstance(body, list):
        return doc_error(400, "InvalidParam", "the body must be a JSON array")
    return body


def _write_answer(resource: Resource, results: list[dict[str, Any]]) -> web.Response:
    body, headers = labelled(resource, {"success": all(r["success"] for r in results), "code": 200, "results": results})
    return json_response(body, headers=headers)


def _writable(request: web.Request, resource: Resource) -> web.Response | None:
    if resource.name == "Products" and not request.app[CONFIG]["product_writes"]:
        return doc_error(403, "Forbidden", "this CRM only reads Products through the API")
    return None


@authenticated
async def create(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    refused = _writable(request, resource)
    if refused:
        return refused
    items = await _items(request)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not isinstance(item, dict):
            results.append(
                {
                    "success": False,
                    "data": None,
                    "validate_infos": [{"field_name": "", "error_message": "not an object"}],
                }
            )
            continue
        infos = _validate(resource, item, True, store, tenant)
        if infos:
            results.append({"success": False, "data": None, "validate_infos": infos})
            continue
        clean = {k: v for k, v in item.items() if k not in SYSTEM_FIELDS}
        results.append({"success": True, "data": store.create(tenant, resource, clean, client)})
    return _write_answer(resource, results)


@authenticated
async def update(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    refused = _writable(request, resource)
    if refused:
        return refused
    items = await _items(request)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not isinstance(item, dict) or not str(item.get("id") or "").isdigit():
            results.append(
                {"success": False, "data": None, "validate_infos": [{"field_name": "id", "error_message": "Thiếu id"}]}
            )
            continue
        item = {**item, "id": int(item["id"])}
        infos = _validate(resource, item, False, store, tenant)
        if not infos and not store.update(tenant, resource, item, client):
            infos = [{"field_name": "id", "error_message": f"Không tìm thấy bản ghi {item['id']}"}]
        results.append({"success": not infos, "data": item["id"], **({"validate_infos": infos} if infos else {})})
    return _write_answer(resource, results)


@authenticated
async def delete(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    refused = _writable(request, resource)
    if refused:
        return refused
    items = await _items(request)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not str(item).isdigit():
            results.append(
                {"success": False, "data": item, "validate_infos": [{"field_name": "id", "error_message": "Thiếu id"}]}
            )
            continue
        if store.delete(tenant, resource, int(item), client):
            results.append({"success": True, "data": int(item)})
        else:
            results.append(
                {
                    "success": False,
                    "data": int(item),
                    "validate_infos": [{"field_name": "id", "error_message": "Không tìm thấy bản ghi"}],
                }
            )
    return _write_answer(resource, results)


async def stocks(request: web.Request) -> web.Response:
    if caller(request) is None:
        return unauthorized()
    return json_response(
        {
            "success": True,
            "code": 200,
            "data": [{"stock_code": "KHO01", "stock_name": "Kho chính", "inactive": False, "async_id": "1"}],
        }
    )


async def revoke_tokens(request: web.Request) -> web.Response:
    """Sandbox control (not CRM's): every token issued so far answers 401 from now on, as an expired one would."""
    config = request.app[CONFIG]
    config["revoked_before"] = config["clock"]() + 0.001
    return json_response({"revoked": True, "sandbox_control": "not part of AMIS CRM"})


async def index(request: web.Request) -> web.Response:
    store = request.app[STORE]
    parts = [
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>crm sandbox</title>"
        "<h1>AMIS CRM sandbox</h1><p>The public CRM Open API v2 under <code>/api/v2</code>. Resources marked "
        "<b>extension</b> are not part of it: only this sandbox has them.</p>"
    ]
    for tenant in store.tenants():
        parts.append(f"<h2>{html.escape(tenant)}</h2>")
        for resource in RESOURCES.values():
            records = store.all(tenant, resource.name)
            if not records:
                continue
            label = f" <small>(extension: {html.escape(resource.extension)})</small>" if resource.extension else ""
            if resource.name in EXTENSION_FIELDS:
                label += (
                    " <small>(extension fields: "
                    + html.escape(", ".join(EXTENSION_FIELDS[resource.name]))
                    + ")</small>"
                )
            parts.append(
                f"<h3>{resource.name} ({len(records)}){label}</h3><table border=1 cellpadding=3>"
                f"<tr><th>id</th><th>{resource.code_field}</th><th>modified_date</th><th>record</th></tr>"
            )
            for record in records:
                rest = {k: v for k, v in record.items() if k not in ("id", resource.code_field, *SYSTEM_FIELDS)}
                parts.append(
                    f"<tr><td>{record['id']}</td><td>{html.escape(str(record.get(resource.code_field, '')))}</td>"
                    f"<td>{html.escape(str(record.get('modified_date')))}</td>"
                    f"<td><code>{html.escape(orjson.dumps(rest).decode())}</code></td></tr>"
                )
            parts.append("</table>")
    return web.Response(text="".join(parts), content_type="text/html")


def create_crm_sandbox(
    store: CrmStore,
    *,
    credentials: dict[str, str],
    faults: FaultConfig | None = None,
    token_ttl_s: float = 24 * 3600,
    product_writes: bool = True,
    admin_token: str | None = None,
) -> web.Application:
    """``credentials``: ``{client_id: tenant, "<client_id>:secret": secret}``. ``/sandbox/...`` needs
    ``admin_token`` (``sandboxes/admin.py``; a random one when None, read back as ``app[ADMIN_TOKEN]``)."""
    app = web.Application(
        middlewares=[fault_middleware(faults or FaultConfig(), applies=lambda path: path.startswith(ROOTS))]
    )
    app[STORE] = store
    app[CONFIG] = {
        "credentials": dict(credentials),
        "key": secrets.token_hex(32),
        "token_ttl_s": token_ttl_s,
        "clock": store.clock,
        "revoked_before": 0.0,
        "product_writes": product_writes,
    }
    protect(app, admin_token)
    app.router.add_get("/", index)
    app.router.add_post("/sandbox/revoke-tokens", revoke_tokens)
    for root in ROOTS:
        app.router.add_post(root + "/Account", login)
        app.router.add_get(root + "/Stocks", stocks)
        app.router.add_get(root + "/{resource}", list_records)
        app.router.add_get(root + "/{resource}/{field}", lookup)
        app.router.add_post(root + "/{resource}", create)
        app.router.add_put(root + "/{resource}", update)
        app.router.add_delete(root + "/{resource}", delete)
    return app
