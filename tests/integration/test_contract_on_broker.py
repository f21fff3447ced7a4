"""What lienthong really writes on the broker fits docs/contract/: a business day through the capture
services, the worker and both connectors against the sandboxes, a tenant setting, a change event the
worker refuses and a message on commands.crm that is no command. Every message read back is checked with
the ``jsonschema`` library against the committed schema of its value, its headers against the AsyncAPI
document's header schemas and its key against its channel's key; the refused change event's dead letter
names the JSON pointer the validator names for it.
"""

from __future__ import annotations

import re
from collections import Counter

import aiohttp
import pytest
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

from common.names import DLQ_CDC, DLQ_COMMANDS, ERROR_MESSAGE, System
from demo.local import local_systems
from demo.run import business_day
from ops.contract_files import CONTRACT_DIR
from ops.operations import set_tenant
from streams.topics import contract_topics
from tests.contract_schemas import validator
from tests.integration.conftest import change_event
from tests.integration.test_end_to_end import settled

pytestmark = pytest.mark.broker

DOCUMENT = yaml.safe_load((CONTRACT_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
NOT_A_COMMAND = {"not": "a command"}
POINTER = re.compile(r'\(JSON pointer "([^"]*)"\)$')


def _resolve(node: dict) -> dict:
    """A ``$ref`` inside the document -> what it refers to."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return _resolve(target)


def _payload(message: dict) -> Draft7Validator:
    """The validator of a message's payload: a committed schema file it refers to, or its schema inline."""
    ref = message["payload"].get("$ref", "")
    if ref.startswith("schemas/"):
        return validator(ref.removeprefix("schemas/"))
    return Draft7Validator(message["payload"])


def _message_of(topic: str) -> dict:
    """The AsyncAPI message of a topic's channel (each channel carries one)."""
    channel = next(c for c in DOCUMENT["channels"].values() if c["address"] == topic)
    (message,) = channel["messages"].values()
    return _resolve(message)


def _problems(schema: dict | Draft7Validator, value) -> list[str]:
    check = schema if isinstance(schema, Draft7Validator) else Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(value)]


async def test_every_message_written_fits_its_schema(kafka, module_settings, worker, tmp_path, tenant) -> None:
    bad = change_event(
        tenant, "crm", "sale_order", {"id": "O9", "code": "DH9", "lines": [{"line_id": "L1", "quantity": "2,5"}]}
    )
    async with local_systems(
        kafka=module_settings.kafka,
        data_dir=tmp_path / "systems",
        tenants=[tenant],
        connector_overrides={"backoff_base": 0.02, "backoff_cap": 0.3},
        callback_timeout=2.0,
    ) as systems:
        set_tenant(module_settings.kafka, tenant, "sale_order")
        async with aiohttp.ClientSession() as session:
            await business_day(systems, tenant, session)
        kafka.produce("cdc.crm.sale_order", bad, key=f"{tenant}:O9")
        kafka.produce("commands.crm", NOT_A_COMMAND, key=f"{tenant}:customer:X1")
        connectors = [systems.crm.connector.group_id, systems.acct.connector.group_id]
        await settled(module_settings.kafka, [module_settings.app_id, *connectors])

    topics = [spec.name for spec in contract_topics()]
    wanted = {"cdc", "commands", "results", "audit", "config", DLQ_CDC, DLQ_COMMANDS}

    def kind(topic: str) -> str:
        return topic if topic.startswith("dlq.") else topic.split(".")[0]

    def all_kinds(messages: list[dict]) -> bool:
        seen = Counter(kind(m["topic"]) for m in messages)
        return set(seen) >= wanted and min(seen["commands"], seen["results"], seen["audit"], seen["cdc"]) >= 4

    messages = kafka.read(topics, until=all_kinds, timeout=60)
    problems = []
    for message in messages:
        spec = _message_of(message["topic"])
        where = f"{message['topic']} {message['key']}"
        kafka_binding = spec["bindings"]["kafka"]
        problems += [f"{where} key: {p}" for p in _problems(kafka_binding["key"], message["key"])]
        if "headers" in spec:
            problems += [f"{where} headers: {p}" for p in _problems(_resolve(spec["headers"]), message["headers"])]
        if message["value"] in (bad, NOT_A_COMMAND):
            continue  # the refused ones (below)
        if spec["contentType"] == "application/json":
            problems += [f"{where}: {p}" for p in _problems(_payload(spec), message["value"])]
    assert problems == [], "\n".join(problems)
    # the refused change event: its dead letter names the pointer the schema validator names
    (letter,) = [m for m in messages if m["topic"] == DLQ_CDC]
    assert letter["value"] == bad
    reason = letter["headers"][ERROR_MESSAGE]
    error = best_match(_payload(_message_of("cdc.crm.sale_order")).iter_errors(bad))
    assert error is not None
    found = POINTER.search(reason)
    assert found and found.group(1) == "".join(f"/{p}" for p in error.absolute_path) == "/after/lines/0/quantity", (
        reason
    )
    (refused,) = [m for m in messages if m["topic"] == DLQ_COMMANDS]
    assert refused["headers"]["error.kind"] == "schema" and refused["key"] == f"{tenant}:customer:X1"
    commands = [m["value"] for m in messages if kind(m["topic"]) == "commands" and m["value"] != NOT_A_COMMAND]
    assert {command["target"] for command in commands} == {System.CRM, System.ACCT}
