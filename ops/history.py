"""``lienthong history TENANT ENTITY ID-OR-CODE``: a record's whole story on both sides (``explain`` is
the same command under its old name).

Every version of the record and of its linked record in the other system (their change events on
``cdc.*``), in time order: what changed (a field diff), who changed it (``origin``: a user, or ``sync``
this integration; and the system's own ``modified_by`` when the record carries it), the decision the
processor took (its audit record: the rules, the commands sent, the reason for none) and what became
of each command (``results.*``: applied, rejected or failed with the system's message, retried,
pending). For an order, each accounting voucher and receipt of it is a version too, with the derived
values it made (delivered quantities, remaining receivable, invoiced total) and the documents that
made them. The record is found and its commands joined by ``ops.explain.find``, as ``explain`` always
did (docs/history.md).

Reading every topic per question cannot answer in under a second when a million events are retained;
``HistoryIndex`` is a SQLite file under ``LIENTHONG_DATA_DIR`` that names, per tenant and identifier
(record id, code, ``crm_id``, an order's ``order_id``, a command's key and id, a result's target id),
where on the topics each message that names it is (topic, partition, offset). It is brought up to date
incrementally (per partition: "indexed up to offset") before each question; the question then fetches
only the record's messages from the broker, by offset. The broker stays the only copy of the messages,
so what retention deleted is gone from the answer too, and the answer says so (``Retention``).

``build`` is pure (fed the decoded messages); ``HistoryIndex`` and ``history`` read the broker.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from common.kafka_config import confluent_config, unreachable
from common.names import AUDIT, ENTITIES, TENANT, System, cdc_topic, results_topic
from common.settings import KafkaSettings
from ops.explain import Change, ExplainError, Explanation, _outcome_text, _Results, entities, find
from ops.retained import Retention
from streams.core.aggregates import OrderAggregate, derive
from streams.core.contract import decode_change_event
from streams.core.decide import link_family
from streams.core.errors import BadInput

#: the fields of a record that name it or the record it belongs to (indexed, and followed)
NAMING_FIELDS = ("id", "code", "crm_id")
DOCUMENT_ENTITIES = ("sales_voucher", "receipt")  # accounting documents counted for an order (SO-9 … SO-14)
ORDER_ENTITIES = ("sale_order", "contract")
#: the derived values a document changes, shown with the documents that made them
DERIVED_FIELDS = (
    "delivered_quantities",
    "delivery_status",
    "receipted_amount",
    "remaining_receivable",
    "pay_status",
    "invoicing_status",
    "invoiced_amount",
    "invoiced_date",
    "status",
)


class HistoryIndexError(ExplainError):
    """The index cannot be read or brought up to date (no broker, a file that cannot be written); one line."""


def _family(system: Any, entity: Any) -> str:
    try:
        return link_family(System(str(system)), str(entity))
    except ValueError:
        return str(entity)


# --- the story, pure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One retained message: where it is, when it reached Kafka, and its decoded value."""

    topic: str  # without the deployment's prefix: cdc.crm.sale_order, audit.sync, results.acct
    partition: int
    offset: int
    timestamp_ms: int
    value: dict[str, Any]


@dataclass
class Version:
    """One change event of the record (or of its linked record, or of a document of its order)."""

    event: dict[str, Any]
    role: str  # "record": the record or its linked record; "document": a voucher or receipt of the order
    diff: dict[str, list[Any]]  # field -> [before, after]
    decision: Change | None = None  # the audit record of this change and its commands' outcomes
    derived: dict[str, Any] | None = None  # an order's derived values after this document, and what made them
    reached_ms: int = 0  # when it reached Kafka: orders changes of one source time (ts_ms) as the worker saw them

    @property
    def ts_ms(self) -> int:
        return int(self.event.get("ts_ms") or 0)

    @property
    def decided_ms(self) -> int:
        """When the processor decided it (0: not decided): the order it took changes of one time in."""
        return int(self.decision.audit.get("ts_ms") or 0) if self.decision else 0

    @property
    def record(self) -> dict[str, Any]:
        after, before = self.event.get("after"), self.event.get("before")
        return after if isinstance(after, dict) else before if isinstance(before, dict) else {}

    @property
    def who(self) -> str:
        """``user`` or ``sync`` (this integration), and the system's own ``modified_by`` when it has one."""
        origin = str(self.event.get("origin") or "user")
        by = self.record.get("modified_by")
        if by and origin == "user":
            return f"user {by}"
        return "this integration (sync)" if origin == "sync" else (f"user {by}" if by else "user")

    def as_json(self) -> dict[str, Any]:
        return {
            "ts_ms": self.ts_ms,
            "role": self.role,
            "system": self.event.get("system"),
            "entity": self.event.get("entity"),
            "record_id": None if self.record.get("id") is None else str(self.record.get("id")),
            "code": self.record.get("code"),
            "event_id": self.event.get("event_id"),
            "op": self.event.get("op"),
            "action": self.event.get("action") or (self.decision.audit.get("action") if self.decision else None),
            "origin": self.event.get("origin") or "user",
            "modified_by": self.record.get("modified_by"),
            "who": self.who,
            "diff": self.diff,
            "decision": self.decision.as_json() if self.decision else None,
            "derived": self.derived,
        }


@dataclass
class History:
    """The story of one record: its versions and their decisions, oldest first."""

    explanation: Explanation
    versions: list[Version] = field(default_factory=list)
    # decisions whose change event is not a version here: a change of another record that wrote to this one
    # (``via``: a customer's order naming it, X-4), or one whose change event is no longer retained
    other_decisions: list[Change] = field(default_factory=list)
    retention: Retention = field(default_factory=Retention)
    indexed: int = 0  # messages this question indexed first (0: the index was current)

    def timeline(self) -> list[Version | Change]:
        """The versions and the other decisions in one time order (a version at its change's time, a
        decision without one at the time it was decided)."""
        entries: list[tuple[int, int, Version | Change]] = [(v.ts_ms, 0, v) for v in self.versions]
        entries += [(int(c.audit.get("ts_ms") or 0), 1, c) for c in self.other_decisions]
        return [entry for _, _, entry in sorted(entries, key=lambda e: (e[0], e[1]))]

    @property
    def found(self) -> bool:
        return bool(self.versions or self.explanation.changes)

    def gone_note(self) -> str | None:
        """One sentence when the record's history reaches back past what the broker retains."""
        oldest = self.retention.oldest_complete_ms()
        if oldest is None:
            return None
        first = min((v.ts_ms for v in self.versions), default=None)
        starts_whole = bool(self.versions) and self.versions[0].event.get("op") in ("c", "r")
        when = time_text(oldest)
        if starts_whole and first is not None and first >= oldest:
            return None
        return (
            f"history before {when} UTC is no longer retained (retention.ms of "
            f"{', '.join(sorted(self.retention.gone_before_ms))}): older versions of this record, if any, are gone"
        )

    def as_json(self) -> dict[str, Any]:
        explanation = self.explanation
        return {
            "tenant": explanation.tenant,
            "entity": explanation.entity,
            "query": explanation.query,
            "records": [{"system": s, "record_id": r} for s, r in explanation.records],
            "identifiers": explanation.identifiers,
            "versions": [version.as_json() for version in self.versions],
            "other_decisions": [change.as_json() for change in self.other_decisions],
            "retained_since_ms": self.retention.oldest_complete_ms(),
            "not_retained": self.gone_note(),
            # explain's document, unchanged, for the programs that read it
            "changes": [change.as_json() for change in explanation.changes],
        }


def time_text(ts_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def field_diff(before: Any, after: Any) -> dict[str, list[Any]]:
    """Each field whose value differs between two images of a record: ``[before, after]``."""
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    return {
        name: [old.get(name), new.get(name)]
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    }


def _names(record: dict[str, Any]) -> set[str]:
    return {str(record[name]) for name in NAMING_FIELDS if record.get(name) not in (None, "")}


def _image_names(event: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for image in (event.get("after"), event.get("before")):
        if isinstance(image, dict):
            found |= _names(image)
    return found


def _order_of(event: dict[str, Any]) -> str | None:
    for image in (event.get("after"), event.get("before")):
        if isinstance(image, dict) and image.get("order_id") not in (None, ""):
            return str(image["order_id"])
    return None


class _Derivation:
    """An order's aggregate replayed over its accounting order, vouchers and receipts, as the worker
    keeps it (``streams.core.aggregates``): after each document, the derived values and what made them."""

    def __init__(self, tenant: str, order_id: str) -> None:
        self.aggregate = OrderAggregate(tenant=tenant, order_id=order_id)
        self.codes: dict[str, str] = {}

    def apply(self, event: dict[str, Any]) -> dict[str, Any] | None:
        system, entity = str(event.get("system")), str(event.get("entity"))
        try:
            change = decode_change_event(orjson.dumps(event), topic_system=system, topic_entity=entity)
            self.aggregate.apply(change)
        except (BadInput, ValueError):
            return None  # the worker dead-lettered it: it made nothing
        if change.record.get("code"):
            self.codes[change.record_id] = str(change.record["code"])
        if entity in ORDER_ENTITIES or self.aggregate.kind is None:
            return None
        values = derive(self.aggregate)
        vouchers = [
            {
                "id": voucher_id,
                "code": self.codes.get(voucher_id),
                "quantities": {line: str(q) for line, q in voucher.lines.items()},
                "amount": str(voucher.amount),
                "invoiced": voucher.invoiced,
            }
            for voucher_id, voucher in self.aggregate.vouchers.items()
        ]
        receipts = [
            {"id": receipt_id, "code": self.codes.get(receipt_id), "amount": str(amount)}
            for receipt_id, amount in self.aggregate.receipts.items()
        ]
        return {
            "values": {name: values[name] for name in DERIVED_FIELDS if name in values},
            "order_total": str(self.aggregate.total),
            "vouchers": vouchers,
            "receipts": receipts,
        }


def build(
    tenant: str,
    entity: str,
    identifier: str,
    messages: Iterable[Message],
    retention: Retention | None = None,
) -> History:
    """The story of ``entity`` ``identifier`` among one tenant's retained messages (any superset of the
    record's: change events, audit records and results)."""
    audits: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    reached: dict[int, int] = {}  # id(event) -> when it reached Kafka
    for message in messages:
        value = message.value
        if message.topic == AUDIT:
            audits.append(value)
        elif message.topic.startswith("results."):
            results.append(value)
        elif message.topic.startswith("cdc.") and value.get("tenant") == tenant:
            events.append(value)
            reached[id(value)] = message.timestamp_ms
    family = link_family(System.ACCT, entity)
    # identifiers the change events give (a record none of whose changes sent anything: no command names
    # its code), then explain's search over the audit records and results
    also = {
        name
        for event in events
        if _family(event.get("system"), event.get("entity")) == family and identifier in _image_names(event)
        for name in _image_names(event)
    }
    explanation = find(tenant, entity, identifier, audits, results, also=also)
    known = set(explanation.identifiers) | {identifier}
    own_ids = {(system, record_id) for system, record_id in explanation.records}

    def is_own(event: dict[str, Any]) -> bool:
        if _family(event.get("system"), event.get("entity")) != family:
            return False
        record = event.get("after") if isinstance(event.get("after"), dict) else event.get("before")
        record_id = str((record or {}).get("id"))
        return (str(event.get("system")), record_id) in own_ids or bool(_image_names(event) & known)

    own = [event for event in events if is_own(event)]
    acct_orders = {
        str((event.get("after") or event.get("before") or {}).get("id"))
        for event in own
        if event.get("system") == System.ACCT.value and event.get("entity") in ORDER_ENTITIES
    }
    acct_orders |= {record_id for system, record_id in own_ids if system == System.ACCT.value}
    documents = [
        event
        for event in events
        if event.get("system") == System.ACCT.value
        and event.get("entity") in DOCUMENT_ENTITIES
        and family == "sale_order"
        and _order_of(event) in acct_orders
    ]
    decisions: dict[tuple[str, str], Change] = {}
    for change in explanation.changes:
        decisions.setdefault((str(change.audit.get("system")), str(change.audit.get("event_id"))), change)
    # a document's decision that sent nothing to the record (its values unchanged) is still its decision
    joined: _Results | None = None
    document_events = {(str(e.get("system")), str(e.get("event_id"))) for e in documents}
    for audit in audits:
        key = (str(audit.get("system")), str(audit.get("event_id")))
        if key in document_events and key not in decisions and audit.get("tenant") == tenant:
            joined = joined or _Results(results)
            outcomes = [joined.outcome(c) for c in audit.get("commands") or []]
            decisions[key] = Change(audit, outcomes, via=str(audit.get("entity")))

    seen: set[tuple[str, str]] = set()
    versions: list[Version] = []
    for role, group in (("record", own), ("document", documents)):
        for event in group:
            key = (str(event.get("system")), str(event.get("event_id")))
            if key in seen:
                continue  # a change event sent twice (at least once): one version
            seen.add(key)
            diff = field_diff(event.get("before"), event.get("after"))
            versions.append(Version(event, role, diff, decisions.get(key), reached_ms=reached.get(id(event), 0)))
    versions.sort(key=lambda v: (v.ts_ms, v.reached_ms, v.decided_ms, v.role != "record"))
    derivations: dict[str, _Derivation] = {}
    for version in versions:
        event = version.event
        if event.get("system") != System.ACCT.value:
            continue
        order_id = str(version.record.get("id")) if event.get("entity") in ORDER_ENTITIES else _order_of(event) or ""
        if order_id not in acct_orders:
            continue
        derivation = derivations.setdefault(order_id, _Derivation(tenant, order_id))
        version.derived = derivation.apply(event)
    without = [change for key, change in decisions.items() if key not in seen]
    return History(explanation, versions, without, retention or Retention())


# --- for people ---


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def _outcome(outcome: Any) -> str:
    return str(_outcome_text(outcome))


def _decision_lines(change: Any) -> list[str]:
    audit = change.audit
    rules = ", ".join(audit.get("rules") or []) or "no rule"
    lines = [
        f"    decided: rules {rules}"
        + (f" (settings revision {audit['settings_revision']})" if audit.get("settings_revision") else "")
    ]
    for outcome in change.outcomes:
        command = outcome.command
        lines.append(
            f"    -> {command.get('rule')}: {command.get('op')} {command.get('target')} {command.get('entity')} "
            f"{command.get('key')}  [{str(command.get('command_id', ''))[:12]}]  {_outcome(outcome)}"
        )
    if audit.get("reason"):
        lines.append(f"    {audit['reason']}")
    return lines


def format_history(story: History) -> list[str]:
    """The story for people: one entry per version (or decision), oldest first (plain text lines)."""
    explanation = story.explanation
    records = ", ".join(f"{system} {record_id}" for system, record_id in explanation.records) or "no decided change"
    lines = [
        f"{explanation.entity} {explanation.query} of {explanation.tenant}: {records}; "
        f"known as {', '.join(explanation.identifiers)} (UTC times)"
    ]
    note = story.gone_note()
    if note:
        lines.append(f"note: {note}")
    for entry in story.timeline():
        if isinstance(entry, Change):
            audit = entry.audit
            where = f"via {entry.via} {audit.get('record_id')}" if entry.via else f"{audit.get('record_id')}"
            lines.append(
                f"{time_text(int(audit.get('ts_ms') or 0))}  {audit.get('system')} {where} {audit.get('action')} "
                f"(event {audit.get('event_id')}, origin {audit.get('origin')}; its change event is not shown)"
                f"  rules: {', '.join(audit.get('rules') or []) or 'no rule'}"
            )
            lines += _decision_lines(entry)[1:]
            continue
        record, event = entry.record, entry.event
        code = f" ({record['code']})" if record.get("code") and str(record.get("code")) != str(record.get("id")) else ""
        for_order = f" of order {record['order_id']}" if entry.role == "document" and record.get("order_id") else ""
        action = (
            event.get("action") or (entry.decision.audit.get("action") if entry.decision else None) or event.get("op")
        )
        lines.append(
            f"{time_text(entry.ts_ms)}  {event.get('system')} {event.get('entity')} {record.get('id')}{code}"
            f"{for_order} "
            f"{action} by {entry.who}  [event {event.get('event_id')}]"
        )
        if event.get("op") in ("c", "r") or not event.get("before"):
            shown = {k: v for k, v in record.items() if k != "id" and v not in (None, "", [])}
            lines.append("    " + ", ".join(f"{k} = {_short(v, 40)}" for k, v in shown.items()))
        else:
            for name, (old, new) in entry.diff.items():
                lines.append(f"    {name}: {_short(old)} -> {_short(new)}")
        if entry.derived:
            values = ", ".join(f"{k} = {_short(v, 50)}" for k, v in entry.derived["values"].items() if v is not None)
            lines.append(f"    order's derived values: {values}")
            made = [
                f"voucher {v['code'] or v['id']} ({', '.join(f'{line}: {q}' for line, q in v['quantities'].items())}; "
                f"{v['amount']}{', invoiced' if v['invoiced'] else ''})"
                for v in entry.derived["vouchers"]
            ] + [f"receipt {r['code'] or r['id']} ({r['amount']})" for r in entry.derived["receipts"]]
            lines.append(
                f"    made of (order total {entry.derived['order_total']}): {'; '.join(made) or 'no document'}"
            )
        if entry.decision is not None:
            lines += _decision_lines(entry.decision)
        else:
            lines.append("    no decision on audit.sync (not decided yet, dropped as a repeat, or dead-lettered)")
    return lines


# --- the index ---------------------------------------------------------------------------------------


def index_topics(prefix: str = "") -> list[str]:
    """The topics the index reads: every change event, the audit records and the results."""
    topics = [prefix + cdc_topic(system, entity) for system in System for entity in sorted(ENTITIES[system])]
    return [*topics, prefix + AUDIT, *(prefix + results_topic(system) for system in System)]


def names_of(topic: str, value: Any, headers: list[tuple[str, bytes]] | None = None) -> tuple[str, set[str]] | None:
    """The tenant and the identifiers one message names (``topic`` without the prefix); None: nothing to
    index (not JSON, no tenant)."""
    if not isinstance(value, dict):
        return None
    if topic.startswith("cdc.") and isinstance(value.get("payload"), dict):  # a Debezium envelope
        value = value["payload"]
        tenant = next((v.decode(errors="replace") for n, v in headers or () if n == TENANT), None)
    else:
        tenant = value.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        return None
    found: set[str] = set()
    if topic == AUDIT:
        found.add(str(value.get("record_id")))
        for command in value.get("commands") or []:
            if isinstance(command, dict):
                found |= {str(command.get("key") or ""), str(command.get("command_id") or "")}
    elif topic.startswith("results."):
        found |= {str(value.get(name) or "") for name in ("command_id", "target_id", "code")}
    else:
        for image in (value.get("after"), value.get("before")):
            if isinstance(image, dict):
                found |= _names(image)
                if image.get("order_id") not in (None, ""):
                    found.add(str(image["order_id"]))
    found -= {"", "None"}
    return (tenant, found) if found else None


SCHEMA = """
CREATE TABLE IF NOT EXISTS topic (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS indexed (
    topic INTEGER NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,          -- every message below it is indexed
    low_offset INTEGER NOT NULL DEFAULT 0, -- the partition's first retained offset when last looked
    low_ts INTEGER,                        -- the time of the message there (ms): what is older is gone
    PRIMARY KEY (topic, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS name (
    tenant TEXT NOT NULL, ident TEXT NOT NULL, topic INTEGER NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    PRIMARY KEY (tenant, ident, topic, partition, offset)) WITHOUT ROWID;
"""


def index_path(data_dir: Path, kafka: KafkaSettings) -> Path:
    """One index per broker and topic prefix, under ``LIENTHONG_DATA_DIR/history/``."""
    digest = hashlib.sha256(f"{kafka.bootstrap_servers}|{kafka.topic_prefix}".encode()).hexdigest()[:16]
    return data_dir / "history" / f"index-{digest}.sqlite"


def _headers(raw: object) -> list[tuple[str, bytes]]:
    pairs = raw if isinstance(raw, list) else []
    return [(str(name), value) for name, value in pairs if isinstance(value, bytes)]


class HistoryIndex:
    """Where each message naming an identifier of a tenant is, kept current incrementally."""

    def __init__(self, kafka: KafkaSettings, path: Path, timeout: float = 10.0) -> None:
        self.kafka, self.path, self.timeout = kafka, path, timeout
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA cache_size=-65536")  # 64 MB of pages: indexing touches the whole B-tree
            self.db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryIndexError(
                f"the history index {path} cannot be opened ({exc}); LIENTHONG_DATA_DIR says where it is kept"
            ) from None
        self._client: Consumer | None = None  # one client for indexing and fetching: one connection to set up
        self._topic_ids: dict[str, int] = {}
        self._topic_names: dict[int, str] = {}
        for topic_id, name in self.db.execute("SELECT id, name FROM topic"):
            self._topic_ids[name], self._topic_names[topic_id] = topic_id, name

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.db.close()

    def __enter__(self) -> HistoryIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _topic_id(self, name: str) -> int:
        if name not in self._topic_ids:
            self.db.execute("INSERT OR IGNORE INTO topic (name) VALUES (?)", (name,))
            (topic_id,) = self.db.execute("SELECT id FROM topic WHERE name = ?", (name,)).fetchone()
            self._topic_ids[name], self._topic_names[topic_id] = topic_id, name
        return self._topic_ids[name]

    def _consumer(self, **extra: Any) -> Consumer:
        return Consumer(
            confluent_config(
                self.kafka,
                {
                    "group.id": f"history-index-{uuid.uuid4()}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                    **extra,
                },
            )
        )

    def _reader(self) -> Consumer:
        if self._client is None:  # a few messages, at once: the broker need not wait to fill a fetch
            self._client = self._consumer(**{"fetch.wait.max.ms": 5})
        return self._client

    def _unassign(self, consumer: Consumer) -> None:
        try:
            consumer.unassign()
        except KafkaException:
            self._client = None  # a broken client: the next use makes another
            consumer.close()

    def _broker_error(self, exc: Exception) -> HistoryIndexError:
        return HistoryIndexError(unreachable(self.kafka, exc))

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index every message that reached the topics since the last time; returns how many were read.
        ``progress(read, behind)`` as it goes."""
        consumer = self._reader()
        try:
            try:
                listed = consumer.list_topics(timeout=self.timeout).topics
            except KafkaException as exc:
                raise self._broker_error(exc) from None
            wanted = [topic for topic in index_topics(self.kafka.topic_prefix) if topic in listed]
            if not wanted:
                raise HistoryIndexError(
                    f"no cdc.*, audit.sync or results.* topic on {self.kafka.bootstrap_servers} (prefix "
                    f"{self.kafka.topic_prefix!r}): run `lienthong topics create`"
                )
            stored = {
                (self._topic_names[t], p): (n, low)
                for t, p, n, low in self.db.execute("SELECT topic, partition, next_offset, low_offset FROM indexed")
            }
            start: list[TopicPartition] = []
            ends: dict[tuple[str, int], int] = {}
            lows: list[tuple[str, int, int]] = []
            every = [TopicPartition(topic, partition) for topic in wanted for partition in listed[topic].partitions]
            # every partition's first and end offsets in two requests (-2: earliest, -1: latest), not one each
            firsts = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, -2) for tp in every], self.timeout
            )
            lasts = consumer.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, -1) for tp in every], self.timeout
            )
            for first, last in zip(firsts, lasts, strict=True):
                topic, partition = first.topic, first.partition
                low, high = max(first.offset, 0), max(last.offset, 0)
                next_offset, known_low = stored.get((topic, partition), (0, 0))
                if high < next_offset:  # the topic was deleted and made again: index it anew
                    self._forget(topic, partition)
                    next_offset, known_low = 0, 0
                if low > known_low:
                    lows.append((topic, partition, low))
                begin = max(next_offset, low)
                if high > begin:
                    ends[(topic, partition)] = high
                    start.append(TopicPartition(topic, partition, begin))
                elif begin != next_offset or (topic, partition) not in stored:
                    self._done(topic, partition, begin)
            if lows:
                self._note_lows(consumer, lows)
            behind = sum(ends[(tp.topic, tp.partition)] - tp.offset for tp in start)
            if not start:
                self.db.commit()
                return 0
            return self._read(consumer, start, ends, behind, progress)
        except KafkaException as exc:
            raise self._broker_error(exc) from None
        except sqlite3.Error as exc:
            raise HistoryIndexError(f"the history index {self.path} cannot be written ({exc})") from None
        finally:
            self._unassign(consumer)

    def _forget(self, topic: str, partition: int) -> None:
        topic_id = self._topic_id(topic)
        self.db.execute("DELETE FROM name WHERE topic = ? AND partition = ?", (topic_id, partition))
        self.db.execute("DELETE FROM indexed WHERE topic = ? AND partition = ?", (topic_id, partition))

    def _done(self, topic: str, partition: int, next_offset: int) -> None:
        self.db.execute(
            "INSERT INTO indexed (topic, partition, next_offset) VALUES (?, ?, ?) "
            "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
            (self._topic_id(topic), partition, next_offset),
        )

    def _note_lows(self, consumer: Consumer, lows: list[tuple[str, int, int]]) -> None:
        """Retention deleted the start of these partitions: remember from when on they are whole (the
        time of their first retained message) and drop what the index said of the deleted messages."""
        consumer.assign([TopicPartition(topic, partition, low) for topic, partition, low in lows])
        first: dict[tuple[str, int], int] = {}
        wanted = {(topic, partition) for topic, partition, _ in lows}
        deadline = time.monotonic() + self.timeout
        while wanted - first.keys() and time.monotonic() < deadline:
            for message in consumer.consume(100, 0.5):
                where = (message.topic() or "", message.partition() or 0)
                if where in wanted and where not in first:
                    error = message.error()
                    if error is None:
                        first[where] = message.timestamp()[1]
                    elif error.code() == KafkaError._PARTITION_EOF:
                        first[where] = int(time.time() * 1000)  # everything it held is gone
        consumer.unassign()
        for topic, partition, low in lows:
            topic_id = self._topic_id(topic)
            self.db.execute(
                "DELETE FROM name WHERE topic = ? AND partition = ? AND offset < ?", (topic_id, partition, low)
            )
            self.db.execute(
                "INSERT INTO indexed (topic, partition, next_offset, low_offset, low_ts) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (topic, partition) DO UPDATE SET "
                "low_offset = excluded.low_offset, low_ts = excluded.low_ts",
                (topic_id, partition, low, low, first.get((topic, partition), int(time.time() * 1000))),
            )

    def _read(
        self,
        consumer: Consumer,
        start: list[TopicPartition],
        ends: dict[tuple[str, int], int],
        behind: int,
        progress: Callable[[int, int], None] | None,
    ) -> int:
        prefix = self.kafka.topic_prefix
        consumer.assign(start)
        read = 0
        rows: list[tuple[str, str, int, int, int]] = []
        reached: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + max(self.timeout, 30.0)

        def flush() -> None:
            rows.sort()  # in key order: each insert lands next to the last one in the B-tree
            self.db.executemany("INSERT OR IGNORE INTO name VALUES (?, ?, ?, ?, ?)", rows)
            for (topic, partition), next_offset in reached.items():
                self._done(topic, partition, next_offset)
            self.db.commit()
            rows.clear()
            reached.clear()

        while ends and time.monotonic() < deadline:
            for message in consumer.consume(2000, 0.5):
                topic, partition = message.topic() or "", message.partition() or 0
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and (message.offset() or 0) >= ends.get(
                        (topic, partition), 0
                    ):
                        reached[(topic, partition)] = ends.pop((topic, partition), message.offset() or 0)
                    continue
                deadline = time.monotonic() + max(self.timeout, 30.0)
                offset = message.offset() or 0
                read += 1
                reached[(topic, partition)] = offset + 1
                if offset + 1 >= ends.get((topic, partition), 0):
                    ends.pop((topic, partition), None)
                raw = message.value()
                if not raw:
                    continue
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                named = names_of(topic[len(prefix) :], value, _headers(message.headers()))
                if named is None:
                    continue
                tenant, idents = named
                topic_id = self._topic_id(topic)
                rows.extend((tenant, ident, topic_id, partition, offset) for ident in idents)
            if len(rows) >= 200_000 or not ends:
                flush()
            if progress is not None:
                progress(read, behind)
        flush()
        if ends:
            raise HistoryIndexError(
                f"indexing stopped answering on {self.kafka.bootstrap_servers}; try again "
                "(LIENTHONG_KAFKA_TIMEOUT sets how long to wait)"
            )
        return read

    def locate(self, tenant: str, idents: Iterable[str]) -> set[tuple[str, int, int]]:
        """(topic, partition, offset) of every indexed message of ``tenant`` naming one of ``idents``."""
        found: set[tuple[str, int, int]] = set()
        names = sorted(set(idents))
        for n in range(0, len(names), 500):
            chunk = names[n : n + 500]
            marks = ",".join("?" * len(chunk))
            for topic_id, partition, offset in self.db.execute(
                f"SELECT topic, partition, offset FROM name WHERE tenant = ? AND ident IN ({marks})",
                (tenant, *chunk),
            ):
                found.add((self._topic_names[topic_id], partition, offset))
        return found

    def tenants(self, limit: int = 21) -> list[str]:
        rows = self.db.execute("SELECT DISTINCT tenant FROM name ORDER BY tenant LIMIT ?", (limit,))
        return [tenant for (tenant,) in rows]

    def knows_tenant(self, tenant: str) -> bool:
        return self.db.execute("SELECT 1 FROM name WHERE tenant = ? LIMIT 1", (tenant,)).fetchone() is not None

    def retention(self, topics: Iterable[str] | None = None) -> Retention:
        """What retention has deleted, per topic (without the prefix), as of the last ``catch_up``."""
        gone: dict[str, int] = {}
        prefix = self.kafka.topic_prefix
        for topic_id, low_ts in self.db.execute("SELECT topic, low_ts FROM indexed WHERE low_offset > 0"):
            name = self._topic_names[topic_id][len(prefix) :]
            if topics is None or name in topics:
                gone[name] = max(gone.get(name, 0), int(low_ts or 0))
        return Retention(gone)

    def fetch(self, where: Iterable[tuple[str, int, int]]) -> Iterator[Message]:
        """The messages at these places, from the broker (each partition read from its first wanted offset,
        seeking over long gaps)."""
        wanted: dict[tuple[str, int], list[int]] = {}
        for topic, partition, offset in where:
            wanted.setdefault((topic, partition), []).append(offset)
        if not wanted:
            return
        for offsets in wanted.values():
            offsets.sort(reverse=True)  # popped from the end: the smallest first
        prefix = self.kafka.topic_prefix
        consumer = self._reader()
        try:
            assignment = [TopicPartition(t, p, offsets[-1]) for (t, p), offsets in wanted.items()]
            consumer.assign(assignment)
            consumer.resume(assignment)
            deadline = time.monotonic() + max(self.timeout, 30.0)
            while wanted and time.monotonic() < deadline:
                batch = consumer.consume(500, 0.01)  # consume waits the whole timeout unless 500 come
                if batch:
                    deadline = time.monotonic() + max(self.timeout, 30.0)
                for message in batch:
                    where_ = (message.topic() or "", message.partition() or 0)
                    if where_ not in wanted:
                        continue
                    offsets = wanted[where_]
                    offset = message.offset() or 0
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            del wanted[where_]  # the rest is no longer there
                        continue
                    while offsets and offsets[-1] < offset:
                        offsets.pop()  # deleted meanwhile, or an aborted transaction's
                    if offsets and offsets[-1] == offset:
                        offsets.pop()
                        raw = message.value()
                        try:
                            value = orjson.loads(raw) if raw else None
                        except orjson.JSONDecodeError:
                            value = None
                        if isinstance(value, dict):
                            if isinstance(value.get("payload"), dict) and where_[0].startswith(prefix + "cdc."):
                                value = _from_envelope(where_[0][len(prefix) :], value, message.headers())
                            yield Message(where_[0][len(prefix) :], where_[1], offset, message.timestamp()[1], value)
                    if not offsets:
                        del wanted[where_]
                        consumer.pause([TopicPartition(*where_)])
                    elif offsets[-1] - offset > 200:  # a long gap: seek over it
                        consumer.seek(TopicPartition(where_[0], where_[1], offsets[-1]))
        except KafkaException as exc:
            raise self._broker_error(exc) from None
        finally:
            self._unassign(consumer)


def _from_envelope(topic: str, value: dict[str, Any], headers: object) -> dict[str, Any]:
    """A Debezium message as a change event (as the worker reads it), for the story; else as it came."""
    _, system, entity = topic.split(".", 2)
    pairs = dict(_headers(headers))
    try:
        return decode_change_event(
            orjson.dumps(value), topic_system=system, topic_entity=entity, headers=pairs
        ).model_dump(mode="json")
    except (BadInput, ValueError):
        return value


def _follow(tenant: str, family: str, messages: Iterable[Message]) -> set[str]:
    """The identifiers messages of the record's family lead to: the linked record's ids and codes, the
    commands sent for it (their ids, to find their results)."""
    found: set[str] = set()
    for message in messages:
        value = message.value
        if value.get("tenant") != tenant:
            continue
        if message.topic == AUDIT:
            own = _family(value.get("system"), value.get("entity")) == family
            if own:
                found.add(str(value.get("record_id")))
            for command in value.get("commands") or []:
                if not isinstance(command, dict):
                    continue
                writes_here = _family(command.get("target"), command.get("entity")) == family
                if own or writes_here:
                    found.add(str(command.get("command_id") or ""))
                if writes_here:
                    found.add(str(command.get("key") or ""))
        elif message.topic.startswith("results."):
            if _family(value.get("target"), value.get("entity")) == family:
                found |= {str(value.get("target_id") or ""), str(value.get("code") or "")}
        elif message.topic.startswith("cdc.") and _family(value.get("system"), value.get("entity")) == family:
            found |= _image_names(value)
    return found - {"", "None"}


def history(
    index: HistoryIndex,
    tenant: str,
    entity: str,
    identifier: str,
    progress: Callable[[int, int], None] | None = None,
) -> History:
    """Bring the index up to date, then gather the record's messages and tell its story."""
    if entity not in entities():
        raise HistoryIndexError(f"no entity {entity!r}; the entities are: {', '.join(entities())}")
    indexed = index.catch_up(progress)
    if not index.knows_tenant(tenant):
        seen = index.tenants()
        raise HistoryIndexError(
            f"no message of tenant {tenant!r} on {index.kafka.topic_prefix}cdc.*, audit.sync or results.*: check "
            f"the tenant's name (tenants there: {', '.join(seen[:20]) or 'none'}{' …' if len(seen) > 20 else ''})"
        )
    family = link_family(System.ACCT, entity)
    idents: set[str] = {identifier}
    asked: set[str] = set()
    fetched: set[tuple[str, int, int]] = set()
    messages: list[Message] = []
    for _ in range(8):  # the identifiers lead from record to linked record to commands and results
        new = idents - asked
        if not new:
            break
        asked |= new
        where = index.locate(tenant, new) - fetched
        fetched |= where
        got = list(index.fetch(where))
        messages.extend(got)
        idents |= _follow(tenant, family, got)
    # the topics the record's story is read from: the family's changes on both sides (an order's vouchers
    # and receipts too), the decisions and the results; what retention cut from any of them is said
    topics = {m.topic for m in messages} | {AUDIT} | {results_topic(system) for system in System}
    topics |= {
        cdc_topic(system, name)
        for system in System
        for name in ENTITIES[system]
        if _family(system.value, name) == family or (family == "sale_order" and name in DOCUMENT_ENTITIES)
    }
    story = build(tenant, entity, identifier, messages, index.retention(topics))
    story.indexed = indexed
    return story


class KeptIndex:
    """The index of a long-running process (the operator's page): brought up to date every ``every``
    seconds in a thread, so that a question finds it current; one question or update at a time."""

    def __init__(self, kafka: KafkaSettings, data_dir: Path, every: float = 5.0) -> None:
        self.kafka, self.path, self.every = kafka, index_path(data_dir, kafka), every
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.index: HistoryIndex | None = None
        self.thread = threading.Thread(target=self._run, name="history-index", daemon=True)

    def _open(self) -> HistoryIndex:
        if self.index is None:
            self.index = HistoryIndex(self.kafka, self.path)
        return self.index

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                with self.lock:
                    self._open().catch_up()
            except HistoryIndexError:
                pass  # no broker or no topics yet: the next round tries again, a question says why
            self.stopping.wait(self.every)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        with self.lock:
            if self.index is not None:
                self.index.close()
                self.index = None

    def story(self, tenant: str, entity: str, identifier: str) -> History:
        with self.lock:
            return history(self._open(), tenant, entity, identifier)

    def text(self, tenant: str, entity: str, identifier: str) -> str:
        """The story for the operator's page, or the one line saying why there is none."""
        try:
            story = self.story(tenant, entity, identifier)
        except HistoryIndexError as exc:
            return str(exc)
        if not story.found:
            return f"no {entity} {identifier!r} of tenant {tenant} is retained"
        return "\n".join(format_history(story))
