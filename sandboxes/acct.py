"""A sandbox of AMIS Kế toán that speaks the public ACT Open API (``amis-apis.md`` Part 2, checklist Part 6).

* ``POST /api/oauth/actopen/connect`` ``{"app_id", "access_code", "org_company_code"}`` -> the
  PascalCase envelope whose ``Data`` is a JSON string ``{"access_token", "expired_time" (12 h
  ahead, +07:00), "tenant_code", "app_name"}``. Data calls carry ``X-MISA-AccessToken``; an
  expired token is answered HTTP 200 ``Success: false, ErrorCode: "ExpiredToken"``.
* ``/apir/sync/actopen/<name>`` (``/api/sync/actopen/`` too): ``get_dictionary`` and
  ``get_dictionary_delete`` (``data_type``, ``skip``, ``take`` ≤ 100, ``last_sync_time``: records
  changed at or after it, oldest first), ``save_dictionary`` (≤ 200 items, answered at once, one
  result per item), ``save`` (≤ 100 vouchers of ≤ 500 lines; answered "queued", the result comes
  by callback ``data_type`` 1), ``delete`` (callback ``data_type`` 2), ``request_data``,
  ``get_call_back_detail_error`` (callbacks that could not be delivered).
* A ``save`` is a *proposal* keyed by ``org_refid``: saving it again updates it until an accountant
  generates the voucher (``POST /sandbox/ui/<tenant>/proposals/<org_refid>/generate``, or the page's
  button), after which saving or deleting it fails with ``IsCreatedVoucher`` and a ``data_type`` 18
  callback reports the voucher. Vouchers the accountant enters, edits or deletes
  (``/sandbox/ui/<tenant>/vouchers``) are reported as ``data_type`` 22 with ``custom_param.ModelState``.
* Callbacks are POSTed to ``callback_url`` as ``{"success", "error_code", "error_message",
  "signature", "data_type", "data": "<JSON string>", "org_company_code", "app_id"}``, ``signature``
  = HMAC-SHA256 of ``data`` keyed with the ``app_id``. A callback the partner does not acknowledge
  (HTTP 200 with ``Success: true``) after ``callback_attempts`` tries is kept for
  ``get_call_back_detail_error``.

``/sandbox/ui/...`` is what an accountant does in AMIS Kế toán's screens, not part of the API; like the
test control ``/sandbox/expire-tokens`` it needs the sandbox's admin token (``sandboxes/admin.py``).
**Extensions** (labelled ``X-Sandbox-Extension`` and ``CustomData.Extension``): price policies and
item groups as dictionaries (data_type 901, 902), contracts and quotes as vouchers (voucher_type
9001, 9002), issuance-proposal statuses (``issue_status``), ``x_get_vouchers`` (reading vouchers back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import logging
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from sandboxes.admin import ADMIN_TOKEN, page_link, page_token, protect
from sandboxes.faults import FaultConfig, fault_middleware

log = logging.getLogger(__name__)

VN = timezone(timedelta(hours=7))
DATA_ROOTS = ("/apir/sync/actopen", "/api/sync/actopen")
EXTENSION_HEADER = "X-Sandbox-Extension"

# save_dictionary's dictionary_type -> (get_dictionary's data_type, id field, code field)
DICTIONARY_TYPES: dict[int, tuple[int, str, str]] = {
    1: (1, "account_object_id", "account_object_code"),
    3: (2, "inventory_item_id", "inventory_item_code"),
    5: (3, "stock_id", "stock_code"),
    6: (4, "unit_id", "unit_name"),
    4: (902, "inventory_item_category_id", "inventory_item_category_code"),
    901: (901, "price_policy_id", "price_policy_code"),
}
READ_TYPES = {read: (write, id_field, code_field) for write, (read, id_field, code_field) in DICTIONARY_TYPES.items()}
EXTENSION_DATA_TYPES = {
    901: "not part of the ACT Open API: price policies (sandbox data_type 901)",
    902: "not part of the ACT Open API: item groups cannot be read back (sandbox data_type 902)",
}
VOUCHER_TYPES = {1, 3, 4, 5, 11, 13, 15, 18, 20, 21, 9001, 9002}
EXTENSION_VOUCHER_TYPES = {
    9001: "not part of the ACT Open API: sales contracts (sandbox voucher_type 9001)",
    9002: "not part of the ACT Open API: quotes (sandbox voucher_type 9002)",
}
CREATED_VOUCHER = "Đã sinh chứng từ kế toán, không thể cập nhật được."

SCHEMA = """
CREATE TABLE IF NOT EXISTS dictionary (
    tenant TEXT NOT NULL, data_type INTEGER NOT NULL, id TEXT NOT NULL, code TEXT, data BLOB NOT NULL,
    modified_ms INTEGER NOT NULL, deleted_ms INTEGER,
    PRIMARY KEY (tenant, data_type, id)
);
CREATE INDEX IF NOT EXISTS dictionary_by_time ON dictionary (tenant, data_type, modified_ms);
CREATE TABLE IF NOT EXISTS proposals (
    tenant TEXT NOT NULL, org_refid TEXT NOT NULL, voucher_type INTEGER NOT NULL, data BLOB NOT NULL,
    state TEXT NOT NULL, refid TEXT, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, org_refid)
);
CREATE TABLE IF NOT EXISTS vouchers (
    tenant TEXT NOT NULL, refid TEXT NOT NULL, voucher_type INTEGER NOT NULL, data BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, modified_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, refid)
);
CREATE TABLE IF NOT EXISTS callbacks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, data_type INTEGER NOT NULL, body BLOB NOT NULL,
    created_ms INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, kind TEXT NOT NULL, key TEXT, code TEXT,
    op TEXT NOT NULL, via TEXT NOT NULL, ts_ms INTEGER NOT NULL
);
"""


def callback_extension(items: list[dict[str, Any]]) -> str | None:
    """Why a callback carries something ACT does not send (an extension voucher type, issuance statuses)."""
    reasons = {
        EXTENSION_VOUCHER_TYPES[i["voucher_type"]] for i in items if i.get("voucher_type") in EXTENSION_VOUCHER_TYPES
    }
    if any("issue_status" in i for i in items):
        reasons.add("not part of the ACT Open API: issuance-proposal statuses (issue_status) are not reported")
    return "; ".join(sorted(reasons)) or None


def iso_vn(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=VN).isoformat(timespec="milliseconds")


def parse_local(text: str) -> float:
    """``YYYY-MM-DD HH:mm:ss`` (Vietnam time) or ISO with an offset, as epoch seconds."""
    moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=VN)).timestamp()


def sign(data: str, key: str) -> str:
    return hmac.new(key.encode(), data.encode(), hashlib.sha256).hexdigest()


class ActStore:
    """The accounting sandbox's data (SQLite), in ACT's field names: dictionaries, proposals,
    vouchers, the callbacks it owes, and a journal of what happened."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def journal_entry(self, tenant: str, kind: str, key: str | None, code: Any, op: str, via: str) -> None:
        self._db.execute(
            "INSERT INTO journal (tenant, kind, key, code, op, via, ts_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (tenant, kind, key, None if code is None else str(code), op, via, self.now_ms()),
        )

    def journal(self, tenant: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT kind, key, code, op, via, ts_ms FROM journal WHERE tenant=? ORDER BY seq", (tenant,)
        ).fetchall()
        return [dict(zip(("kind", "key", "code", "op", "via", "ts_ms"), row, strict=True)) for row in rows]

    def tenants(self) -> list[str]:
        rows = self._db.execute(
            "SELECT tenant FROM dictionary UNION SELECT tenant FROM proposals UNION SELECT tenant FROM vouchers"
        ).fetchall()
        return sorted(r[0] for r in rows)

    # --- dictionaries ------------------------------------------------------------------------------

    def dictionary_page(
        self, tenant: str, data_type: int, *, skip: int, take: int, since_ms: int | None, deleted: bool
    ) -> list[dict[str, Any]]:
        column = "deleted_ms" if deleted else "modified_ms"
        where = "deleted_ms IS NOT NULL" if deleted else "deleted_ms IS NULL"
        rows = self._db.execute(
            f"SELECT data, id, code, deleted_ms FROM dictionary WHERE tenant=? AND data_type=? AND {where} "
            f"AND {column} >= ? ORDER BY {column}, id LIMIT ? OFFSET ?",
            (tenant, data_type, since_ms or 0, take, skip),
        ).fetchall()
        if not deleted:
            return [orjson.loads(r[0]) for r in rows]
        _write, id_field, code_field = READ_TYPES[data_type]
        return [{"data_type": data_type, id_field: r[1], code_field: r[2], "deleted_date": iso_vn(r[3])} for r in rows]

    def dictionary_record(self, tenant: str, data_type: int, *, id: str | None = None, code: str | None = None):
        if id:
            row = self._db.execute(
                "SELECT data FROM dictionary WHERE tenant=? AND data_type=? AND id=? AND deleted_ms IS NULL",
                (tenant, data_type, id),
            ).fetchone()
            if row:
                return orjson.loads(row[0])
        if code:
            row = self._db.execute(
                "SELECT data FROM dictionary WHERE tenant=? AND data_type=? AND code=? AND deleted_ms IS NULL",
                (tenant, data_type, code),
            ).fetchone()
            if row:
                return orjson.loads(row[0])
        return None

    def save_dictionary_item(self, tenant: str, item: dict[str, Any], via: str) -> dict[str, Any]:
        """Insert / update (state 1: by id, else by code), update only (state 2), delete (state 3)."""
        try:
            dictionary_type = int(item.get("dictionary_type"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return {"success": False, "error_code": "InvalidParam", "error_message": "dictionary_type is required"}
        if dictionary_type not in DICTIONARY_TYPES:
            return {
                "success": False,
                "error_code": "InvalidParam",
                "error_message": f"dictionary_type {dictionary_type}?",
            }
        data_type, id_field, code_field = DICTIONARY_TYPES[dictionary_type]
        state = int(item.get("state") or 1)
        code = item.get(code_field)
        answer: dict[str, Any] = {"dictionary_type": dictionary_type, id_field: item.get(id_field), code_field: code}
        with self._lock:
            existing = self.dictionary_record(tenant, data_type, id=item.get(id_field), code=code)
            if state == 3:
                if existing is None:
                    return {**answer, "success": False, "error_code": "InvalidParam", "error_message": "không tồn tại"}
                self._db.execute(
                    "UPDATE dictionary SET deleted_ms=? WHERE tenant=? AND data_type=? AND id=?",
                    (self.now_ms(), tenant, data_type, existing[id_field]),
                )
                self.journal_entry(tenant, f"dictionary:{dictionary_type}", existing[id_field], code, "delete", via)
                return {**answer, id_field: existing[id_field], "success": True}
            if existing is None and state == 2:
                return {
                    **answer,
                    "success": False,
                    "error_code": "InvalidParam",
                    "error_message": f"{code_field} {code or item.get(id_field)} không tồn tại để sửa",
                }
            if existing is None and not code:
                return {
                    **answer,
                    "success": False,
                    "error_code": "InvalidParam",
                    "error_message": f"{code_field} trống",
                }
            if existing is not None and code and existing.get(code_field) != code:
                clash = self.dictionary_record(tenant, data_type, code=code)
                if clash is not None and clash[id_field] != existing[id_field]:
                    return {
                        **answer,
                        "success": False,
                        "error_code": "InvalidParam",
                        "error_message": f"Mã {code} đã tồn tại",
                    }
            now = self.now_ms()
            fields = {
                k: v for k, v in item.items() if k not in ("state", "dictionary_type", "created_date", "modified_date")
            }
            if existing is None:
                record_id = str(item.get(id_field) or uuid.uuid4())
                data = {**fields, id_field: record_id, "created_date": iso_vn(now), "modified_date": iso_vn(now)}
                op = "create"
            else:
                record_id = existing[id_field]
                data = {**existing, **fields, id_field: record_id, "modified_date": iso_vn(now)}
                op = "update"
            self._db.execute(
                "INSERT OR REPLACE INTO dictionary (tenant, data_type, id, code, data, modified_ms, deleted_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (tenant, data_type, record_id, data.get(code_field), orjson.dumps(data), now),
            )
            self.journal_entry(tenant, f"dictionary:{dictionary_type}", record_id, data.get(code_field), op, via)
        return {**answer, id_field: record_id, code_field: data.get(code_field), "success": True}

    # --- proposals and vouchers ----------------------------------------------------------------------

    def proposal(self, tenant: str, org_refid: str) -> tuple[dict[str, Any], str, str | None] | None:
        row = self._db.execute(
            "SELECT data, state, refid FROM proposals WHERE tenant=? AND org_refid=?", (tenant, org_refid)
        ).fetchone()
        return (orjson.loads(row[0]), row[1], row[2]) if row else None

    def proposals(self, tenant: str) -> list[tuple[dict[str, Any], str]]:
        rows = self._db.execute(
            "SELECT data, state FROM proposals WHERE tenant=? ORDER BY modified_ms", (tenant,)
        ).fetchall()
        return [(orjson.loads(r[0]), r[1]) for r in rows]

    def voucher(self, tenant: str, refid: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM vouchers WHERE tenant=? AND refid=? AND deleted=0", (tenant, refid)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def vouchers(self, tenant: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data FROM vouchers WHERE tenant=? AND deleted=0 ORDER BY modified_ms", (tenant,)
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows]

    def save_proposal(self, tenant: str, voucher: dict[str, Any]) -> tuple[str | None, str | None]:
        """(error code, message) or (None, None) when the proposal was saved."""
        org_refid = str(voucher.get("org_refid") or "")
        if not org_refid:
            return "InvalidParam", "org_refid là bắt buộc"
        try:
            voucher_type = int(voucher.get("voucher_type"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "InvalidParam", "voucher_type là bắt buộc"
        if voucher_type not in VOUCHER_TYPES:
            return "InvalidParam", f"voucher_type {voucher_type} không hợp lệ"
        customer = voucher.get("account_object_code")
        if customer and self.dictionary_record(tenant, 1, code=str(customer)) is None:
            return "InvalidParam", f"Không tìm thấy đối tượng {customer}"
        for line in voucher.get("detail") or []:
            item = line.get("inventory_item_code") if isinstance(line, dict) else None
            if item and self.dictionary_record(tenant, 2, code=str(item)) is None:
                return "InvalidParam", f"Không tìm thấy vật tư hàng hóa {item}"
        with self._lock:
            found = self.proposal(tenant, org_refid)
            if found is not None and found[1] == "generated":
                return "IsCreatedVoucher", CREATED_VOUCHER
            self._db.execute(
                "INSERT OR REPLACE INTO proposals (tenant, org_refid, voucher_type, data, state, refid, modified_ms) "
                "VALUES (?, ?, ?, ?, 'pending', NULL, ?)",
                (tenant, org_refid, voucher_type, orjson.dumps(voucher), self.now_ms()),
            )
            self.journal_entry(
                tenant,
                f"proposal:{voucher_type}",
                org_refid,
                voucher.get("org_refno"),
                "update" if found else "create",
                "api",
            )
        return None, None

    def delete_proposal(self, tenant: str, org_refid: str) -> tuple[str | None, str | None]:
        with self._lock:
            found = self.proposal(tenant, org_refid)
            if found is None:
                return "VoucherNotFound", f"Không tìm thấy chứng từ {org_refid}"
            if found[1] == "generated":
                return "IsCreatedVoucher", CREATED_VOUCHER
            self._db.execute("DELETE FROM proposals WHERE tenant=? AND org_refid=?", (tenant, org_refid))
            self.journal_entry(tenant, "proposal", org_refid, found[0].get("org_refno"), "delete", "api")
        return None, None

    def generate(self, tenant: str, org_refid: str) -> dict[str, Any] | None:
        """The accountant turns a pending proposal into a voucher; returns the voucher."""
        with self._lock:
            found = self.proposal(tenant, org_refid)
            if found is None or found[1] != "pending":
                return None
            proposal = found[0]
            refid = org_refid if not proposal.get("is_get_new_id") else str(uuid.uuid4())
            voucher = {
                **proposal,
                "refid": refid,
                "refno": proposal.get("org_refno") or proposal.get("refno"),
                "created_date": iso_vn(self.now_ms()),
                "modified_date": iso_vn(self.now_ms()),
            }
            self._db.execute(
                "UPDATE proposals SET state='generated', refid=?, modified_ms=? WHERE tenant=? AND org_refid=?",
                (refid, self.now_ms(), tenant, org_refid),
            )
            self._put_voucher(tenant, voucher)
            self.journal_entry(
                tenant, f"voucher:{voucher['voucher_type']}", refid, voucher.get("refno"), "generate", "ui"
            )
        return voucher

    def _put_voucher(self, tenant: str, voucher: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO vouchers (tenant, refid, voucher_type, data, deleted, modified_ms) "
            "VALUES (?, ?, ?, ?, 0, ?)",
            (tenant, voucher["refid"], int(voucher["voucher_type"]), orjson.dumps(voucher), self.now_ms()),
        )

    def enter_voucher(self, tenant: str, voucher: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """The accountant adds (ModelState 1) or edits (2) a voucher; returns it and the state."""
        with self._lock:
            refid = str(voucher.get("refid") or uuid.uuid4())
            existing = self.voucher(tenant, refid)
            now = iso_vn(self.now_ms())
            data = {**(existing or {"created_date": now}), **voucher, "refid": refid, "modified_date": now}
            self._put_voucher(tenant, data)
            state = 2 if existing else 1
            self.journal_entry(
                tenant,
                f"voucher:{data['voucher_type']}",
                refid,
                data.get("refno"),
                "update" if existing else "create",
                "ui",
            )
        return data, state

    def remove_voucher(self, tenant: str, refid: str) -> dict[str, Any] | None:
        with self._lock:
            existing = self.voucher(tenant, refid)
            if existing is None:
                return None
            self._db.execute(
                "UPDATE vouchers SET deleted=1, modified_ms=? WHERE tenant=? AND refid=?",
                (self.now_ms(), tenant, refid),
            )
            self.journal_entry(
                tenant, f"voucher:{existing['voucher_type']}", refid, existing.get("refno"), "delete", "ui"
            )
        return existing

    # --- callbacks owed ------------------------------------------------------------------------------

    def queue_callback(self, tenant: str, data_type: int, body: dict[str, Any]) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO callbacks (tenant, data_type, body, created_ms) VALUES (?, ?, ?, ?)",
                (tenant, data_type, orjson.dumps(body), self.now_ms()),
            )
            return int(cursor.lastrowid or 0)

    def queued_callbacks(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._db.execute("SELECT seq, tenant, body FROM callbacks WHERE state='queued' ORDER BY seq").fetchall()
        return [(r[0], r[1], orjson.loads(r[2])) for r in rows]

    def callback_done(self, seq: int, delivered: bool, attempts: int, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE callbacks SET state=?, attempts=?, last_error=? WHERE seq=?",
                ("delivered" if delivered else "undelivered", attempts, error, seq),
            )

    def undelivered(self, tenant: str, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT body, last_error, created_ms FROM callbacks WHERE tenant=? AND state='undelivered' "
            "AND created_ms >= ? AND created_ms <= ? ORDER BY seq",
            (tenant, from_ms, to_ms),
        ).fetchall()
        return [{**orjson.loads(r[0]), "error_call_back_message": r[1], "call_back_date": iso_vn(r[2])} for r in rows]

    def callbacks(self, tenant: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data_type, state, attempts, last_error FROM callbacks WHERE tenant=? ORDER BY seq", (tenant,)
        ).fetchall()
        return [dict(zip(("data_type", "state", "attempts", "last_error"), r, strict=True)) for r in rows]


# --- the HTTP API --------------------------------------------------------------------------------

STORE = web.AppKey("act_store", ActStore)
CONFIG = web.AppKey("act_config", dict)


def envelope(
    data: Any = None,
    *,
    success: bool = True,
    code: str | None = None,
    message: str | None = None,
    custom: dict[str, Any] | None = None,
    extension: str | None = None,
) -> web.Response:
    if extension:
        custom = {**(custom or {}), "Extension": extension}
    body = {
        "Success": success,
        "ErrorCode": code,
        "ErrorMessage": message,
        "Data": data if data is None or isinstance(data, str) else orjson.dumps(data).decode(),
        "CustomData": orjson.dumps(custom).decode() if custom is not None else None,
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={EXTENSION_HEADER: extension} if extension else None,
    )


def failure(code: str, message: str) -> web.Response:
    return envelope(success=False, code=code, message=message)


async def read_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return failure("InvalidParam", "body is not JSON")
    return body if isinstance(body, dict) else failure("InvalidParam", "body must be a JSON object")


async def connect(request: web.Request) -> web.Response:
    config, store = request.app[CONFIG], request.app[STORE]
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    app_id, access_code = str(body.get("app_id") or ""), str(body.get("access_code") or "")
    if app_id != config["app_id"]:
        return failure("InvalidAppID", f"app_id {app_id!r} không hợp lệ")
    tenant = config["credentials"].get(f"{app_id}:{access_code}")
    if tenant is None:
        return failure("AppIDDisconnect", "Mã kết nối không hợp lệ hoặc đã bị ngắt kết nối")
    token = secrets.token_urlsafe(32)
    expires = store.clock() + config["token_ttl_s"]
    config["tokens"][token] = {"tenant": tenant, "expires": expires}
    config["company_codes"][tenant] = str(body.get("org_company_code") or "")
    data = {
        "access_token": token,
        "expired_time": iso_vn(int(expires * 1000)),
        "tenant_code": tenant,
        "app_name": f"Công ty {tenant}",
    }
    return envelope(data)


def data_call(handler: Callable[[web.Request, str, dict[str, Any]], Any]):
    async def wrapped(request: web.Request) -> web.Response:
        config, store = request.app[CONFIG], request.app[STORE]
        held = config["tokens"].get(request.headers.get("X-MISA-AccessToken", ""))
        if held is None:
            return failure("InvalidToken", "Token không hợp lệ")
        if held["expires"] <= store.clock():
            return failure("ExpiredToken", "Token đã hết hạn")
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        if body.get("app_id") not in (None, config["app_id"]):
            return failure("InvalidAppID", "app_id không khớp")
        return await handler(request, held["tenant"], body)

    return wrapped


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    return default if value is None else int(value)


async def _list(request: web.Request, tenant: str, body: dict[str, Any], *, deleted: bool) -> web.Response:
    try:
        data_type = _int(body, "data_type", 0)
        skip, take = _int(body, "skip", 0), _int(body, "take", 100)
    except (TypeError, ValueError):
        return failure("InvalidParam", "data_type, skip and take are numbers")
    if data_type not in READ_TYPES:
        return failure("InvalidParam", f"data_type {data_type} không hỗ trợ")
    if not 1 <= take <= 100 or skip < 0:
        return failure("InvalidParam", f"take must be 1..100 and skip ≥ 0 (take {take}, skip {skip})")
    since = body.get("last_sync_time")
    try:
        since_ms = int(parse_local(str(since)) * 1000) if since else None
    except ValueError:
        return failure("InvalidParam", f"last_sync_time {since!r} is not YYYY-MM-DD HH:mm:ss")
    store = request.app[STORE]
    records = store.dictionary_page(tenant, data_type, skip=skip, take=take, since_ms=since_ms, deleted=deleted)
    custom = {
        "LastSyncTime": datetime.fromtimestamp(store.clock(), tz=VN).strftime("%Y-%m-%d %H:%M:%S"),
        "Message": None,
    }
    return envelope(records, custom=custom, extension=EXTENSION_DATA_TYPES.get(data_type))


@data_call
async def get_dictionary(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return await _list(request, tenant, body, deleted=False)


@data_call
async def get_dictionary_delete(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return await _list(request, tenant, body, deleted=True)


@data_call
async def save_dictionary(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    items = body.get("dictionary")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return failure("InvalidParam", "dictionary must be an array of objects")
    if len(items) > 200:
        return failure("InvalidParam", f"at most 200 dictionary items per call, not {len(items)}")
    store = request.app[STORE]
    results = [store.save_dictionary_item(tenant, item, "api") for item in items]
    extension = next((EXTENSION_DATA_TYPES[901] for i in items if i.get("dictionary_type") == 901), None)
    return envelope(results, extension=extension)


def _vouchers(body: dict[str, Any]) -> list[dict[str, Any]] | web.Response:
    vouchers = body.get("voucher")
    if not isinstance(vouchers, list) or not all(isinstance(v, dict) for v in vouchers):
        return failure("InvalidParam", "voucher must be an array of objects")
    if len(vouchers) > 100:
        return failure("InvalidParam", f"at most 100 vouchers per call, not {len(vouchers)}")
    return vouchers


@data_call
async def save(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    vouchers = _vouchers(body)
    if isinstance(vouchers, web.Response):
        return vouchers
    for voucher in vouchers:
        if len(voucher.get("detail") or []) > 500:
            return failure("InvalidParam", f"voucher {voucher.get('org_refid')}: at most 500 detail lines")
    store, sandbox = request.app[STORE], request.app[SANDBOX]
    for item in body.get("dictionary") or []:
        if isinstance(item, dict):
            store.save_dictionary_item(tenant, item, "api")
    sandbox.later(sandbox.process_save(tenant, vouchers))
    extension = next(
        (
            EXTENSION_VOUCHER_TYPES[v["voucher_type"]]
            for v in vouchers
            if v.get("voucher_type") in EXTENSION_VOUCHER_TYPES
        ),
        None,
    )
    return envelope(None, extension=extension)


@data_call
async def delete(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    vouchers = _vouchers(body)
    if isinstance(vouchers, web.Response):
        return vouchers
    sandbox = request.app[SANDBOX]
    sandbox.later(sandbox.process_delete(tenant, vouchers))
    return envelope(None)


@data_call
async def request_data(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    ids = body.get("list_org_refid")
    if not isinstance(ids, list) or len(ids) > 500:
        return failure("InvalidParam", "list_org_refid is an array of at most 500 ids")
    request_id = str(uuid.uuid4())
    sandbox = request.app[SANDBOX]
    sandbox.later(sandbox.process_request_data(tenant, request_id, [str(i) for i in ids]))
    return envelope({"request_id": request_id})


@data_call
async def get_call_back_detail_error(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    try:
        from_ms = int(parse_local(str(body["from_date"])) * 1000)
        to_ms = int(parse_local(str(body["to_date"])) * 1000) + 999
        skip, take = _int(body, "skip", 0), _int(body, "take", 100)
    except (KeyError, ValueError, TypeError):
        return failure("InvalidParam", "from_date and to_date (YYYY-MM-DD HH:mm:ss), skip and take are required")
    if not 1 <= take <= 100:
        return failure("InvalidParam", "take must be 1..100")
    items = request.app[STORE].undelivered(tenant, from_ms, to_ms)[skip : skip + take]
    return envelope(items)


@data_call
async def x_get_vouchers(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    """Extension: read proposals and vouchers back by org_refid / refid."""
    store = request.app[STORE]
    found = []
    for ref in body.get("list_org_refid") or []:
        proposal = store.proposal(tenant, str(ref))
        voucher = store.voucher(tenant, str(ref))
        if voucher is not None:
            found.append({**voucher, "state": "generated"})
        elif proposal is not None:
            found.append({**proposal[0], "state": proposal[1]})
    return envelope(found, extension="not part of the ACT Open API: vouchers cannot be read back")


@data_call
async def get_company_info(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return envelope({"company_name": f"Công ty {tenant}", "company_tax_code": None})


# --- the sandbox: processing, callbacks, the accountant's screens ---------------------------------


class ActSandbox:
    """Runs what ``save`` / ``delete`` queued and delivers the callbacks it owes."""

    def __init__(self, store: ActStore, config: dict[str, Any], faults: FaultConfig) -> None:
        self.store = store
        self.config = config
        self.faults = faults
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def later(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _callback(self, tenant: str, data_type: int, items: list[dict[str, Any]]) -> None:
        data = orjson.dumps(items).decode()
        app_id = self.config["app_id"]
        body = {
            "success": all(i.get("success", True) is not False for i in items),
            "error_code": None,
            "error_message": None,
            "signature": sign(data, app_id),
            "data_type": data_type,
            "data": data,
            "org_company_code": self.config["company_codes"].get(tenant, ""),
            "app_id": app_id,
        }
        extension = callback_extension(items)
        if extension:
            body["x_sandbox_extension"] = extension  # outside "data": the signature is unchanged
        self.store.queue_callback(tenant, data_type, body)
        self._wake.set()

    async def process_save(self, tenant: str, vouchers: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        session_id = str(uuid.uuid4())
        results = []
        for voucher in vouchers:
            code, message = self.store.save_proposal(tenant, voucher)
            results.append(
                {
                    "org_refid": voucher.get("org_refid"),
                    "success": code is None,
                    "error_code": code,
                    "error_message": message,
                    "session_id": session_id,
                    "voucher_type": voucher.get("voucher_type"),
                    "error_call_back_message": None,
                }
            )
        self._callback(tenant, 1, results)

    async def process_delete(self, tenant: str, vouchers: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        session_id = str(uuid.uuid4())
        results = []
        for voucher in vouchers:
            code, message = self.store.delete_proposal(tenant, str(voucher.get("org_refid") or ""))
            results.append(
                {
                    "org_refid": voucher.get("org_refid"),
                    "success": code is None,
                    "error_code": code,
                    "error_message": message,
                    "session_id": session_id,
                    "voucher_type": voucher.get("voucher_type"),
                    "error_call_back_message": None,
                }
            )
        self._callback(tenant, 2, results)

    async def process_request_data(self, tenant: str, request_id: str, org_refids: list[str]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        items = []
        for ref in org_refids:
            voucher = self.store.voucher(tenant, ref)
            items.append(
                {
                    "request_id": request_id,
                    "org_refid": ref,
                    "found": voucher is not None,
                    "is_paid": bool((voucher or {}).get("is_paid")),
                }
            )
        self._callback(tenant, 3, items)

    def generate(self, tenant: str, org_refid: str) -> dict[str, Any] | None:
        voucher = self.store.generate(tenant, org_refid)
        if voucher is not None:
            self._callback(tenant, 18, [voucher])
        return voucher

    def enter_voucher(self, tenant: str, voucher: dict[str, Any]) -> dict[str, Any]:
        data, state = self.store.enter_voucher(tenant, voucher)
        self._callback(tenant, 22, [{**data, "custom_param": {"ModelState": state}}])
        return data

    def remove_voucher(self, tenant: str, refid: str) -> dict[str, Any] | None:
        existing = self.store.remove_voucher(tenant, refid)
        if existing is not None:
            self._callback(tenant, 22, [{**existing, "custom_param": {"ModelState": 3}}])
        return existing

    async def deliver_forever(self) -> None:
        self._session = aiohttp.ClientSession()
        try:
            while True:
                for seq, _tenant, body in self.store.queued_callbacks():
                    await self._deliver(seq, body)
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
                # the wake-up does, and this loop would outlive close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._wake.wait()
        finally:
            await self._session.close()

    async def _deliver(self, seq: int, body: dict[str, Any]) -> None:
        url = self.config["callback_url"]
        if not url:
            self.store.callback_done(seq, False, 0, "no APICallBack URL is registered")
            return
        if self.faults.drop_callback():
            self.store.callback_done(seq, False, 1, "injected: the callback was not delivered")
            return
        error = None
        attempts = self.config["callback_attempts"]
        for attempt in range(1, attempts + 1):
            try:
                if self._session is None:
                    raise RuntimeError("the deliverer is not running")
                async with self._session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    answer = await response.read()
                    if response.status == 200 and orjson.loads(answer or b"{}").get("Success") is True:
                        self.store.callback_done(seq, True, attempt, None)
                        return
                    error = f"HTTP {response.status}: {answer[:200].decode(errors='replace')}"
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, RuntimeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                await asyncio.sleep(self.config["callback_retry_s"] * attempt)
        self.store.callback_done(seq, False, attempts, error)
        log.info("callback %s not delivered to %s: %s", seq, url, error)

    async def close(self) -> None:
        # cancelled again until done: a task may have swallowed one cancel (asyncio.wait_for on 3.11)
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1)


SANDBOX = web.AppKey("act_sandbox", ActSandbox)


def _ui_answer(request: web.Request, data: Any, status: int = 200) -> web.StreamResponse:
    if request.query.get("redirect"):  # a button of the page: back to it (the caller has shown the token)
        raise web.HTTPSeeOther(page_link("", request.app[ADMIN_TOKEN]))
    return web.Response(
        body=orjson.dumps({"sandbox_ui": "an accountant's action in AMIS Kế toán, not part of the API", "data": data}),
        status=status,
        content_type="application/json",
    )


async def ui_dictionary(request: web.Request) -> web.StreamResponse:
    tenant = request.match_info["tenant"]
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    result = request.app[STORE].save_dictionary_item(tenant, body, "ui")
    return _ui_answer(request, result, 200 if result["success"] else 400)


async def ui_generate(request: web.Request) -> web.StreamResponse:
    voucher = request.app[SANDBOX].generate(request.match_info["tenant"], request.match_info["org_refid"])
    if voucher is None:
        return _ui_answer(request, "no pending proposal with that org_refid", 404)
    return _ui_answer(request, voucher)


async def ui_voucher(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    if int(body.get("voucher_type") or 0) not in VOUCHER_TYPES:
        return _ui_answer(
            request, f"voucher_type {body.get('voucher_type')!r} is not one of {sorted(VOUCHER_TYPES)}", 400
        )
    return _ui_answer(request, request.app[SANDBOX].enter_voucher(request.match_info["tenant"], body))


async def ui_remove_voucher(request: web.Request) -> web.StreamResponse:
    removed = request.app[SANDBOX].remove_voucher(request.match_info["tenant"], request.match_info["refid"])
    return _ui_answer(request, removed, 200 if removed else 404)


async def expire_tokens(request: web.Request) -> web.Response:
    """Sandbox control (not ACT's): every token issued so far is expired from now on."""
    for held in request.app[CONFIG]["tokens"].values():
        held["expires"] = 0.0
    return web.json_response({"expired": True, "sandbox_control": "not part of AMIS Kế toán"})


async def index(request: web.Request) -> web.Response:
    store = request.app[STORE]
    parts = [
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>acct sandbox</title>"
        "<h1>AMIS Kế toán sandbox</h1><p>The ACT Open API under <code>/apir/sync/actopen</code>. "
        "Data types 901/902 and voucher types 9001/9002 are <b>extensions</b> of this sandbox. The buttons are "
        "what an accountant does in AMIS Kế toán's screens.</p>"
    ]
    token = page_token(request)
    if token is None:
        parts.append(
            "<p><b>"
            + ("The token in this link is not this sandbox's admin token. " if "token" in request.query else "")
            + "The buttons need the sandbox's admin token: open the <code>/?token=…</code> link the sandbox printed "
            "at start (SECURITY.md).</b></p>"
        )
    for tenant in store.tenants():
        parts.append(f"<h2>{html.escape(tenant)}</h2>")
        for data_type, (_write, id_field, code_field) in sorted(READ_TYPES.items()):
            records = store.dictionary_page(tenant, data_type, skip=0, take=500, since_ms=None, deleted=False)
            if records:
                label = (
                    f" <small>({html.escape(EXTENSION_DATA_TYPES[data_type])})</small>"
                    if data_type in EXTENSION_DATA_TYPES
                    else ""
                )
                parts.append(
                    f"<h3>dictionary data_type {data_type} ({len(records)}){label}</h3><table border=1 cellpadding=3>"
                )
                for record in records:
                    rest = {k: v for k, v in record.items() if k not in (id_field, code_field)}
                    parts.append(
                        f"<tr><td>{html.escape(str(record.get(code_field)))}</td><td><code>"
                        f"{html.escape(orjson.dumps(rest).decode())}</code></td></tr>"
                    )
                parts.append("</table>")
        proposals = store.proposals(tenant)
        if proposals:
            parts.append("<h3>proposals (đề nghị sinh chứng từ)</h3><table border=1 cellpadding=3>")
            for proposal, state in proposals:
                ref = html.escape(str(proposal.get("org_refid")))
                if state != "pending":
                    button = "generated"
                elif token is None:
                    button = "pending"
                else:
                    button = (
                        f"<form method=post action='/sandbox/ui/{html.escape(tenant)}/proposals/{ref}/generate"
                        f"?redirect=1'><input type=hidden name=token value='{html.escape(token)}'>"
                        "<button>Sinh chứng từ (generate)</button></form>"
                    )
                parts.append(
                    f"<tr><td>{html.escape(str(proposal.get('org_refno')))}</td><td>voucher_type "
                    f"{proposal.get('voucher_type')}</td><td>{button}</td></tr>"
                )
            parts.append("</table>")
        vouchers = store.vouchers(tenant)
        if vouchers:
            parts.append("<h3>vouchers (chứng từ)</h3><table border=1 cellpadding=3>")
            for voucher in vouchers:
                rest = {k: v for k, v in voucher.items() if k not in ("refid", "refno")}
                parts.append(
                    f"<tr><td>{html.escape(str(voucher.get('refno')))}</td><td><code>"
                    f"{html.escape(orjson.dumps(rest).decode()[:400])}</code></td></tr>"
                )
            parts.append("</table>")
    return web.Response(text="".join(parts), content_type="text/html")


def create_acct_sandbox(
    store: ActStore,
    *,
    app_id: str,
    credentials: dict[str, str],
    callback_url: str | None = None,
    faults: FaultConfig | None = None,
    token_ttl_s: float = 12 * 3600,
    processing_delay_s: float = 0.02,
    callback_attempts: int = 3,
    callback_retry_s: float = 0.2,
    admin_token: str | None = None,
) -> web.Application:
    """``credentials``: ``{"<app_id>:<access_code>": tenant}``; callbacks go to ``callback_url``. ``/sandbox/...``
    needs ``admin_token`` (``sandboxes/admin.py``; a random one when None, read back as ``app[ADMIN_TOKEN]``)."""
    faults = faults or FaultConfig()
    app = web.Application(
        middlewares=[fault_middleware(faults, applies=lambda path: path.startswith(("/api/", "/apir/")))]
    )
    config: dict[str, Any] = {
        "app_id": app_id,
        "credentials": dict(credentials),
        "callback_url": callback_url,
        "token_ttl_s": token_ttl_s,
        "processing_delay_s": processing_delay_s,
        "callback_attempts": callback_attempts,
        "callback_retry_s": callback_retry_s,
        "tokens": {},
        "company_codes": {},
    }
    sandbox = ActSandbox(store, config, faults)
    app[STORE], app[CONFIG], app[SANDBOX] = store, config, sandbox
    protect(app, admin_token)
    app.router.add_get("/", index)
    app.router.add_post("/api/oauth/actopen/connect", connect)
    for root in DATA_ROOTS:
        app.router.add_post(root + "/get_dictionary", get_dictionary)
        app.router.add_post(root + "/get_dictionary_delete", get_dictionary_delete)
        app.router.add_post(root + "/save_dictionary", save_dictionary)
        app.router.add_post(root + "/save", save)
        app.router.add_delete(root + "/delete", delete)
        app.router.add_post(root + "/delete", delete)
        app.router.add_post(root + "/request_data", request_data)
        app.router.add_post(root + "/get_call_back_detail_error", get_call_back_detail_error)
        app.router.add_post(root + "/get_company_info", get_company_info)
        app.router.add_post(root + "/x_get_vouchers", x_get_vouchers)
    app.router.add_post("/sandbox/ui/{tenant}/dictionary", ui_dictionary)
    app.router.add_post("/sandbox/ui/{tenant}/proposals/{org_refid}/generate", ui_generate)
    app.router.add_post("/sandbox/ui/{tenant}/vouchers", ui_voucher)
    app.router.add_delete("/sandbox/ui/{tenant}/vouchers/{refid}", ui_remove_voucher)
    app.router.add_post("/sandbox/expire-tokens", expire_tokens)

    async def start(app: web.Application) -> None:
        sandbox.later(sandbox.deliver_forever())

    async def stop(app: web.Application) -> None:
        await sandbox.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
