"""A sandbox system's storage: SQLite records plus a transactional outbox of change events.

Every write of a record and the change event that reports it are committed in one SQLite
transaction, so a crash can neither lose an event (the record changed, the event is in the outbox)
nor invent one (the event is there only if the record changed). ``OutboxPublisher`` sends the outbox
to ``cdc.<system>.<entity>`` and marks rows published only after the broker acknowledged them; a
crash in between re-sends the same event (same ``event_id``), which the processor deduplicates.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    id TEXT NOT NULL,
    code TEXT,
    data BLOB NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 1,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, entity, id)
);
CREATE INDEX IF NOT EXISTS records_by_code ON records (tenant, entity, code);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published, seq);
"""


class NotFound(KeyError):
    pass


@dataclass(frozen=True)
class Change:
    """What one write did: the record before and after, and the change event queued for it."""

    before: dict[str, Any] | None
    after: dict[str, Any] | None
    event: dict[str, Any]


class SandboxStore:
    """Records of one system (``crm`` or ``acct``) for many tenants, with the outbox beside them."""

    def __init__(self, path: Path | str, system: str, topic_prefix: str = "") -> None:
        self.system = system
        self.topic_prefix = topic_prefix
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads ---------------------------------------------------------------------------------

    def get(self, tenant: str, entity: str, record_id: str) -> dict[str, Any]:
        row = self._db.execute(
            "SELECT data FROM records WHERE tenant=? AND entity=? AND id=? AND deleted=0", (tenant, entity, record_id)
        ).fetchone()
        if row is None:
            raise NotFound(f"{entity} {record_id}")
        return orjson.loads(row[0])

    def exists(self, tenant: str, entity: str, record_id: str) -> bool:
        return self._row(tenant, entity, record_id) is not None

    def by_code(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM records WHERE tenant=? AND entity=? AND code=? AND deleted=0", (tenant, entity, code)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def list_records(
        self, tenant: str, entity: str, *, page: int = 1, page_size: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of live records in creation order (stable while records are updated), and the total."""
        total = self._db.execute(
            "SELECT COUNT(*) FROM records WHERE tenant=? AND entity=? AND deleted=0", (tenant, entity)
        ).fetchone()[0]
        rows = self._db.execute(
            "SELECT data FROM records WHERE tenant=? AND entity=? AND deleted=0 ORDER BY rowid LIMIT ? OFFSET ?",
            (tenant, entity, page_size, (page - 1) * page_size),
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows], total

    def tenants(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT tenant FROM records ORDER BY tenant")]

    # --- writes --------------------------------------------------------------------------------

    def upsert(
        self, tenant: str, entity: str, record: dict[str, Any], *, origin: str = "user", action: str | None = None
    ) -> Change:
        """Create the record (new id or code) or update it; queue its change event in the same transaction."""
        record = dict(record)
        now = int(time.time() * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = None
                if record.get("id"):
                    existing = self._row(tenant, entity, str(record["id"]))
                if existing is None and record.get("code"):
                    row = self._db.execute(
                        "SELECT data FROM records WHERE tenant=? AND entity=? AND code=? AND deleted=0",
                        (tenant, entity, str(record["code"])),
                    ).fetchone()
                    existing = orjson.loads(row[0]) if row else None
                if existing is None:
                    record.setdefault("id", f"{self.system}-{entity}-{uuid.uuid4().hex[:12]}")
                    after = record
                    self._db.execute(
                        "INSERT OR REPLACE INTO records (tenant, entity, id, code, data, deleted, version, updated_ms)"
                        " VALUES (?, ?, ?, ?, ?, 0, 1, ?)",
                        (tenant, entity, str(after["id"]), after.get("code"), orjson.dumps(after), now),
                    )
                    op = "c"
                else:
                    after = {**existing, **record, "id": existing["id"]}
                    if after == existing:
                        self._db.execute("COMMIT")
                        return Change(before=existing, after=existing, event={})  # nothing changed: no event
                    self._db.execute(
                        "UPDATE records SET code=?, data=?, version=version+1, updated_ms=? "
                        "WHERE tenant=? AND entity=? AND id=?",
                        (after.get("code"), orjson.dumps(after), now, tenant, entity, str(after["id"])),
                    )
                    op = "u"
                event = self._queue(tenant, entity, op, existing, after, origin=origin, action=action, ts_ms=now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Change(before=existing, after=after, event=event)

    def delete(self, tenant: str, entity: str, record_id: str, *, origin: str = "user") -> Change:
        now = int(time.time() * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                existing = self._row(tenant, entity, record_id)
                if existing is None:
                    raise NotFound(f"{entity} {record_id}")
                self._db.execute(
                    "UPDATE records SET deleted=1, version=version+1, updated_ms=? "
                    "WHERE tenant=? AND entity=? AND id=?",
                    (now, tenant, entity, record_id),
                )
                event = self._queue(tenant, entity, "d", existing, None, origin=origin, action=None, ts_ms=now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Change(before=existing, after=None, event=event)

    def _row(self, tenant: str, entity: str, record_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT data FROM records WHERE tenant=? AND entity=? AND id=? AND deleted=0", (tenant, entity, record_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    def _queue(
        self,
        tenant: str,
        entity: str,
        op: str,
        before: dict | None,
        after: dict | None,
        *,
        origin: str,
        action: str | None,
        ts_ms: int,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": str(uuid.uuid4()),
            "tenant": tenant,
            "system": self.system,
            "entity": entity,
            "op": op,
            "origin": origin,
            "ts_ms": ts_ms,
            "before": before,
            "after": after,
        }
        if action:
            event["action"] = action
        record_id = (after or before or {})["id"]
        self._db.execute(
            "INSERT INTO outbox (topic, key, value) VALUES (?, ?, ?)",
            (f"{self.topic_prefix}cdc.{self.system}.{entity}", f"{tenant}:{record_id}".encode(), orjson.dumps(event)),
        )
        return event

    # --- outbox --------------------------------------------------------------------------------

    def pending(self, limit: int = 500) -> list[tuple[int, str, bytes, bytes]]:
        # Under the lock: the connection is shared, and a read inside another thread's open
        # transaction would see (and publish) rows that may still be rolled back.
        with self._lock:
            return self._db.execute(
                "SELECT seq, topic, key, value FROM outbox WHERE published=0 ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()

    def mark_published(self, seqs: Iterable[int]) -> None:
        seqs = list(seqs)
        if not seqs:
            return
        with self._lock:
            self._db.executemany("UPDATE outbox SET published=1 WHERE seq=?", [(s,) for s in seqs])
