"""What a capture service remembers, durably, and how it turns an observation into a change event.

* **Images**: the last canonical image of every record it has seen (the ``before`` of the next
  change), kept in SQLite, written only after the change event that reported it was acknowledged
  by the broker. A restart sees the record again, compares it with the image, and either finds
  nothing new or reports the same change again with the same ``event_id`` (the processor drops the
  repeat): nothing is lost, nothing is reported twice in effect.
* **Watermarks**: how far a poll has read, advanced only when a scan is complete.
* **Event ids**: derived from what was observed (system, tenant, entity, record, op and a marker of
  the version: its modification time and content), never random.
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
"""


@dataclass(frozen=True)
class Image:
    record: dict[str, Any]
    seen_ms: int
    deleted: bool


def content_hash(record: Mapping[str, Any] | None) -> str:
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def event_id(system: System, tenant: str, entity: str, record_id: str, op: str, marker: str) -> str:
    """The same observation always gives the same id (a restart re-reports under the same id)."""
    basis = orjson.dumps([system, tenant, entity, record_id, op, marker])
    return f"{system}-capture-{hashlib.sha256(basis).hexdigest()[:40]}"


class CaptureState:
    def __init__(self, path: Path | str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def image(self, system: System, tenant: str, entity: str, record_id: str) -> Image | None:
        row = self._db.execute(
            "SELECT image, seen_ms, deleted FROM images WHERE system=? AND tenant=? AND entity=? AND id=?",
            (system, tenant, entity, record_id),
        ).fetchone()
        return Image(orjson.loads(row[0]), row[1], bool(row[2])) if row else None

    def keep(
        self, system: System, tenant: str, entity: str, record: Mapping[str, Any], *, deleted: bool = False
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO images (system, tenant, entity, id, image, seen_ms, deleted) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    system,
                    tenant,
                    entity,
                    str(record["id"]),
                    orjson.dumps(dict(record)),
                    int(time.time() * 1000),
                    int(deleted),
                ),
            )

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
    ) -> dict[str, Any] | None:
        """A record as the system shows it now; a change event when it differs from the image."""
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
        if previous is not None and not previous.deleted and previous.record == record:
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
                self.state.keep(self.system, tenant, entity, created)
                before, op, origin = created, "u", "user"
            else:
                origin = "user"
        event = self._event(tenant, entity, op, before, record, origin, ts_ms, f"{marker}:{content_hash(record)}")
        await self._produce(tenant, entity, record_id, event)
        self.state.keep(self.system, tenant, entity, record)
        if explained is not None:
            # only once the change is out and its image kept: a crash before leaves the notes to
            # explain the change when it is seen again
            self.ledger.matched(explained)
        return event

    async def gone(self, tenant: str, entity: str, record_id: str, *, marker: str, ts_ms: int) -> dict[str, Any] | None:
        """The record no longer exists; a delete event when it was alive in the image."""
        previous = self.state.image(self.system, tenant, entity, record_id)
        if previous is None or previous.deleted:
            return None
        event = self._event(
            tenant, entity, "d", previous.record, None, "user", ts_ms, f"{marker}:{content_hash(previous.record)}"
        )
        await self._produce(tenant, entity, record_id, event)
        self.state.keep(self.system, tenant, entity, previous.record, deleted=True)
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


class CrashForTest(Exception):
    """Raised by ``crash_after``: the process dies between producing and remembering."""


def new_producer(kafka: Mapping[str, Any]) -> Producer:
    """``kafka``: the client config of the cluster (common.kafka_config.confluent_config)."""
    return Producer({**kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 2})
