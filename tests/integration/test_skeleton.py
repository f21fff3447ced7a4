"""The walking skeleton on the real broker: a first rule, an audited none, dead letters."""

from __future__ import annotations

import time

import pytest

from streams.core.contract import ChangeEvent
from streams.core.decide import decide
from streams.core.rules import load_rules
from tests.fakes import FakeState
from tests.integration.conftest import change_event
from tests.integration.test_kill_9 import processed

pytestmark = pytest.mark.broker


def for_tenant(messages, topic, tenant):
    return [m for m in messages if m["topic"] == topic and m["key"] and m["key"].startswith(tenant + ":")]


def test_acct_customer_create_becomes_a_crm_upsert_named_cus6(kafka, worker, tenant, module_settings):
    event = change_event(
        tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC", "tax_code": "0101234567"}
    )
    kafka.produce("cdc.acct.customer", event, key=f"{tenant}:A1")
    # the same change delivered again (at-least-once producers): dropped, not a second command
    kafka.produce("cdc.acct.customer", event, key=f"{tenant}:A1")
    # once the worker's group has committed both (routed, then decided), all they made is written
    deadline = time.monotonic() + 60
    while not processed(module_settings):
        assert time.monotonic() < deadline, "the worker did not commit both changes within 60 s"
        time.sleep(0.2)
    messages = kafka.read_to_end(["commands.crm", "audit.sync"])
    (command,) = [m["value"] for m in for_tenant(messages, "commands.crm", tenant)]
    assert len(for_tenant(messages, "audit.sync", tenant)) == 1
    assert command["rule"] == "CUS-6"
    assert command["op"] in ("create", "upsert")
    assert command["target"] == "crm" and command["entity"] == "customer"
    assert command["key"] == {"id": None, "code": "KH0001"}
    assert command["fields"]["name"] == "Công ty ABC"
    assert command["source"] == {"system": "acct", "entity": "customer", "id": "A1", "event_id": event["event_id"]}
    # deterministic: the pure interpreter, in this process, gives the worker's id for the same cause
    expected = decide(ChangeEvent.model_validate(event), FakeState(), load_rules(), now_ms=0).commands[0]
    assert command["command_id"] == expected.command_id


def test_crm_customer_create_sends_nothing_and_audits_cus1(kafka, worker, tenant):
    event = change_event(tenant, "crm", "customer", {"id": "C1", "code": "KH0002", "name": "Cửa hàng B"})
    kafka.produce("cdc.crm.customer", event, key=f"{tenant}:C1")
    kafka.read(["audit.sync"], until=lambda ms: bool(for_tenant(ms, "audit.sync", tenant)))
    # its commands, had there been any, are in the transaction of its audit record: all there by now
    messages = kafka.read_to_end(["audit.sync", "commands.acct", "commands.crm"])
    (audit,) = [m["value"] for m in for_tenant(messages, "audit.sync", tenant)]
    assert audit["rules"] == ["CUS-1"]
    assert audit["commands"] == []
    assert "CUS-1" in audit["reason"] and "pull" in audit["reason"]
    assert audit["event_id"] == event["event_id"]
    assert not for_tenant(messages, "commands.acct", tenant)
    assert not for_tenant(messages, "commands.crm", tenant)


def test_bad_input_is_dead_lettered_with_reason_and_the_worker_goes_on(kafka, worker, tenant):
    kafka.produce("cdc.acct.customer", b"\xff not json", key=f"{tenant}:BAD1")
    invalid = change_event(tenant, "acct", "customer", {"id": "BAD2", "code": "X"})
    del invalid["ts_ms"]
    kafka.produce("cdc.acct.customer", invalid, key=f"{tenant}:BAD2")
    good = change_event(tenant, "acct", "customer", {"id": "A7", "code": "KH0007", "name": "Sau lỗi"})
    kafka.produce("cdc.acct.customer", good, key=f"{tenant}:A7")

    messages = kafka.read(
        ["dlq.cdc", "commands.crm"],
        until=lambda ms: len(for_tenant(ms, "dlq.cdc", tenant)) >= 2 and bool(for_tenant(ms, "commands.crm", tenant)),
    )
    letters = {m["key"]: m for m in for_tenant(messages, "dlq.cdc", tenant)}
    undecodable = letters[f"{tenant}:BAD1"]
    assert undecodable["value"] == b"\xff not json"  # the original bytes, untouched
    assert undecodable["headers"]["error.kind"] == "decode"
    assert undecodable["headers"]["origin.topic"] == kafka.name("cdc.acct.customer")
    assert undecodable["headers"]["origin.offset"].isdigit()
    assert int(undecodable["headers"]["failed.at_ms"]) > 0
    schema = letters[f"{tenant}:BAD2"]
    assert schema["headers"]["error.kind"] == "schema"
    assert "ts_ms" in schema["headers"]["error.message"]
    (command,) = [m["value"] for m in for_tenant(messages, "commands.crm", tenant)]
    assert command["rule"] == "CUS-6" and command["key"]["code"] == "KH0007"
