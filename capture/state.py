"""What a capture service remembers, durably, and how it turns an observation into a change event.

* **Images**: the last canonical image of every record it has seen (the ``before`` of the next
  change), kept in SQLite, written only after the change event that reported it was acknowledged
  by the broker. A restart sees the record again, compares it with the image, and either finds
  nothing new or reports the same change again with the same ``event_id`` (the processor drops the
  repeat): nothing is lost, nothing is reported twice in effect.
* **Watermarks**: how far a poll has read, advanced only when a scan is complete.
* **Event ids**: derived from what was observed (system, tenant, entity, record, op and a marker of
  the version: its modification time and content), never random.
* **Versions**: the source's time of the version each image holds (``version_ms``; for a deleted record,
  its tombstone's). A source that may deliver out of order or again (ACT's callbacks: retried,
  pulled back from ``get_call_back_detail_error``, replayed by anyone who saw one) asks
  ``newer_only``: an observation older than the version held changes nothing, and nothing older
  than (or as old as) a deletion brings the record back.
* **Callbacks taken**: the digest of every callback taken whole, per tenant, so that the same
  callback again (a retry, a pull, a replay) is answered and changes nothing.
* **Origin**: ``sync`` when the connectors' ledger of recent writes says the change is the
  integration's own (X-1), else ``user``.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from amis.ledger import NotedWrites, WriteLedger
from common import metrics
from common.delivery import produce_acknowledged
from common.logs import about
from common.names import System, cdc_topic
from streams.core.contract import change_event_json

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    system TEXT NOT NULL, tenant TEXT NOT NULL, entity TEXT NOT NULL, id TEXT NOT NULL,
    image BLOB NOT NULL, seen_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (system, tenant, entity, id)
);
CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS callbacks_taken (
    tenant TEXT NOT NULL, digest TEXT NOT NULL, taken_ms INTEGER NOT NULL, PRIMARY KEY (tenant, digest)
);
"""

#: how long a callback taken is remembered: longer than ACT keeps one it could not deliver
CALLBACK_MEMORY_MS = 60 * 24 * 3600 * 1000


@dataclass(frozen=True)
class Image:
    record: dict[str, Any]
    seen_ms: int
    deleted: bool
    version_ms: int | None = None  # the source's time of this version (of the deletion, for a tombstone)


def content_hash(record: Mapping[str, Any] | None) -> str:
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def event_id(system: System, tenant: str, entity: str, record_id: str, op: str, marker: str) -> str:
    """The same observation always gives the same id (a restart re-reports under the same id)."""
    basis = orjson.dumps([system, tenant, entity, record_id, op, marker])
    return f"{system}-capture-{hashlib.sha256(basis).hexdigest()[:40]}"


def open_store(path: Path | str, schema: str) -> sqlite3.Connection:
    """A capture service's SQLite file (its directory made), shared by its threads under the caller's
    lock; every write durable before it returns (WAL, synchronous FULL): what capture keeps decides what
    it reports again after a crash."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class CaptureState:
    def __init__(self, path: Path | str) -> None:
        self._lock = threading.Lock()
        self._db = open_store(path, SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(images)")}
        if "version_ms" not in columns:  # a state file from before versions were kept
            self._db.execute("ALTER TABLE images ADD COLUMN version_ms INTEGER")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def image(self, system: System, tenant: str, entity: str, record_id: str) -> Image | None:
        row = self._db.execute(
            "SELECT image, seen_ms, deleted, version_ms FROM images WHERE system=? AND tenant=? AND entity=? AND id=?",
            (system, tenant, entity, record_id),
        ).fetchone()
        return Image(orjson.loads(row[0]), row[1], bool(row[2]), row[3]) if row else None

    def keep(
        self,
        system: System,
        tenant: str,
        entity: str,
        record: Mapping[str, Any],
        *,
        deleted: bool = False,
        version_ms: int | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO images (system, tenant, entity, id, image, seen_ms, deleted, version_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    system,
                    tenant,
                    entity,
                    str(record["id"]),
                    orjson.dumps(dict(record)),
                    int(time.time() * 1000),
                    int(deleted),
                    version_ms,
                ),
            )

    def set_version(self, system: System, tenant: str, entity: str, record_id: str, version_ms: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE images SET version_ms=? WHERE system=? AND tenant=? AND entity=? AND id=?",
                (version_ms, system, tenant, entity, record_id),
            )

    def callback_taken(self, tenant: str, digest: str) -> bool:
        """This tenant's callback (by the digest of what it says) was taken whole before."""
        row = self._db.execute("SELECT 1 FROM callbacks_taken WHERE tenant=? AND digest=?", (tenant, digest)).fetchone()
        return row is not None

    def note_callback_taken(self, tenant: str, digest: str) -> None:
        now = int(time.time() * 1000)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO callbacks_taken (tenant, digest, taken_ms) VALUES (?, ?, ?)",
                (tenant, digest, now),
            )
            self._db.execute("DELETE FROM callbacks_taken WHERE taken_ms < ?", (now - CALLBACK_MEMORY_MS,))

    def live_ids(self, system: System, tenant: str, entity: str) -> set[str]:
        rows = self._db.execute(
            "SELECT id FROM images WHERE system=? AND tenant=? AND entity=? AND deleted=0", (system, tenant, entity)
        ).fetchall()
        return {r[0] for r in rows}

    def watermark(self, name: str) -> int | None:
        row = self._db.execute("SELECT value FROM watermarks WHERE name=?", (name,)).fetchone()
        return int(row[0]) if row else None

    def set_watermark(self, name: str, value: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO watermarks (name, value) VALUES (?, ?)", (name, value))


class ChangeReporter:
    """Observations in, change events out: compares with the image, decides op and origin, produces,
    and keeps the new image once the broker has the event."""

    def __init__(
        self,
        system: System,
        state: CaptureState,
        ledger: WriteLedger,
        producer: Producer,
        *,
        topic_prefix: str = "",
        crash_after: int | None = None,
    ) -> None:
        self.system = system
        self.state = state
        self.ledger = ledger
        self.producer = producer
        self.topic_prefix = topic_prefix
        self.emitted = 0
        self.crash_after = crash_after  # tests: stop dead after this many events, before keeping the image

    async def observed(
        self,
        tenant: str,
        entity: str,
        record: dict[str, Any],
        *,
        marker: str,
        ts_ms: int,
        snapshot: bool = False,
        origin: str | None = None,
        newer_only: bool = False,
    ) -> dict[str, Any] | None:
        """A record as the system shows it now; a change event when it differs from the image.
        ``newer_only``: ``ts_ms`` is the version's time, and a version older than the image's (or not
        newer than its deletion) changes nothing."""
        record_id = str(record.get("id") or "")
        if not record_id:
            log.warning(
                "%s %s without an id ignored: %s",
                self.system,
                entity,
                str(record)[:200],
                extra=about(tenant=tenant, entity=entity),
            )
            return None
        previous = self.state.image(self.system, tenant, entity, record_id)
        if newer_only and stale(previous, ts_ms, entity, record_id):
            return None
        if previous is not None and not previous.deleted and previous.record == record:
            if newer_only and (previous.version_ms or 0) < ts_ms:
                # a newer version that changes nothing canonical (ACT posting a voucher): versions older
                # than it are stale from now on
                self.state.set_version(self.system, tenant, entity, record_id, ts_ms)
            return None
        before = previous.record if previous is not None and not previous.deleted else None
        op = "u" if before is not None else ("r" if snapshot else "c")
        explained: NotedWrites | None = None  # the ledger's notes this change turns out to be
        if origin is None:
            since = previous.seen_ms if previous else 0
            ours = self.ledger.explaining(self.system, tenant, entity, before, record, since_ms=since)
            notes = self.ledger.written(self.system, tenant, entity, record, since_ms=since) if ours is None else None
            wrote = notes.fields if notes is not None else None
            if ours is not None:
                origin = "sync"
                explained = ours
            elif (
                notes is not None
                and wrote is not None
                and before is None
                and all(record.get(k) == v for k, v in wrote.items() if k != "code")
            ):
                explained = notes
                # The integration created it and a person changed it before this poll: report the two
                # changes as they happened, the integration's creation, then the person's edit.
                created = {"id": record_id, **wrote}
                echo = self._event(tenant, entity, op, None, created, "sync", ts_ms, f"created:{content_hash(created)}")
                await self._produce(tenant, entity, record_id, echo)
                self.state.keep(self.system, tenant, entity, created, version_ms=ts_ms)
                before, op, origin = created, "u", "user"
            else:
                origin = "user"
        event = self._event(tenant, entity, op, before, record, origin, ts_ms, f"{marker}:{content_hash(record)}")
        await self._produce(tenant, entity, record_id, event)
        self.state.keep(self.system, tenant, entity, record, version_ms=ts_ms)
        if explained is not None:
            # only once the change is out and its image kept: a crash before leaves the notes to
            # explain the change when it is seen again
            self.ledger.matched(explained)
        return event

    async def gone(
        self, tenant: str, entity: str, record_id: str, *, marker: str, ts_ms: int, newer_only: bool = False
    ) -> dict[str, Any] | None:
        """The record no longer exists; a delete event when it was alive in the image.
        ``newer_only``: a deletion older than the version held changes nothing, and one of a record
        never seen leaves a tombstone, so that an older creation arriving after it stays dead."""
        previous = self.state.image(self.system, tenant, entity, record_id)
        if newer_only and stale(previous, ts_ms, entity, record_id):
            return None
        if newer_only and previous is None:
            self.state.keep(self.system, tenant, entity, {"id": record_id}, deleted=True, version_ms=ts_ms)
            return None
        if previous is None or previous.deleted:
            return None
        event = self._event(
            tenant, entity, "d", previous.record, None, "user", ts_ms, f"{marker}:{content_hash(previous.record)}"
        )
        await self._produce(tenant, entity, record_id, event)
        self.state.keep(self.system, tenant, entity, previous.record, deleted=True, version_ms=ts_ms)
        return event

    def _event(
        self,
        tenant: str,
        entity: str,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        origin: str,
        ts_ms: int,
        marker: str,
    ) -> dict[str, Any]:
        record_id = str((after or before or {})["id"])
        return change_event_json(
            event_id=event_id(self.system, tenant, entity, record_id, op, marker),
            tenant=tenant,
            system=self.system,
            entity=entity,
            op=op,
            origin=origin,
            ts_ms=ts_ms,
            before=before,
            after=after,
        )

    async def _produce(self, tenant: str, entity: str, record_id: str, event: dict[str, Any]) -> None:
        topic = self.topic_prefix + cdc_topic(self.system, entity)
        await produce_acknowledged(self.producer, topic, f"{tenant}:{record_id}".encode(), orjson.dumps(event))
        self.emitted += 1
        metrics.CAPTURE_EVENTS.labels(self.system, entity, str(event["op"])).inc()
        if self.crash_after is not None and self.emitted >= self.crash_after:
            raise CrashForTest(f"stopped after {self.emitted} events, before keeping the image")


def stale(previous: Image | None, ts_ms: int, entity: str, record_id: str) -> bool:
    """An observation of version ``ts_ms`` is older than the image's version, or not newer than its
    deletion (ACT's deletion callback carries the record's last modified_date: the version it ended)."""
    if previous is None or previous.version_ms is None:
        return False
    older = ts_ms <= previous.version_ms if previous.deleted else ts_ms < previous.version_ms
    if older:
        log.info(
            "%s %s: a version of %s older than the one held (%s) changes nothing",
            entity,
            record_id,
            ts_ms,
            "deleted" if previous.deleted else previous.version_ms,
        )
    return older


class CrashForTest(Exception):
    """Raised by ``crash_after``: the process dies between producing and remembering."""


def new_producer(kafka: Mapping[str, Any]) -> Producer:
    """``kafka``: the client config of the cluster (common.kafka_config.confluent_config)."""
    return Producer({**kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 2})
