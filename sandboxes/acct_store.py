"""The accounting sandbox's data: ACT's dictionaries, the proposals a ``save`` leaves and the
vouchers an accountant generates from them or enters, the callbacks owed, and a journal of what
happened (SQLite, in ACT's own field names). The API (``sandboxes/acct_api.py``) and the accountant's
screens (``sandboxes/acct.py``) read and write it; ``sandboxes/acct.py`` says what the sandbox is.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from sandboxes.wire import iso_vn

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
        code, message = self.proposal_problem(tenant, voucher)
        if code is not None:
            return code, message
        org_refid, voucher_type = str(voucher["org_refid"]), int(voucher["voucher_type"])
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

    def proposal_problem(self, tenant: str, voucher: dict[str, Any]) -> tuple[str | None, str | None]:
        """What is wrong with a proposal before it is saved (error code, message), or (None, None)."""
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

    def generate(self, tenant: str, org_refid: str, *, recorded: bool = False) -> dict[str, Any] | None:
        """The accountant turns a pending proposal into a voucher; returns the voucher. ``recorded``: an
        order's revenue is recorded as it is generated (revenue_status 1)."""
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
            if recorded and int(proposal.get("voucher_type") or 0) in (20, 9001):  # orders and contracts
                voucher["revenue_status"] = 1
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
