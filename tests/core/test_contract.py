"""``decode_change_event``: plain events, Debezium envelopes, and every kind of bad input (X-6)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from common.names import System
from streams.core.contract import (
    Action,
    ChangeEvent,
    Command,
    CommandKey,
    CommandSource,
    Op,
    decode_change_event,
    dumps,
    parse_command,
)
from streams.core.errors import BadInput

TOPIC = "cdc.crm.sale_order"
ORDER = {"id": "o-1", "code": "DH1", "revenue_status": "proposed", "total_amount": "200000"}


def plain(**changes: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": "ev-1",
        "tenant": "t1",
        "system": "crm",
        "entity": "sale_order",
        "op": "c",
        "origin": "user",
        "ts_ms": 1764201600000,
        "before": None,
        "after": ORDER,
        **changes,
    }


def decode(
    raw: bytes | None, *, entity: str = "sale_order", system: str = "crm", headers: Any = None, topic: str | None = None
) -> ChangeEvent:
    return decode_change_event(
        raw,
        topic_system=system,
        topic_entity=entity,
        topic=topic or f"cdc.{system}.{entity}",
        partition=2,
        offset=17,
        headers=headers,
    )


def bad(raw: bytes | None, **kwargs: Any) -> BadInput:
    with pytest.raises(BadInput) as caught:
        decode(raw, **kwargs)
    return caught.value


def test_plain_event() -> None:
    event = decode(orjson.dumps(plain(action="propose_revenue", op="u", before={**ORDER, "revenue_status": "draft"})))
    assert (event.event_id, event.tenant, event.system, event.entity, event.op) == (
        "ev-1",
        "t1",
        System.CRM,
        "sale_order",
        "u",
    )
    assert event.action is Action.PROPOSE_REVENUE
    assert event.record == ORDER and event.record_id == "o-1"
    assert event.before["revenue_status"] == "draft"


def test_plain_event_without_action_or_origin() -> None:
    doc = plain()
    del doc["origin"]
    event = decode(orjson.dumps(doc))
    assert event.action is None and event.origin == "user"


def test_a_deleted_record_is_its_before() -> None:
    event = decode(orjson.dumps(plain(op="d", before=ORDER, after=None)))
    assert event.record == ORDER and event.record_id == "o-1"


def test_unknown_fields_pass_through() -> None:
    event = decode(orjson.dumps(plain(after={**ORDER, "custom_field": 7}, trace="x")))
    assert event.after["custom_field"] == 7


def test_merge_event_keeps_merged_ids() -> None:
    event = decode(
        orjson.dumps(
            plain(entity="customer", op="u", action="merge", after={"id": "c-1", "code": "KH1"}, merged_ids=["c-2"])
        ),
        entity="customer",
    )
    assert event.merged_ids == ["c-2"]


DEBEZIUM_PAYLOAD = {
    "op": "u",
    "before": {**ORDER, "revenue_status": "draft"},
    "after": ORDER,
    "source": {"ts_ms": 1764201600500, "db": "crm", "table": "sale_order"},
    "ts_ms": 1764201600900,
}
SCHEMA_BLOCK = {"type": "struct", "fields": [], "optional": False, "name": "crm.sale_order.Envelope"}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"schema": SCHEMA_BLOCK, "payload": DEBEZIUM_PAYLOAD}, id="with schema"),
        pytest.param({"payload": DEBEZIUM_PAYLOAD}, id="payload only"),
        pytest.param(DEBEZIUM_PAYLOAD, id="bare payload"),
    ],
)
def test_debezium_envelope_takes_tenant_event_id_and_action_from_headers(document: dict[str, Any]) -> None:
    headers = {"tenant": b"t1", "event_id": b"dbz-9", "action": b"propose_revenue"}
    event = decode(orjson.dumps(document), headers=headers)
    assert (event.tenant, event.event_id, event.action) == ("t1", "dbz-9", Action.PROPOSE_REVENUE)
    assert (event.system, event.entity, event.op) == (System.CRM, "sale_order", "u")
    assert event.ts_ms == 1764201600500  # when it happened at the source
    assert event.after == ORDER and event.before["revenue_status"] == "draft"
    assert event.origin == "user"


def test_debezium_event_id_defaults_to_topic_partition_offset() -> None:
    event = decode(
        orjson.dumps({"schema": SCHEMA_BLOCK, "payload": DEBEZIUM_PAYLOAD}),
        headers={"tenant": "t1"},
        topic="prod.cdc.crm.sale_order",
    )
    assert event.event_id == "prod.cdc.crm.sale_order:2:17"
    assert event.action is None


def test_debezium_origin_header() -> None:
    event = decode(orjson.dumps({"payload": DEBEZIUM_PAYLOAD}), headers={"tenant": b"t1", "origin": b"sync"})
    assert event.origin == "sync"


def test_debezium_without_tenant_header() -> None:
    error = bad(orjson.dumps({"payload": DEBEZIUM_PAYLOAD}), headers={"event_id": b"x"})
    assert error.kind == "schema" and "tenant" in error.message


# --- bad input: BadInput(kind, message naming topic, partition and offset) ---------------------


@pytest.mark.parametrize(
    ("raw", "kwargs", "kind", "says"),
    [
        pytest.param(orjson.dumps(plain(schema_version=2)), {}, "schema_version", "2", id="schema_version 2"),
        pytest.param(
            orjson.dumps({k: v for k, v in plain().items() if k != "schema_version"}),
            {},
            "schema_version",
            "None",
            id="no schema_version",
        ),
        pytest.param(b"\xff\xfe{not json", {}, "decode", "not JSON", id="undecodable bytes"),
        pytest.param(b"", {}, "decode", "empty", id="empty"),
        pytest.param(None, {}, "decode", "empty", id="tombstone"),
        pytest.param(b"[1, 2]", {}, "decode", "list", id="not an object"),
        pytest.param(orjson.dumps(plain(action="teleport")), {}, "unknown_action", "teleport", id="unknown action"),
        pytest.param(
            orjson.dumps({"payload": DEBEZIUM_PAYLOAD}),
            {"headers": {"tenant": b"t1", "action": b"zap"}},
            "unknown_action",
            "zap",
            id="unknown action header",
        ),
        pytest.param(orjson.dumps(plain(entity="customer")), {}, "topic_mismatch", "customer", id="entity mismatch"),
        pytest.param(
            orjson.dumps(plain(entity="widget")), {}, "unknown_entity", "widget", id="unknown entity in event"
        ),
        pytest.param(orjson.dumps(plain(system="acct")), {}, "topic_mismatch", "acct", id="system mismatch"),
        pytest.param(
            orjson.dumps(plain()), {"entity": "widget"}, "unknown_entity", "widget", id="unknown entity topic"
        ),
        pytest.param(orjson.dumps(plain()), {"system": "erp"}, "unknown_system", "erp", id="unknown system topic"),
        pytest.param(orjson.dumps(plain(after=None)), {}, "schema", "needs 'after'", id="op c without after"),
        pytest.param(orjson.dumps(plain(op="u", after=None)), {}, "schema", "needs 'after'", id="op u without after"),
        pytest.param(orjson.dumps(plain(op="d", after=None)), {}, "schema", "needs 'before'", id="op d without before"),
        pytest.param(orjson.dumps(plain(op="x")), {}, "schema", "op", id="unknown op"),
        pytest.param(orjson.dumps(plain(origin="robot")), {}, "schema", "origin", id="unknown origin"),
        pytest.param(
            orjson.dumps({k: v for k, v in plain().items() if k != "tenant"}), {}, "schema", "tenant", id="no tenant"
        ),
        pytest.param(orjson.dumps(plain(event_id="")), {}, "schema", "event_id", id="empty event_id"),
        pytest.param(orjson.dumps(plain(ts_ms="yesterday")), {}, "schema", "ts_ms", id="bad ts_ms"),
        pytest.param(orjson.dumps(plain(after={"code": "DH1"})), {}, "schema", "no 'id'", id="record without id"),
    ],
)
def test_bad_input(raw: bytes | None, kwargs: dict[str, Any], kind: str, says: str) -> None:
    error = bad(raw, **kwargs)
    assert error.kind == kind, error
    assert says in error.message, error.message
    assert "@2:17" in error.message, error.message  # partition and offset
    assert "cdc." in error.message  # the topic
    assert str(error) == f"{kind}: {error.message}"


def test_bad_input_names_the_topic_it_came_from() -> None:
    error = bad(b"nope", topic="prod.cdc.crm.sale_order")
    assert "prod.cdc.crm.sale_order@2:17" in error.message


# --- the output side of the contract -----------------------------------------------------------


def test_command_message_key_and_wire_form() -> None:
    command = Command(
        command_id="c" * 64,
        tenant="t1",
        target=System.ACCT,
        entity="sale_order",
        op=Op.CREATE,
        key=CommandKey(id=None, code="DH1"),
        source=CommandSource(system=System.CRM, entity="sale_order", id="o-1", event_id="ev-1"),
        fields={"total_amount": "200000"},
        rule="SO-1",
        ts_ms=1,
    )
    assert command.message_key == "t1:sale_order:DH1"
    wire = orjson.loads(dumps(command))
    assert wire["schema_version"] == 1 and wire["target"] == "acct" and wire["op"] == "create"
    assert wire["key"] == {"id": None, "code": "DH1"}
    assert wire["read_only"] is False and wire["depends_on"] == []
    assert parse_command(orjson.dumps(wire)) == command


def test_a_target_without_a_code_is_keyed_by_its_id() -> None:
    assert CommandKey(id="i-1", code=None).as_text() == "i-1"


def test_a_bare_debezium_payload_without_source_is_decoded() -> None:
    payload = {k: v for k, v in DEBEZIUM_PAYLOAD.items() if k != "source"}
    event = decode_change_event(
        orjson.dumps(payload),
        topic_system="crm",
        topic_entity="sale_order",
        topic="cdc.crm.sale_order",
        partition=1,
        offset=5,
        headers={"tenant": b"t1"},
    )
    assert event.tenant == "t1" and event.event_id == "cdc.crm.sale_order:1:5"


@pytest.mark.parametrize("version", [True, 1.0, "1"])
def test_schema_version_must_be_the_integer_1(version) -> None:
    with pytest.raises(BadInput) as raised:
        decode_change_event(orjson.dumps(plain(schema_version=version)), topic_system="crm", topic_entity="sale_order")
    assert raised.value.kind == "schema_version"


def test_a_null_record_id_is_no_id() -> None:
    with pytest.raises(BadInput) as raised:
        decode_change_event(
            orjson.dumps(plain(after={**ORDER, "id": None})), topic_system="crm", topic_entity="sale_order"
        )
    assert raised.value.kind == "schema" and "no 'id'" in raised.value.message
