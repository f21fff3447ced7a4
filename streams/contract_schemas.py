"""The wire contract as JSON Schemas and an AsyncAPI 3 document, generated from the project's own code.

``docs/contract/`` holds what this builds (``lienthong contract generate`` writes it, a test keeps it
current): a JSON Schema (draft-07, the dialect AsyncAPI's schema object extends and every language has
a validator for) per message value, made from the models of ``streams.core.contract`` with the checks of
``streams.core.validation`` added from that module's own constants, and ``asyncapi.yaml``, every topic
of ``streams.topics`` and the processor's own ones with their keys, headers (``common.names``),
partitions and cleanup policy, its payloads by reference to the schemas. Nothing here is written twice:
a field, an entity, an action, a header or a topic comes from where the code defines it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

from common import names
from common.names import ENTITIES, System
from streams.core import validation
from streams.core.contract import SCHEMA_VERSION, Action, AuditRecord, ChangeEvent, Command, Result
from streams.core.rules import ORDER_TARGETS, RuleBook, load_rules
from streams.core.sync_settings import SETTINGS_VERSIONS, SyncSettings
from streams.settings import AppIdSetting, TopicPartitionsSetting, TopicReplicationFactorSetting
from streams.topics import TopicSpec, contract_topics

DRAFT = "http://json-schema.org/draft-07/schema#"
ASYNCAPI_VERSION = "3.1.0"
KAFKA_BINDING = "0.5.0"
# Where the schemas are, relative to the AsyncAPI document (docs/contract/).
SCHEMA_DIR = "schemas"

# The file of each message value's schema, under SCHEMA_DIR.
CHANGE_EVENT = "change-event.json"
COMMAND = "command.json"
RESULT = "result.json"
AUDIT_RECORD = "audit-record.json"
TENANT_SETTINGS = "tenant-settings.json"
# A change event on one cdc topic: cdc/<system>.<entity>.json.
CDC_DIR = "cdc"


def cdc_schema_file(system: System, entity: str) -> str:
    return f"{CDC_DIR}/{system}.{entity}.json"


# --- the checks of streams.core.validation, as schema ------------------------------------------


def _anchored(pattern: re.Pattern[str]) -> str:
    """A fullmatch pattern of ``validation`` as a JSON Schema pattern (which searches)."""
    return f"^(?:{pattern.pattern})$"


# Printable, as ``str.isprintable`` (ids, codes, event ids): no control characters. JSON Schema patterns
# are ECMA-262 regular expressions without Unicode classes, so the other characters Python counts as
# unprintable (format characters, separators other than the space) are refused by the processor only.
PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _id_schema() -> dict[str, Any]:
    return {
        "description": "a record id or code: 1 to 256 printable characters, or an integer",
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": validation.LONGEST_ID, "pattern": PRINTABLE},
            {"type": "integer"},
        ],
    }


def _amount_schema(*, quantity: bool) -> dict[str, Any]:
    bound = float(validation.LARGEST_INTEGER)
    choices: list[dict[str, Any]] = [
        {"type": "string", "pattern": _anchored(validation.DECIMAL)},
        {"type": "integer", "exclusiveMinimum": -bound, "exclusiveMaximum": bound},
    ]
    if quantity:
        choices.append({"type": "number", "exclusiveMinimum": -bound, "exclusiveMaximum": bound})
        text = 'a quantity: a decimal string like "2.5", an integer, or a JSON number'
    else:
        text = 'money: a decimal string like "12.5" (ASCII digits, no exponent) or an integer; never a JSON float'
    return {"description": text, "anyOf": [*choices, {"type": "null"}]}


def _field_schemas(*, nested: bool) -> dict[str, Any]:
    """The checked fields of a record (``nested``: of one of its lines, prices, revenue entries)."""
    nullable_id = {**_id_schema(), "anyOf": [*_id_schema()["anyOf"], {"type": "null"}]}
    state = {
        "description": "a state: a string, a number, a boolean or null; never an object or a list",
        "type": ["string", "number", "boolean", "null"],
    }
    properties: dict[str, Any] = {}
    for name in validation.ID_FIELDS:
        properties[name] = nullable_id
    for name in validation.MONEY_FIELDS:
        properties[name] = _amount_schema(quantity=False)
    for name in validation.QUANTITY_FIELDS:
        properties[name] = _amount_schema(quantity=True)
    for name in validation.STATE_FIELDS:
        properties[name] = state
    for name in validation.CODE_LIST_FIELDS:
        properties[name] = {"type": ["array", "null"], "items": _id_schema()}
    for name in validation.OBJECT_LIST_FIELDS:
        items: dict[str, Any] = (
            {"type": "object"} if nested or name not in validation.NESTED else {"$ref": "#/definitions/RecordItem"}
        )
        properties[name] = {"type": ["array", "null"], "items": items}
    return properties


def _record_schema(*, nested: bool) -> dict[str, Any]:
    # before and after may be null: said here rather than as anyOf [record, null], so that a validator's
    # best match for a wrong field is the field itself, not "is not null"
    return {
        "type": "object" if nested else ["object", "null"],
        "additionalProperties": True,
        "properties": _field_schemas(nested=nested),
    }


# --- the message values -------------------------------------------------------------------------


def _draft07(schema: dict[str, Any], title: str, description: str) -> dict[str, Any]:
    """Pydantic's JSON Schema (2020-12 ``$defs``) in draft-07 spelling, with a title and a description."""
    text = _refs_to_definitions(schema)
    definitions = text.pop("$defs", {})
    text.pop("title", None)
    text.pop("description", None)
    out: dict[str, Any] = {"$schema": DRAFT, "title": title, "description": description, **text}
    if definitions:
        out["definitions"] = definitions
    return out


def _refs_to_definitions(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (item.replace("#/$defs/", "#/definitions/") if key == "$ref" else _refs_to_definitions(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_refs_to_definitions(item) for item in value]
    return value


def _schema_version(schema: dict[str, Any]) -> None:
    """``schema_version``: the integer ``SCHEMA_VERSION``, always written."""
    schema["properties"]["schema_version"] = {
        "description": f"the integer {SCHEMA_VERSION}",
        "type": "integer",
        "const": SCHEMA_VERSION,
    }
    if "schema_version" not in schema["required"]:
        schema["required"].insert(0, "schema_version")


def _model_schema(model: type[BaseModel] | TypeAdapter[Any]) -> dict[str, Any]:
    if isinstance(model, TypeAdapter):
        return model.json_schema()
    return model.model_json_schema()


def change_event_schema() -> dict[str, Any]:
    schema = _draft07(
        _model_schema(ChangeEvent),
        "Change event",
        "One change of one record in one system, on `cdc.<system>.<entity>` (docs/contract.md, 'Change event'). "
        "Checked as the processor checks it (streams/core/validation.py); a Debezium message is read otherwise.",
    )
    properties = schema["properties"]
    _schema_version(schema)
    properties["event_id"] = {
        "description": "unique per change: 1 to 256 printable characters",
        "type": "string",
        "minLength": 1,
        "maxLength": validation.LONGEST_ID,
        "pattern": PRINTABLE,
    }
    properties["tenant"] = {
        "description": "the AMIS company: 1 to 64 ASCII letters, digits, '.', '_', '-', starting with a letter or "
        "digit; no ':'",
        "type": "string",
        "pattern": _anchored(validation.TENANT_ID),
    }
    properties["entity"] = {
        "description": "the topic's entity",
        "type": "string",
        "enum": sorted({entity for system in System for entity in ENTITIES[system]}),
    }
    for side in ("before", "after"):
        properties[side] = {"$ref": "#/definitions/Record"}
    properties["merged_ids"] = {"type": ["array", "null"], "items": _id_schema()}
    schema["definitions"]["Record"] = _record_schema(nested=False)
    schema["definitions"]["RecordItem"] = _record_schema(nested=True)
    # The record (after; before for a delete) is there and carries its id.
    with_id: dict[str, Any] = {
        "type": "object",
        "required": ["id"],
        "properties": {"id": _id_schema()},
    }
    schema["allOf"] = [
        {
            "if": {"properties": {"op": {"enum": ["c", "u", "r"]}}},
            "then": {"required": ["after"], "properties": {"after": with_id}},
        },
        {
            "if": {"properties": {"op": {"const": "d"}}},
            "then": {
                "required": ["before"],
                "properties": {"before": {"type": "object"}},
                # the record is after when there is one, else before
                "if": {"required": ["after"], "properties": {"after": {"type": "object"}}},
                "then": {"properties": {"after": with_id}},
                "else": {"properties": {"before": with_id}},
            },
        },
    ]
    return schema


def cdc_schema(system: System, entity: str, rules: RuleBook) -> dict[str, Any]:
    """A change event on ``cdc.<system>.<entity>``: the change event, of the topic's system and entity, with an
    explicit action only one that means something for the entity (``RuleBook.accepts``; X-6)."""
    actions = [action.value for action in Action if rules.accepts(system, entity, action)]
    return {
        "$schema": DRAFT,
        "title": f"Change event on {names.cdc_topic(system, entity)}",
        "description": f"A change event (../{CHANGE_EVENT}) of {system} {entity} records, as the processor takes "
        f"it from {names.cdc_topic(system, entity)}. Its key: `<tenant>:<record id>`.",
        "allOf": [{"$ref": f"../{CHANGE_EVENT}"}],
        "properties": {
            "system": {"const": system.value},
            "entity": {"const": entity},
            "action": {
                "description": "given: one that means something for the entity (a lifecycle action, one a rule "
                "takes, or one that feeds an order's aggregates); absent: derived",
                "enum": [*actions, None],
            },
        },
    }


def command_schema() -> dict[str, Any]:
    schema = _draft07(
        _model_schema(TypeAdapter(Command)),
        "Command",
        "What the processor asks a connector to write, on `commands.<target>` (docs/contract.md, 'Command').",
    )
    _schema_version(schema)
    return schema


def result_schema() -> dict[str, Any]:
    return _draft07(
        _model_schema(Result),
        "Result",
        "A connector's report of one command, on `results.<target>` (docs/contract.md, 'Result').",
    )


def audit_record_schema() -> dict[str, Any]:
    schema = _draft07(
        _model_schema(TypeAdapter(AuditRecord)),
        "Audit record",
        "One record per decided change, on audit.sync (docs/contract.md, 'Audit record').",
    )
    _schema_version(schema)
    return schema


def tenant_settings_schema() -> dict[str, Any]:
    """What ``streams.core.sync_settings.parse_tenant_settings`` accepts: the ``SyncSettings`` model, version 1
    (``order_target`` and any other field, ignored) or 2 (revision, rules switched off, field mappings, no
    other field). Which rules exist and may be switched off, and which fields a system takes, only the
    processor and ``lienthong tenant set`` check."""
    schema = _draft07(
        _model_schema(SyncSettings),
        "Tenant settings",
        "One compacted record per tenant on config.tenants, keyed by the tenant (docs/contract.md, "
        "'Tenant settings'); a null value (tombstone) removes them.",
    )
    properties = schema["properties"]
    properties["schema_version"] = {
        "description": "1 (order_target only) or 2 (revision, rules_off, field_mappings); absent: 1",
        "type": "integer",
        "enum": list(SETTINGS_VERSIONS),
    }
    properties["tenant"] = {"description": "the message key, when given", "type": "string"}
    properties["order_target"] = {
        "description": "what a CRM order becomes in accounting",
        "type": "string",
        "enum": list(ORDER_TARGETS),
    }
    properties["rules_off"] = {
        "description": "rule ids (docs/matrix.md) that send nothing for this tenant; version 2",
        "type": "array",
        "items": {"type": "string", "pattern": "^(CUS|CAT|PRD|PP|QUO|SO|CT|INV)-[0-9]+$"},
        "uniqueItems": True,
    }
    v2_only = ["revision", "rules_off", "field_mappings"]
    schema["allOf"] = [
        {
            # version 1 (or none): none of version 2's fields
            "if": {"properties": {"schema_version": {"const": 1}}},
            "then": {"not": {"anyOf": [{"required": [name]} for name in v2_only]}},
        },
        {
            # version 2: only its own fields
            "if": {"properties": {"schema_version": {"const": 2}}, "required": ["schema_version"]},
            "then": {"propertyNames": {"enum": ["schema_version", "tenant", "order_target", *v2_only]}},
        },
    ]
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    """Every message value's schema, by its file name under ``schemas/``."""
    rules = load_rules()
    return {
        CHANGE_EVENT: change_event_schema(),
        **{
            cdc_schema_file(system, entity): cdc_schema(system, entity, rules)
            for system in System
            for entity in sorted(ENTITIES[system])
        },
        COMMAND: command_schema(),
        RESULT: result_schema(),
        AUDIT_RECORD: audit_record_schema(),
        TENANT_SETTINGS: tenant_settings_schema(),
    }


# --- headers and keys ---------------------------------------------------------------------------


def _header(description: str, *, digits: bool = False) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string", "description": description}
    if digits:
        value["pattern"] = "^-?[0-9]+$"
    return value


def _headers(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "description": "Kafka record headers (UTF-8 text)",
        "additionalProperties": True,
        "properties": properties,
    }
    if required:
        schema["required"] = required
    return schema


def dead_letter_headers() -> dict[str, Any]:
    return _headers(
        {
            names.ERROR_KIND: _header("the kind of problem (docs/contract.md, 'Dead letters')"),
            names.ERROR_MESSAGE: _header(
                "what was wrong, naming the topic, partition and offset; for a change event that does not fit its "
                'schema, also the JSON pointer of the field, as (JSON pointer "/after/lines/0/quantity")'
            ),
            names.ORIGIN_TOPIC: _header("the topic the original was read from"),
            names.ORIGIN_PARTITION: _header("its partition", digits=True),
            names.ORIGIN_OFFSET: _header("its offset", digits=True),
            names.FAILED_AT_MS: _header("when it was dead-lettered, ms since the epoch", digits=True),
            names.TRUNCATED: {**_header("only when the original was too large to keep whole"), "const": "true"},
            names.ORIGINAL_BYTES: _header("the original's size, when truncated", digits=True),
        },
        [
            names.ERROR_KIND,
            names.ERROR_MESSAGE,
            names.ORIGIN_TOPIC,
            names.ORIGIN_PARTITION,
            names.ORIGIN_OFFSET,
            names.FAILED_AT_MS,
        ],
    )


def _replayed() -> dict[str, Any]:
    return {names.REPLAYED_FROM: _header("written back by `lienthong dlq replay`: `<dlq topic>:<partition>:<offset>`")}


def change_headers() -> dict[str, Any]:
    return _headers(
        {
            names.TENANT: _header("a Debezium message's tenant (required there; a contract event has it in its value)"),
            names.EVENT_ID: _header("a Debezium message's event id (default: from its source position)"),
            names.ACTION: _header("a Debezium message's business action"),
            names.ORIGIN: {**_header("a Debezium message's origin"), "enum": ["user", "sync"]},
            **_replayed(),
        }
    )


def command_headers() -> dict[str, Any]:
    return _headers(
        {
            names.SOURCE_TS_MS: _header(
                "the ts_ms of the change event that caused the command (end-to-end latency is measured from it)",
                digits=True,
            ),
            **_replayed(),
        }
    )


def routed_headers() -> dict[str, Any]:
    return _headers(
        {
            names.ORIGIN_TOPIC: _header("the topic the message was read from"),
            names.ORIGIN_PARTITION: _header("its partition", digits=True),
            names.ORIGIN_OFFSET: _header("its offset", digits=True),
            names.ORIGIN_KEY: _header("its key (absent when it had none)"),
            names.ORIGIN_TIMESTAMP: _header("when it reached Kafka, ms since the epoch", digits=True),
        },
        [names.ORIGIN_TOPIC, names.ORIGIN_PARTITION, names.ORIGIN_OFFSET, names.ORIGIN_TIMESTAMP],
    )


def _key(description: str, pattern: str | None = None) -> dict[str, Any]:
    key: dict[str, Any] = {"type": "string", "description": description}
    if pattern:
        key["pattern"] = pattern
    return key


TENANT_PART = _anchored(validation.TENANT_ID)[1:-1]


# --- the AsyncAPI document ----------------------------------------------------------------------


def _ref(path: str) -> dict[str, str]:
    return {"$ref": path}


def _message(
    name: str,
    title: str,
    summary: str,
    payload: dict[str, Any],
    key: dict[str, Any],
    headers: str | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": content_type,
        "payload": payload,
        "bindings": {"kafka": {"key": key, "bindingVersion": KAFKA_BINDING}},
    }
    if headers:
        message["headers"] = _ref(f"#/components/schemas/{headers}")
    return message


def _change_message(system: System | str, entity: str) -> str:
    return f"changeEvent_{system}_{entity}"


def _messages() -> dict[str, Any]:
    record_key = _key("`<tenant>:<record id>`, as the event says", f"^{TENANT_PART}:.+$")
    command_key = _key("`<tenant>:<entity>:<code, else id>`", f"^{TENANT_PART}:[a-z_]+:.+$")
    original = {
        "type": "string",
        "format": "binary",
        "description": "the original message's bytes (its first bytes only when dlq.truncated says so)",
    }
    changes = {
        _change_message(system, entity): _message(
            _change_message(system, entity),
            f"Change event: {system} {entity}",
            f"One change of one {system} {entity} (a Debezium message of it is read too: docs/contract.md, 'Debezium')",
            _ref(f"{SCHEMA_DIR}/{cdc_schema_file(system, entity)}"),
            record_key,
            "changeHeaders",
        )
        for system in System
        for entity in sorted(ENTITIES[system])
    }
    return {
        **changes,
        "command": _message(
            "command",
            "Command",
            "What the processor asks a connector to write",
            _ref(f"{SCHEMA_DIR}/{COMMAND}"),
            command_key,
            "commandHeaders",
        ),
        "result": _message(
            "result",
            "Result",
            "A connector's report of one command",
            _ref(f"{SCHEMA_DIR}/{RESULT}"),
            _key("the command's key"),
        ),
        "auditRecord": _message(
            "auditRecord",
            "Audit record",
            "One decided change: the rules matched, the commands sent or the reason for none",
            _ref(f"{SCHEMA_DIR}/{AUDIT_RECORD}"),
            _key("`<tenant>:<entity>:<record id>`", f"^{TENANT_PART}:[a-z_]+:.+$"),
        ),
        "tenantSettings": _message(
            "tenantSettings",
            "Tenant settings",
            "A tenant's settings (a null value removes them)",
            _ref(f"{SCHEMA_DIR}/{TENANT_SETTINGS}"),
            _key("`<tenant>`", f"^{TENANT_PART}$"),
        ),
        "deadLetter": _message(
            "deadLetter",
            "Dead letter",
            "The original message's key and bytes, the reason in headers",
            original,
            _key("the original message's key"),
            "deadLetterHeaders",
            "application/octet-stream",
        ),
        "routedChange": _message(
            "routedChange",
            "Routed change",
            "A cdc.* or results.* message routed to its tenant's partition, bytes and headers kept",
            {"type": "string", "format": "binary", "description": "the original message's bytes"},
            _key("`<tenant>`", f"^{TENANT_PART}$"),
            "routedHeaders",
            "application/octet-stream",
        ),
        "stateEntry": _message(
            "stateEntry",
            "State entry",
            "One key of a partition's state (the processor's own; docs/state.md)",
            {"description": "the table's value as JSON; none when deleted"},
            _key("`<table>|<key>`"),
        ),
    }


# What each role of ``streams.topics`` carries, who writes and who reads it.
_ROLES: dict[str, tuple[str, str, list[str]]] = {
    # role: (message, written by, read by)
    "cdc": ("", "capture", ["processor"]),  # the message of the topic's system and entity
    "commands": ("command", "processor", ["connector"]),
    "results": ("result", "connector", ["processor"]),
    "dlq": ("deadLetter", "", ["operator"]),
    "audit": ("auditRecord", "processor", ["operator"]),
    "config": ("tenantSettings", "operator", ["processor"]),
}

_ACTORS = {
    "capture": "whatever reports a system's changes: `lienthong capture`, `lienthong webhooks`, `lienthong backfill`, "
    "Debezium",
    "processor": "the stream processor, `lienthong worker` (consumer group: its app id)",
    "connector": "`lienthong connector crm|acct`",
    "operator": "the operator's tools (`lienthong dlq`, `explain`, `tenant set`, the dashboard)",
}


def _channel_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name)


def _topic_binding(name: str, *, compacted: bool, partitions: int, replicas: int) -> dict[str, Any]:
    return {
        "kafka": {
            "topic": name,
            "partitions": partitions,
            "replicas": replicas,
            "topicConfiguration": {"cleanup.policy": ["compact" if compacted else "delete"]},
            "bindingVersion": KAFKA_BINDING,
        }
    }


def _retention(compacted: bool) -> str:
    if compacted:
        return "Compacted: the last value of each key is kept."
    return "Retention: the broker's default (lienthong sets none; `log.retention.*`)."


def _writer_of(spec: TopicSpec) -> str:
    if spec.role != "dlq":
        return _ROLES[spec.role][1]
    return "processor" if spec.name == names.DLQ_CDC else "connector"


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3 document of every topic lienthong reads or writes."""
    partitions = int(_default(TopicPartitionsSetting))
    replicas = int(_default(TopicReplicationFactorSetting))
    app_id = str(_default(AppIdSetting))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    def operation(actor: str, action: str, channel_id: str, message: str) -> None:
        verb = "sends" if action == "send" else "receives"
        operations[f"{actor}_{action}_{channel_id}"] = {
            "action": action,
            "channel": _ref(f"#/channels/{channel_id}"),
            "summary": f"{actor} {verb}",
            "description": _ACTORS[actor],
            "tags": [{"name": actor}],
            "messages": [_ref(f"#/channels/{channel_id}/messages/{message}")],
        }

    for spec in contract_topics():
        message, _, readers = _ROLES[spec.role]
        if spec.role == "cdc":
            parsed = names.parse_cdc_topic(spec.name)
            assert parsed is not None
            message = _change_message(*parsed)
        writer = _writer_of(spec)
        channel_id = _channel_id(spec.name)
        channels[channel_id] = {
            "address": spec.name,
            "title": spec.name,
            "description": f"{_topic_description(spec)} Written by {writer}. {_retention(spec.compacted)} "
            f"{partitions} partitions by default (LIENTHONG_TOPIC_PARTITIONS); a deployment may prefix every "
            "name (LIENTHONG_TOPIC_PREFIX).",
            "messages": {message: _ref(f"#/components/messages/{message}")},
            "bindings": _topic_binding(spec.name, compacted=spec.compacted, partitions=partitions, replicas=replicas),
        }
        operation(writer, "send", channel_id, message)
        for reader in readers:
            operation(reader, "receive", channel_id, message)

    app_param = {"appId": {"default": app_id, "description": "LIENTHONG_APP_ID, also the processor's consumer group"}}
    internal = [
        (
            names.changes_topic("{appId}"),
            "routedChange",
            False,
            "Every cdc.* and results.* message routed by tenant: one partition holds all of a tenant's changes "
            "(a change read by the worker that owns its tenant's partition is decided there, unrouted, unless it "
            "must wait for others). Created by the worker; nobody else writes it. Its partitions are fixed once "
            "created.",
        ),
        (
            names.state_changelog_topic("{appId}"),
            "stateEntry",
            True,
            "The state of each partition's tenants (docs/state.md). Created by the worker; nobody else writes it.",
        ),
    ]
    for address, message, compacted, text in internal:
        channel_id = _channel_id(address.replace("{appId}", "app"))
        channels[channel_id] = {
            "address": address,
            "title": address,
            "description": f"{text} {_retention(compacted)}",
            "parameters": app_param,
            "messages": {message: _ref(f"#/components/messages/{message}")},
            "bindings": _topic_binding(
                address.replace("{appId}", app_id), compacted=compacted, partitions=partitions, replicas=replicas
            ),
        }
        operation("processor", "send", channel_id, message)
        operation("processor", "receive", channel_id, message)

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "lienthong",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "The Kafka topics lienthong reads and writes, keeping AMIS CRM and AMIS Kế toán in sync "
            "(docs/contract.md says what each field means). Generated by `lienthong contract generate` from the "
            "code; do not edit. Read commands.*, audit.sync and dlq.cdc with isolation.level=read_committed.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the local broker (`lienthong kafka start`)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": _messages(),
            "schemas": {
                "changeHeaders": change_headers(),
                "commandHeaders": command_headers(),
                "deadLetterHeaders": dead_letter_headers(),
                "routedHeaders": routed_headers(),
            },
        },
    }


def _topic_description(spec: TopicSpec) -> str:
    if spec.role == "cdc":
        parsed = names.parse_cdc_topic(spec.name)
        assert parsed is not None
        return (
            f"Changes of {parsed[0]} {parsed[1]} records, keyed `<tenant>:<record id>` and partitioned by the key: "
            "one record's changes stay in order, and its repeats are recognised. The processor reads the tenant and "
            "the record from the value (a Debezium message: the tenant header)."
        )
    return {
        "commands": "Commands for the system, keyed `<tenant>:<entity>:<code or id>` and partitioned by the key: a "
        "record's commands land on one partition in the order of its changes (X-5), before and after it is linked.",
        "results": "The connector's results, keyed like the command and partitioned by the key.",
        "dlq": "Dead letters: the original key and bytes, the reason in headers; partitioned by the original key.",
        "audit": "One audit record per decided change, keyed `<tenant>:<entity>:<record id>` and partitioned by the "
        "key: a record's trail in order.",
        "config": "Tenant settings, keyed by the tenant; every worker reads the whole topic.",
    }[spec.role]


def _default(setting: Any) -> Any:
    """The default of an ``Annotated[..., Field(default)]`` setting of ``streams.settings``."""
    for meta in getattr(setting, "__metadata__", ()):
        if hasattr(meta, "default"):
            return meta.default
    raise ValueError(f"{setting!r} has no default")
