"""What the webhook receiver remembers of each record, so that no replayed webhook changes anything.

For every record a webhook reported, the newest version taken: its ``ts_ms`` (the time of the change
at the source, which the webhook carries), whether it was a delete (a tombstone, with its time) and
the ``event_id``. A webhook is taken only when it is newer than that: a redelivery of the newest is a
duplicate, anything older (a replay, or a webhook overtaken by a later one) is stale, and a delete
is never undone by an older create or update. Kept in SQLite, written once the broker has the event.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from capture.state import open_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_versions (
    system TEXT NOT NULL, tenant TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, deleted INTEGER NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (system, tenant, entity, id)
);
"""


@dataclass(frozen=True)
class Version:
    ts_ms: int
    deleted: bool
    event_id: str


def verdict(held: Version | None, event_id: str, ts_ms: int, op: str) -> str | None:
    """``None`` when a webhook (``event_id``, ``ts_ms``, ``op``) is newer than ``held`` and is to be
    taken; else why not, in a few words."""
    if held is None:
        return None
    if event_id == held.event_id:
        return "already accepted"
    if ts_ms > held.ts_ms:
        return None
    if ts_ms == held.ts_ms and op == "d" and not held.deleted:
        return None  # a create or update and a delete in the same millisecond: the delete is last
    what = "a delete" if held.deleted else "a change"
    return f"older than {what} already taken for this record (ts_ms {ts_ms} <= {held.ts_ms})"


class WebhookVersions:
    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_store(path, SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def held(self, system: str, tenant: str, entity: str, record_id: str) -> Version | None:
        row = self._db.execute(
            "SELECT ts_ms, deleted, event_id FROM webhook_versions WHERE system=? AND tenant=? AND entity=? AND id=?",
            (system, tenant, entity, record_id),
        ).fetchone()
        return Version(int(row[0]), bool(row[1]), str(row[2])) if row else None

    def keep(self, system: str, tenant: str, entity: str, record_id: str, version: Version) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO webhook_versions (system, tenant, entity, id, ts_ms, deleted, event_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (system, tenant, entity, record_id, version.ts_ms, int(version.deleted), version.event_id),
            )
