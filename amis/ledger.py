"""What the connectors wrote, and the callbacks they wait for: a SQLite file shared with capture.

Neither AMIS system says who changed a record, so the capture services learn the integration's own
writes (X-1, ``origin = sync``) from here: a connector notes each write *before* it calls the API
(``note_write``), and a capture service that sees the record change asks ``explaining``. The accounting
capture service also receives ACT's callbacks; it files the results of ``save`` / ``delete``
(data_type 1 and 2) here, where the accounting connector waits for them (``expect_callback``,
``callback_outcome``).

This is the only connector module capture imports (an import contract in ``pyproject.toml`` says
so): the two sides share data, not code paths. Also here: ``CommandLedger``, the connector's own
ledger of command ids (idempotency, ``depends_on``).

Where the files are: on one host (or one volume), the connector opens them itself (``LocalLedger``,
``LIENTHONG_LEDGER_DIR``); scaled out, the capture service of the system owns them and serves them
to every connector replica over HTTP (``amis.ledger_http``, ``LIENTHONG_LEDGER_URL``). The connector
sees either through one protocol, ``ConnectorLedger``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from common.names import System

if TYPE_CHECKING:
    from amis.acct_client import Callback

SCHEMA = """
CREATE TABLE IF NOT EXISTS writes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    system TEXT NOT NULL,
    tenant TEXT NOT NULL,
    entity TEXT NOT NULL,
    record_id TEXT,
    code TEXT,
    fields BLOB NOT NULL,
    written_ms INTEGER NOT NULL,
    matched_ms INTEGER
);
CREATE INDEX IF NOT EXISTS writes_by_id ON writes (system, tenant, entity, record_id);
CREATE INDEX IF NOT EXISTS writes_by_code ON writes (system, tenant, entity, code);
CREATE TABLE IF NOT EXISTS callbacks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    org_refid TEXT NOT NULL,
    data_type INTEGER NOT NULL,
    command_id TEXT,
    created_ms INTEGER NOT NULL,
    resolved_ms INTEGER,
    success INTEGER,
    error_code TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS callbacks_of_tenant ON callbacks (tenant, org_refid, data_type, resolved_ms);
"""


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> set[str]:
    """The fields ``after`` changed since ``before`` (for a new record: those it has a value of)."""
    base = before or {}
    return {
        name
        for name in set(base) | set(after)
        if name != "id" and base.get(name) != after.get(name) and not (before is None and after.get(name) is None)
    }


@dataclass(frozen=True)
class NotedWrites:
    """The merged fields of the integration's unmatched notes on one record, and the notes' numbers."""

    fields: dict[str, Any]
    notes: tuple[int, ...]


@dataclass(frozen=True)
class CallbackOutcome:
    success: bool
    error_code: str | None
    error_message: str | None


class WriteLedger:
    def __init__(self, path: Path | str, *, retention_s: float = 24 * 3600) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.retention_ms = int(retention_s * 1000)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(writes)")}
        if "matched_ms" not in columns:  # a ledger file from before notes were matched
            self._db.execute("ALTER TABLE writes ADD COLUMN matched_ms INTEGER")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- the integration's writes ------------------------------------------------------------------

    def note_write(
        self,
        system: System,
        tenant: str,
        entity: str,
        *,
        record_id: str | None,
        code: str | None,
        fields: Mapping[str, Any],
        now_ms: int | None = None,
    ) -> int:
        """Before an API call: this integration is about to write ``fields`` (canonical, as the system
        will give them back) to that record. Returns the note's number, for ``identify``."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO writes (system, tenant, entity, record_id, code, fields, written_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (system, tenant, entity, record_id, code, orjson.dumps(dict(fields)), now),
            )
            self._db.execute("DELETE FROM writes WHERE written_ms < ?", (now - self.retention_ms,))
            return int(cursor.lastrowid or 0)

    def identify(self, note: int, record_id: str) -> None:
        """After a create: the id the system gave the record the note is about."""
        with self._lock:
            self._db.execute("UPDATE writes SET record_id=? WHERE seq=?", (record_id, note))

    def writes_since(
        self, system: System, tenant: str, entity: str, record_id: str, code: str | None, since_ms: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """(note number, fields) of the notes on that record (by id, or by code) since ``since_ms`` that
        no change has been matched to yet, oldest first."""
        rows = self._db.execute(
            "SELECT seq, fields FROM writes WHERE system=? AND tenant=? AND entity=? AND written_ms >= ? "
            "AND matched_ms IS NULL AND (record_id=? OR (? IS NOT NULL AND code=?)) ORDER BY seq",
            (system, tenant, entity, since_ms, record_id, code, code),
        ).fetchall()
        return [(int(r[0]), orjson.loads(r[1])) for r in rows]

    def written(
        self,
        system: System,
        tenant: str,
        entity: str,
        record: Mapping[str, Any],
        *,
        since_ms: int,
        window_ms: int = 600_000,
    ) -> NotedWrites | None:
        """What the integration wrote to this record (by its id or code) and no change seen so far was
        matched to, merged in order; None when it wrote nothing there.

        Why unmatched notes and a wide window rather than "noted after the record was last seen": a
        note is taken before the API call, and the call can land seconds later (a slow API, a loaded
        host), after the capture service saw the record's previous image. A time cut-off close to that
        image would then take the integration's own write for a person's and send it back (an echo).
        A note matched to a change (``matched``) never explains a later one, so a person who sets the
        same values again later is seen as a person. Notes older than ``window_ms`` before the image
        was seen are not considered: a write whose call failed stops explaining changes after that."""
        record_id = str(record.get("id") or "")
        code = None if record.get("code") is None else str(record["code"])
        notes = self.writes_since(system, tenant, entity, record_id, code, since_ms - window_ms)
        if not notes:
            return None
        merged: dict[str, Any] = {}
        for _, fields in notes:
            merged.update(fields)
        return NotedWrites(merged, tuple(seq for seq, _ in notes))

    def explaining(
        self,
        system: System,
        tenant: str,
        entity: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any],
        *,
        since_ms: int,
        window_ms: int = 600_000,
    ) -> NotedWrites | None:
        """The integration's notes that explain the change ``before`` -> ``after`` (canonical), or None
        when some of it is not the integration's (a person's, or no note at all).

        The notes that *landed* are those up to the last one whose every field ``after`` holds: a
        connector writes one record in order (one command per key at a time), so a note before that
        one has landed, been written over, or failed for good. A note after it is a call still in
        flight: capture can read the record between two of the integration's writes, and the next
        write's note must not make the first look like a person's (the chaos suite's finding 2: a
        derived status of a CRM order read between two writes came back as an order edit, SO-2). It
        stays unmatched and explains the change its call makes when it lands. The change is the
        integration's when every field it changed has the value one of the landed notes wrote; only
        those notes are returned (for ``matched``)."""
        record_id = str(after.get("id") or "")
        code = None if after.get("code") is None else str(after["code"])
        notes = self.writes_since(system, tenant, entity, record_id, code, since_ms - window_ms)
        held = [i for i, (_, fields) in enumerate(notes) if all(after.get(k) == v for k, v in fields.items())]
        if not held:
            return None
        landed = notes[: held[-1] + 1]
        for name in changed_fields(before, after):
            if not any(name in fields and fields[name] == after.get(name) for _, fields in landed):
                return None
        merged: dict[str, Any] = {}
        for _, fields in landed:
            merged.update(fields)
        return NotedWrites(merged, tuple(seq for seq, _ in landed))

    def matched(self, written: NotedWrites, now_ms: int | None = None) -> None:
        """A change was the integration's own write: these notes explain no later change."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._db.executemany("UPDATE writes SET matched_ms=? WHERE seq=?", [(now, seq) for seq in written.notes])

    # --- ACT's callbacks for save / delete -----------------------------------------------------------

    def expect_callback(self, tenant: str, org_refid: str, data_type: int, command_id: str | None) -> int:
        """Before a ``save`` (1) or ``delete`` (2): a result for this proposal is awaited."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO callbacks (tenant, org_refid, data_type, command_id, created_ms) VALUES (?, ?, ?, ?, ?)",
                (tenant, org_refid, data_type, command_id, int(time.time() * 1000)),
            )
            return int(cursor.lastrowid or 0)

    def file_callback_result(
        self,
        tenant: str,
        org_refid: str,
        data_type: int,
        success: bool,
        error_code: str | None,
        error_message: str | None,
    ) -> int:
        """A result arrived for ``tenant`` (a callback to its URL, or a pull of its undelivered ones):
        settle what waits for it. Returns how many awaited results it settled. By tenant: an
        ``org_refid`` is ours to choose but one tenant's callback must never settle another's wait."""
        now = int(time.time() * 1000)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE callbacks SET resolved_ms=?, success=?, error_code=?, error_message=? "
                "WHERE tenant=? AND org_refid=? AND data_type=? AND resolved_ms IS NULL",
                (now, int(success), error_code, error_message, tenant, org_refid, data_type),
            )
            return cursor.rowcount

    def file_results(self, callback: Callback, tenant: str) -> None:
        """The results of ``save`` / ``delete`` a callback of ``tenant`` carries (``data_type`` 1 / 2;
        other callbacks carry none), each filed under the tenant and its proposal's ``org_refid``."""
        if callback.data_type not in (1, 2):
            return
        for item in callback.items:
            if item.get("org_refid"):
                self.file_callback_result(
                    tenant,
                    str(item["org_refid"]),
                    callback.data_type,
                    item.get("success") is True,
                    item.get("error_code"),
                    item.get("error_message"),
                )

    def callback_outcome(self, expected: int) -> CallbackOutcome | None:
        row = self._db.execute(
            "SELECT resolved_ms, success, error_code, error_message FROM callbacks WHERE seq=?", (expected,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return CallbackOutcome(success=bool(row[1]), error_code=row[2], error_message=row[3])


def command_ledger_path(data_dir: Path, ledger_dir: Path | None, system: System) -> Path:
    """Where the capture service keeps the connectors' command ids when it serves its ledger API: beside
    the shared ledger (``LIENTHONG_LEDGER_DIR``, else ``<LIENTHONG_DATA_DIR>/connectors``), where a
    connector on the same volume kept them (``<data_dir>/connectors/<system>-ledger.sqlite``)."""
    return (ledger_dir or data_dir / "connectors") / f"{system}-ledger.sqlite"


class CommandLedger:
    """Command ids and how they ended (applied / rejected / failed), durable (SQLite).

    Only ``applied`` makes a repeat a ``duplicate``: a failed or rejected command replayed from
    ``dlq.commands`` is tried again. A command depending on a rejected or failed one fails at once.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS applied (command_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "target_id TEXT, ts_ms INTEGER NOT NULL)"
        )

    def get(self, command_id: str) -> tuple[str, str | None] | None:
        with self._lock:
            row = self._db.execute("SELECT status, target_id FROM applied WHERE command_id=?", (command_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def record(self, command_id: str, status: str, target_id: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
                (command_id, status, target_id, int(time.time() * 1000)),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- what a connector uses of the ledgers, wherever they are ---------------------------------------


class WriteNotes(Protocol):
    """What a connector's writers use of the ledger of writes and callbacks (``WriteLedger``'s
    operations of the connector side), awaited: the ledger may be another process's (``amis.ledger_http``)."""

    async def note_write(
        self,
        system: System,
        tenant: str,
        entity: str,
        *,
        record_id: str | None,
        code: str | None,
        fields: Mapping[str, Any],
    ) -> int: ...

    async def identify(self, note: int, record_id: str) -> None: ...

    async def expect_callback(self, tenant: str, org_refid: str, data_type: int, command_id: str | None) -> int: ...

    async def file_callback_result(
        self,
        tenant: str,
        org_refid: str,
        data_type: int,
        success: bool,
        error_code: str | None,
        error_message: str | None,
    ) -> int: ...

    async def file_results(self, callback: Callback, tenant: str) -> None: ...

    async def callback_outcome(self, expected: int) -> CallbackOutcome | None: ...


class ConnectorLedger(WriteNotes, Protocol):
    """Everything a connector keeps: its writes and awaited callbacks (``WriteNotes``) and its command
    ids (``CommandLedger``'s ``get`` / ``record``)."""

    #: whether another process records commands too (replicas of one group): ``depends_on`` looks again
    #: periodically, not only when this connector records one
    shared_by_replicas: bool

    async def command_state(self, command_id: str) -> tuple[str, str | None] | None: ...

    async def record_command(self, command_id: str, status: str, target_id: str | None) -> None: ...

    async def problem(self) -> str | None:
        """None when the ledger can be used now; else why not, in one line (for ``/readyz``)."""
        ...

    async def close(self) -> None: ...


class LocalWrites:
    """``WriteNotes`` over a ``WriteLedger`` file this process opened (one host, or a shared volume)."""

    def __init__(self, writes: WriteLedger) -> None:
        self.writes = writes

    async def note_write(
        self,
        system: System,
        tenant: str,
        entity: str,
        *,
        record_id: str | None,
        code: str | None,
        fields: Mapping[str, Any],
    ) -> int:
        return self.writes.note_write(system, tenant, entity, record_id=record_id, code=code, fields=fields)

    async def identify(self, note: int, record_id: str) -> None:
        self.writes.identify(note, record_id)

    async def expect_callback(self, tenant: str, org_refid: str, data_type: int, command_id: str | None) -> int:
        return self.writes.expect_callback(tenant, org_refid, data_type, command_id)

    async def file_callback_result(
        self,
        tenant: str,
        org_refid: str,
        data_type: int,
        success: bool,
        error_code: str | None,
        error_message: str | None,
    ) -> int:
        return self.writes.file_callback_result(tenant, org_refid, data_type, success, error_code, error_message)

    async def file_results(self, callback: Callback, tenant: str) -> None:
        self.writes.file_results(callback, tenant)

    async def callback_outcome(self, expected: int) -> CallbackOutcome | None:
        return self.writes.callback_outcome(expected)


class LocalLedger(LocalWrites):
    """``ConnectorLedger`` over SQLite files this process opened: the connector of a system on the
    same host (or volume) as its capture service, ``LIENTHONG_LEDGER_URL`` unset."""

    shared_by_replicas = False

    def __init__(self, writes: WriteLedger, commands: CommandLedger) -> None:
        super().__init__(writes)
        self.commands = commands

    async def command_state(self, command_id: str) -> tuple[str, str | None] | None:
        return self.commands.get(command_id)

    async def record_command(self, command_id: str, status: str, target_id: str | None) -> None:
        self.commands.record(command_id, status, target_id)

    async def problem(self) -> str | None:
        return None

    async def close(self) -> None:
        self.commands.close()
        self.writes.close()
