"""docs/contract/: the AsyncAPI document and the JSON Schemas, as a producer in another language uses them.

They are current (made again from the code, they are what is committed); the real AsyncAPI CLI finds the
document valid; every JSON example of docs/contract.md fits its schema; and a change event the processor
refuses names, in its dead letter's reason, the JSON pointer a JSON Schema validator names for it.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from jsonschema.exceptions import best_match

from cli.main import main
from common.names import changes_topic, state_changelog_topic
from ops.contract_files import CONTRACT_DIR, ToolMissing, stale, validate, write
from streams.core.contract import decode_change_event
from streams.core.decide import resolve_action
from streams.core.errors import BadInput
from streams.core.rules import load_rules
from streams.topics import contract_topics
from tests.contract_schemas import SCHEMAS, validator

ROOT = Path(__file__).resolve().parents[1]
POINTER = re.compile(r'\(JSON pointer "([^"]*)"\)$')


def test_the_committed_files_are_what_the_code_makes_now(capsys) -> None:
    assert stale() == [], "docs/contract/ is stale: run `lienthong contract generate`"
    assert main(["contract", "check"]) == 0


def test_check_names_a_stale_file(tmp_path, capsys) -> None:
    directory = tmp_path / "contract"
    shutil.copytree(CONTRACT_DIR, directory, ignore=shutil.ignore_patterns("html"))
    (directory / "schemas" / "command.json").write_text("{}\n", encoding="utf-8")
    (directory / "schemas" / "cdc" / "gone.json").write_text("{}\n", encoding="utf-8")
    assert stale(directory) == ["schemas/command.json", "schemas/cdc/gone.json"]
    assert main(["contract", "check"]) == 0  # (the committed ones)
    assert write(directory) == ["schemas/command.json", "schemas/cdc/gone.json"]
    assert stale(directory) == [] and not (directory / "schemas" / "cdc" / "gone.json").exists()


def test_every_topic_is_a_channel_with_its_cleanup_policy() -> None:
    document = yaml.safe_load((CONTRACT_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    expected = {spec.name: spec.compacted for spec in contract_topics()}
    expected[changes_topic("{appId}")] = False
    expected[state_changelog_topic("{appId}")] = True
    assert set(channels) == set(expected)
    for address, compacted in expected.items():
        policy = channels[address]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"]
        assert policy == (["compact"] if compacted else ["delete"]), address
    # every payload that is JSON is one of the committed schemas
    referenced = {
        message["payload"]["$ref"]
        for message in document["components"]["messages"].values()
        if "$ref" in message["payload"]
    }
    change_event = {f"schemas/cdc/{address[4:]}.json" for address in expected if address.startswith("cdc.")}
    assert len(change_event) == 17
    assert referenced == {f"schemas/{path.relative_to(SCHEMAS).as_posix()}" for path in SCHEMAS.rglob("*.json")} - {
        "schemas/change-event.json"  # referred to by each topic's
    }
    assert change_event <= referenced


def test_the_asyncapi_cli_finds_the_document_valid(tmp_path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (Debian: apt-get install nodejs npm; then bash deploy/tools.sh)")
    try:
        outcome = validate()
    except ToolMissing as exc:
        pytest.fail(str(exc))
    assert outcome.ok, outcome.output
    assert "is valid" in outcome.output
    # and it does refuse a broken one: a message referring to a schema that is not there
    broken = tmp_path / "contract"
    shutil.copytree(CONTRACT_DIR, broken, ignore=shutil.ignore_patterns("html"))
    (broken / "schemas" / "result.json").unlink()
    outcome = validate(broken)
    assert not outcome.ok and "result.json" in outcome.output, outcome.output


# --- the examples of docs/contract.md -----------------------------------------------------------

SCHEMA_OF_SECTION = {
    "Change event": "change-event.json",
    "Command": "command.json",
    "Result": "result.json",
    "Audit record": "audit-record.json",
    "Tenant settings": "tenant-settings.json",
}


def contract_examples() -> list[tuple[str, str, dict]]:
    """(section, first line, value) of every ```json block of docs/contract.md, by the ## section it is in."""
    text = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    examples = []
    section = ""
    block: list[str] | None = None
    for line in text.splitlines():
        if block is not None:
            if line.startswith("```"):
                examples.append((section, block[0].strip(), json.loads("\n".join(block))))
                block = None
            else:
                block.append(line)
        elif line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```json"):
            block = []
    return examples


def test_the_contract_has_an_example_of_every_message() -> None:
    assert {section for section, _, _ in contract_examples()} == set(SCHEMA_OF_SECTION)


@pytest.mark.parametrize(
    ("section", "value"),
    [(section, value) for section, _, value in contract_examples()],
    ids=[f"{section}: {line[:40]}" for section, line, _ in contract_examples()],
)
def test_every_example_of_the_contract_fits_its_schema(section, value) -> None:
    name = SCHEMA_OF_SECTION[section]
    check = validator(f"cdc/{value['system']}.{value['entity']}.json" if name == "change-event.json" else name)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in check.iter_errors(value)] == []


# --- the dead letter's pointer is the schema validator's ----------------------------------------

ORDER = {
    "schema_version": 1,
    "event_id": "e1",
    "tenant": "cty-abc",
    "system": "crm",
    "entity": "sale_order",
    "op": "c",
    "ts_ms": 1764201600000,
    "before": None,
    "after": {
        "id": "O1",
        "code": "DH0001",
        "customer_code": "KH0001",
        "status": "not_started",
        "lines": [{"line_id": "L1", "product_code": "SP01", "quantity": "2", "amount": "200000"}],
        "total_amount": "200000",
    },
}


def _set(path: str, value):
    def change(event: dict) -> None:
        *parents, last = path.split("/")
        target = event
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _drop(path: str):
    def change(event: dict) -> None:
        *parents, last = path.split("/")
        target = event
        for part in parents:
            target = target[part]
        del target[last]

    return change


def _delete(before, after):
    def change(event: dict) -> None:
        event.update(op="d", before=before, after=after)

    return change


BAD = {
    "a quantity that is no number": _set("after/lines/0/quantity", "2,5"),
    "money as a JSON float": _set("after/total_amount", 1.5),
    "money past 20 digits": _set("after/total_amount", 10**21),
    "a tenant with a colon": _set("tenant", "T:other"),
    "no tenant": _drop("tenant"),
    "an empty event id": _set("event_id", ""),
    "no ts_ms": _drop("ts_ms"),
    "ts_ms as words": _set("ts_ms", "today"),
    "an unknown op": _set("op", "x"),
    "a create without after": _set("after", None),
    "a record without id": _drop("after/id"),
    "a null id": _set("after/id", None),
    "lines that are no list": _set("after/lines", "L1"),
    "a line that is no object": _set("after/lines/0", "L1"),
    "a code that is a boolean": _set("after/lines/0/product_code", True),
    "a status that is an object": _set("after/status", {"value": "done"}),
    "codes holding an object": _set("after/codes", [{"code": "KH1"}]),
    "another schema version": _set("schema_version", 2),
    "an unknown action": _set("action", "fly"),
    "an unknown entity": _set("entity", "spaceship"),
    "an unknown origin": _set("origin", "robot"),
    "a delete without before": _delete(None, None),
    "a delete whose record has no id": _delete({"code": "DH0001"}, None),
    "another system's": _set("system", "acct"),
    "another entity's": _set("entity", "customer"),
    "an action that means nothing for the entity": _set("action", "pull"),
}


RULES = load_rules()


@pytest.mark.parametrize("change", BAD.values(), ids=BAD.keys())
def test_the_dead_letter_names_the_pointer_the_schema_validator_names(change) -> None:
    event = copy.deepcopy(ORDER)
    change(event)
    raw = json.dumps(event).encode()  # (the standard library: orjson refuses integers past 64 bits)
    with pytest.raises(BadInput) as caught:
        resolve_action(
            decode_change_event(raw, topic_system="crm", topic_entity="sale_order", key=b"cty-abc:O1"), RULES
        )
    reason = caught.value.message  # what the dead letter's error.message header says
    found = POINTER.search(reason)
    assert found, reason
    error = best_match(validator("cdc/crm.sale_order.json").iter_errors(json.loads(raw)))
    assert error is not None, f"the schema accepts what the processor refuses: {reason}"
    assert found.group(1) == "".join(f"/{part}" for part in error.absolute_path), (reason, error.message)


def test_the_schema_accepts_the_events_the_processor_accepts() -> None:
    pull = {
        **ORDER,
        "system": "acct",
        "entity": "customer",
        "action": "pull",
        "after": {"id": "p7", "codes": ["KH1", 2]},
    }
    delete = {**ORDER, "op": "d", "before": ORDER["after"], "after": None}
    update = {**ORDER, "op": "u", "before": {"revenue_status": "draft"}, "after": {**ORDER["after"], "id": 17}}
    for event in (ORDER, pull, delete, update):
        check = validator(f"cdc/{event['system']}.{event['entity']}.json")
        raw = json.dumps(event).encode()
        record = event["after"] or event["before"]
        decoded = decode_change_event(
            raw, topic_system=event["system"], topic_entity=event["entity"], key=f"cty-abc:{record['id']}".encode()
        )
        assert decoded.record_id == str(record["id"])
        resolve_action(decoded, RULES)
        assert [error.message for error in check.iter_errors(event)] == []
