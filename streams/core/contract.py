"""The wire contract as code: change events in, commands, results and audit records out.

Documented in ``docs/contract.md``. Pure: no faust, no Kafka client. JSON goes through
orjson; ``decode_change_event`` turns raw bytes (plain or Debezium envelope) into a validated
``ChangeEvent`` or raises ``BadInput`` naming what was wrong and where.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from common.names import (
    ACTION,
    ENTITIES,
    ERROR_KIND,
    ERROR_MESSAGE,
    EVENT_ID,
    FAILED_AT_MS,
    ORIGIN,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    TENANT,
    System,
)
from streams.core.errors import BadInput, json_pointer, masked
from streams.core.validation import check_event_id, check_key, check_record, check_tenant

SCHEMA_VERSION = 1


class Action(StrEnum):
    CREATE = "create"
    IMPORT = "import"
    CLONE = "clone"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    PULL = "pull"
    PROPOSE_REVENUE = "propose_revenue"
    WITHDRAW_REVENUE = "withdraw_revenue"
    RECORD_REVENUE = "record_revenue"
    REJECT_REVENUE = "reject_revenue"
    PROPOSE_REVENUE_CANCEL = "propose_revenue_cancel"
    APPROVE = "approve"
    REJECT = "reject"
    ISSUE = "issue"
    REFUSE_ISSUE = "refuse_issue"
    CANCEL = "cancel"
    WITHDRAW_ISSUE = "withdraw_issue"
    ASSIGN_INVOICE_NO = "assign_invoice_no"
    PUBLISH_EINVOICE = "publish_einvoice"


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"


# By name, for decoding: looking up an enum by value costs more than a dict.
ENTITY_NAMES: dict[str, frozenset[str]] = {system.value: entities for system, entities in ENTITIES.items()}
ACTION_NAMES = frozenset(action.value for action in Action)


class Where(NamedTuple):
    """Where a message was read: what a dead letter's ``origin.*`` headers say, and what an error about
    it names (``topic@partition:offset``, formatted only if something is wrong with it: formatting costs).
    A named tuple: made for every input, and cheaper to make than a frozen dataclass."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}@{self.partition}:{self.offset}"


class ChangeEvent(BaseModel):
    """One change of one record in one system (contract: "Change event (CDC)")."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: int
    event_id: str = Field(min_length=1)
    tenant: str = Field(min_length=1)
    system: System
    entity: str
    op: Literal["c", "u", "d", "r"]
    action: Action | None = None
    origin: Literal["user", "sync"] = "user"
    ts_ms: int
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    merged_ids: list[str] | None = None

    @property
    def record(self) -> dict[str, Any]:
        """The record as it is now (``after``), or as it was when deleted (``before``)."""
        return self.after if self.after is not None else (self.before or {})

    @property
    def record_id(self) -> str:
        record_id = self.record.get("id")
        return "" if record_id is None else str(record_id)


def change_event_json(
    *,
    event_id: str,
    tenant: str,
    system: System,
    entity: str,
    op: str,
    ts_ms: int,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    origin: str = "user",
    action: str | None = None,
) -> dict[str, Any]:
    """A change event as its producers write it (the capture services and webhooks, backfill, the
    benchmarks): the contract's envelope, ``SCHEMA_VERSION``; ``action`` only where the producer knows it."""
    event: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "tenant": tenant,
        "system": system,
        "entity": entity,
        "op": op,
        "origin": origin,
        "ts_ms": ts_ms,
        "before": before,
        "after": after,
    }
    if action:
        event["action"] = action
    return event


# Commands and audit records are built on every event: plain slotted dataclasses, which orjson
# writes directly (no per-event validation of what the processor itself built). Pydantic validates
# them where they are read from the wire: ``parse_command``.


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandKey:
    id: str | None = None
    code: str | None = None

    def as_text(self) -> str:
        """The target record key of the command topic's message key.

        The code when there is one, else the id: a record's commands keep one message key before and
        after it is linked (X-3), so they stay on one partition, in order (X-5).
        """
        return self.code or self.id or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSource:
    system: System
    entity: str
    id: str
    event_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """What the processor asks a connector to write (contract: "Command")."""

    schema_version: int = SCHEMA_VERSION
    command_id: str
    tenant: str
    target: System
    entity: str
    op: Op
    key: CommandKey
    source: CommandSource
    fields: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    rule: str
    depends_on: list[str] = field(default_factory=list)
    ts_ms: int

    @property
    def message_key(self) -> str:
        """``<tenant>:<entity>:<target record key>``."""
        return f"{self.tenant}:{self.entity}:{self.key.as_text()}"


class ResultError(BaseModel):
    kind: str
    message: str


class Result(BaseModel):
    """A connector's report of one command (contract: "Result")."""

    command_id: str
    tenant: str
    target: System
    entity: str
    status: Literal["applied", "duplicate", "rejected", "failed"]
    target_id: str | None = None
    code: str | None = None
    error: ResultError | None = None
    attempts: int = 1
    ts_ms: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditCommand:
    command_id: str
    rule: str
    target: System
    entity: str
    op: Op
    key: str

    @classmethod
    def of(cls, command: Command) -> AuditCommand:
        return cls(
            command_id=command.command_id,
            rule=command.rule,
            target=command.target,
            entity=command.entity,
            op=command.op,
            key=command.key.as_text(),
        )


class Note(StrEnum):
    """Why a change produced what it did, as a machine-readable tag of the audit record."""

    NO_RULE = "no_rule"  # no rule of the matrix takes this action on this entity (for this order target)
    RULE_NONE = "rule_none"  # the matched rule's effect is none
    ECHO = "echo"  # written by this integration (origin = sync)
    CONDITION = "condition"  # the rule's condition does not hold
    NOT_LINKED = "not_linked"  # the rule needs a linked record and there is none
    UNADDRESSABLE = "unaddressable"  # the target record has neither a code nor a link
    UNCHANGED = "unchanged"  # nothing the rule writes is new
    DERIVED = "derived"  # the rule is computed from the order's aggregates
    HELD = "held"  # a document counts once its order arrives
    AGGREGATES_UNCHANGED = "aggregates_unchanged"  # aggregates updated, no derived value changed
    MERGE_ABSORBED = "merge_absorbed"  # CUS-5: absorbed records stay in acct
    PULL_UNKNOWN = "pull_unknown"  # CUS-10: some requested CRM customers are not known
    NOTHING_TO_PULL = "nothing_to_pull"  # CUS-10: no CRM customer to pull
    NO_CATEGORY = "no_category"  # PP-1: the policy selects no category and dropped none
    NOT_A_COPY = "not_a_copy"  # PP-2: the edited CRM policy is not a copy from acct
    POLICY_CONFLICT = "policy_conflict"  # PP-2: a read-only copy was edited; the acct version is re-sent
    NO_TOTAL = "no_total"  # CT-7: the order has no total to cancel
    SWITCHED_OFF = "switched_off"  # the tenant's settings switch the rule off
    FIELD_NOT_MAPPED = "field_not_mapped"  # a field mapping of the tenant could not convert the value
    DEPENDENCY_COMPLETED = "dependency_completed"  # a dependency sent by code only gets its fields


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditNote:
    tag: Note
    rule: str | None
    text: str


@dataclass(slots=True, kw_only=True)
class AuditRecord:
    """One decision per change: the rules matched, the commands emitted, or the reason for none.

    ``notes`` say the same as ``reason`` as tags a program can read; ``reason`` is for people.
    """

    schema_version: int = SCHEMA_VERSION
    tenant: str
    system: System
    entity: str
    record_id: str
    event_id: str
    action: str
    origin: str
    rule: str | None = None  # the matrix rule the change matched (first of ``rules``), if any
    rules: list[str] = field(default_factory=list)
    commands: list[AuditCommand] = field(default_factory=list)
    reason: str | None = None
    notes: list[AuditNote] = field(default_factory=list)
    # the revision of the tenant's settings (config.tenants) the decision was made with; 0: the defaults
    settings_revision: int = 0
    ts_ms: int

    @property
    def message_key(self) -> str:
        return f"{self.tenant}:{self.entity}:{self.record_id}"

    def has(self, tag: Note) -> bool:
        return any(note.tag is tag for note in self.notes)


def named(value: Any) -> str | None:
    """A record id or code as text, or None when there is none (``0`` is an id; ``""`` is not)."""
    if value is None or value == "":
        return None
    return str(value)


def dumps(value: BaseModel | Command | AuditRecord) -> bytes:
    """A contract value as JSON bytes (pydantic models and the core's dataclasses alike)."""
    if isinstance(value, BaseModel):
        return orjson.dumps(value.model_dump(mode="json"))
    return orjson.dumps(value)


_COMMAND = TypeAdapter(Command)


def parse_command(raw: bytes | str) -> Command:
    """A command from the wire, validated (pydantic's ``ValidationError`` says what is wrong)."""
    return _COMMAND.validate_json(raw)


def dead_letter_headers(
    kind: str, message: str, *, topic: str, partition: int, offset: int, failed_at_ms: int
) -> list[tuple[str, bytes]]:
    """The contract's dead-letter headers, for every producer of dead letters (agents and connectors);
    ``failed_at_ms`` is the caller's clock (the core reads none)."""
    return [
        (ERROR_KIND, kind.encode()),
        (ERROR_MESSAGE, message.encode("utf-8", "replace")),
        (ORIGIN_TOPIC, topic.encode()),
        (ORIGIN_PARTITION, str(partition).encode()),
        (ORIGIN_OFFSET, str(offset).encode()),
        (FAILED_AT_MS, str(failed_at_ms).encode()),
    ]


def command_id(*, tenant: str, event_id: str, rule: str, target: str, entity: str, op: str, key: str) -> str:
    """Deterministic id: the same cause (event, rule, target record) always gives the same id."""
    cause = orjson.dumps([tenant, event_id, rule, target, entity, op, key])
    return hashlib.sha256(cause).hexdigest()


# --- decoding -------------------------------------------------------------------------------


def _header(headers: Mapping[str, bytes | str | None] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _describe(error: ValidationError) -> str:
    """Each problem with the field it is in and the value found there."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "(event)"
        found = masked(item.get("input"))  # a payload value: personal data, shown masked
        parts.append(f"{where}: {item['msg']} (found {found})")
    return "; ".join(parts)


def _pointer(error: ValidationError) -> str:
    """The JSON pointer of the first problem, as a JSON Schema validator names it: the field's own, or for
    a missing field its parent's (where ``required`` fails)."""
    first = error.errors()[0]
    loc = first["loc"][:-1] if first["type"] == "missing" else first["loc"]
    return json_pointer(*loc)


def _there(document: dict[str, Any], name: str) -> str:
    """The pointer of a top-level field, or of the event itself when it lacks the field."""
    return json_pointer(name) if name in document else ""


# Where a Debezium connector read a change in its database's log, by connector: Postgres (lsn,
# txId), MySQL (file, pos, row, gtid), SQL Server (change_lsn, commit_lsn, event_serial_no), Oracle
# (scn, commit_scn, rs_id, ssn), MongoDB (ord, h), Db2 (change_lsn, commit_lsn).
DEBEZIUM_POSITION = (
    "lsn", "txId", "sequence", "file", "pos", "row", "gtid", "change_lsn", "commit_lsn", "event_serial_no",
    "scn", "commit_scn", "rs_id", "ssn", "ord", "h",
)  # fmt: skip


def _debezium_event_id(payload: dict[str, Any]) -> str | None:
    """A change's id from where the connector read it: Debezium re-sends a change after a restart (at
    least once) from the same log position, so a re-sent change gets the same id and is dropped as a
    duplicate. None when the source block names no position."""
    source = payload.get("source")
    if not isinstance(source, dict):
        return None
    position = {name: source[name] for name in DEBEZIUM_POSITION if source.get(name) is not None}
    if not position:
        return None
    record = payload.get("after") or payload.get("before") or {}
    identity = [
        source.get("connector"), source.get("name"), source.get("db"), source.get("schema"), source.get("table"),
        source.get("ts_ms"), position, payload.get("op"),
        record.get("id") if isinstance(record, dict) else None,
    ]  # fmt: skip
    try:
        cause = orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return None
    return "dbz-" + hashlib.sha256(cause).hexdigest()[:32]


def _from_debezium(
    payload: dict[str, Any],
    *,
    headers: Mapping[str, Any] | None,
    topic_system: str,
    topic_entity: str,
    topic: str,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    source = payload.get("source") or {}
    tenant = _header(headers, TENANT)
    if not tenant:
        raise BadInput("schema", f"Debezium event on {topic}@{partition}:{offset} has no {TENANT!r} header")
    ts_ms = source.get("ts_ms", payload.get("ts_ms"))
    event_id = _header(headers, EVENT_ID) or _debezium_event_id(payload) or f"{topic}:{partition}:{offset}"
    return {
        "schema_version": SCHEMA_VERSION,
        "event_id": event_id,
        "tenant": tenant,
        "system": topic_system,
        "entity": topic_entity,
        "op": payload.get("op"),
        "action": _header(headers, ACTION),
        "origin": _header(headers, ORIGIN) or "user",
        "ts_ms": ts_ms,
        "before": payload.get("before"),
        "after": payload.get("after"),
    }


class _Unchecked:
    """The message key was not given: there is no message (a test, a tool)."""


UNCHECKED = _Unchecked()


def decode_change_event(
    raw: bytes | None,
    *,
    topic_system: str,
    topic_entity: str,
    topic: str = "",
    partition: int = -1,
    offset: int = -1,
    headers: Mapping[str, Any] | None = None,
    key: _Unchecked | bytes | None = UNCHECKED,
) -> ChangeEvent:
    """Bytes from ``cdc.<system>.<entity>`` -> a validated ChangeEvent, or BadInput saying why not.

    ``key``: the message's key, checked against the event (``streams.core.validation``); a caller
    with no message (a test, a tool) leaves it out.
    """
    # (not ``common.names.cdc_topic``, which names a System's topic: this system may be none of them)
    where = Where(topic or f"cdc.{topic_system}.{topic_entity}", partition, offset)
    entities = ENTITY_NAMES.get(topic_system)
    if entities is None:
        raise BadInput("unknown_system", f"topic {where} names system {topic_system!r}; known: crm, acct")
    if topic_entity not in entities:
        raise BadInput(
            "unknown_entity",
            f"topic {where} names entity {topic_entity!r}, not an entity of {topic_system} "
            f"(known: {', '.join(sorted(entities))})",
        )
    if not raw:
        raise BadInput("decode", f"empty message on {where}")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput("decode", f"not JSON on {where}: {exc}") from None
    if not isinstance(document, dict):
        raise BadInput("decode", f"expected a JSON object on {where}, got {type(document).__name__}")

    from_debezium = "schema_version" not in document and (
        isinstance(document.get("payload"), dict)
        or (
            "op" in document
            and ("before" in document or "after" in document)
            and ("source" in document or "tenant" not in document)
        )
    )
    if "schema_version" not in document and isinstance(document.get("payload"), dict):
        document = _from_debezium(
            document["payload"],
            headers=headers,
            topic_system=topic_system,
            topic_entity=topic_entity,
            topic=topic,
            partition=partition,
            offset=offset,
        )
    elif (
        "schema_version" not in document
        and "op" in document
        and ("before" in document or "after" in document)
        and ("source" in document or "tenant" not in document)
    ):
        # a bare Debezium payload (no envelope, no schema block); a contract event that only lacks
        # schema_version still carries its tenant and is reported as such below
        document = _from_debezium(
            document,
            headers=headers,
            topic_system=topic_system,
            topic_entity=topic_entity,
            topic=topic,
            partition=partition,
            offset=offset,
        )

    version = document.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BadInput(
            "schema_version",
            f"event on {where} has schema_version {version!r}; this processor reads version {SCHEMA_VERSION}",
            _there(document, "schema_version"),
        )
    action = document.get("action")
    if action is not None and (not isinstance(action, str) or action not in ACTION_NAMES):
        raise BadInput(
            "unknown_action",
            f"event {document.get('event_id')!r} on {where} has action {action!r}; known: "
            + ", ".join(a.value for a in Action),
            "/action",
        )
    entity = document.get("entity")
    if entity is not None and entity != topic_entity:
        kind = "topic_mismatch" if isinstance(entity, str) and entity in entities else "unknown_entity"
        raise BadInput(
            kind, f"event on {where} says entity {entity!r} but the topic is for {topic_entity!r}", "/entity"
        )
    if document.get("system") not in (None, topic_system):
        raise BadInput(
            "topic_mismatch",
            f"event on {where} says system {document.get('system')!r} but the topic is for {topic_system!r}",
            "/system",
        )
    check_tenant(document.get("tenant"), f"event on {where}", _there(document, "tenant"))
    try:
        event = ChangeEvent.model_validate(document)
    except ValidationError as exc:
        raise BadInput(
            "schema", f"event on {where} does not fit the change-event schema: {_describe(exc)}", _pointer(exc)
        ) from None
    if event.op in ("c", "r", "u") and event.after is None:
        raise BadInput(
            "schema", f"event {event.event_id!r} on {where}: op {event.op!r} needs 'after'", _there(document, "after")
        )
    if event.op == "d" and event.before is None:
        raise BadInput(
            "schema", f"event {event.event_id!r} on {where}: op 'd' needs 'before'", _there(document, "before")
        )
    if not event.record_id:
        side = "after" if event.after is not None else "before"
        raise BadInput(
            "schema",
            f"event {event.event_id!r} on {where}: the record has no 'id'",
            json_pointer(side, "id") if "id" in event.record else json_pointer(side),
        )
    said = f"event {event.event_id!r} on {where}"
    check_event_id(event.event_id, f"event on {where}")
    check_record(event.before, "before", said)
    check_record(event.after, "after", said)
    if not isinstance(key, _Unchecked) and not from_debezium:
        check_key(key, event.tenant, event.record_id, said)
    return event
