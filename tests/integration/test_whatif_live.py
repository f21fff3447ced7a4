"""Issue 26, part 5: a settings change previewed with ``whatif``, then applied live, on the real broker.

A real worker decides a tenant's scripted business day (change events on ``cdc.*``; the accounting
connector's results produced by the test, teaching the links as a connector would). ``lienthong whatif``
previews a settings file (PRD-1 off, CRM's custom_field12 mapped to the accounting customer's address):
its difference is asserted exactly. ``lienthong tenant set`` applies the file; once ``tenant get`` shows the
new revision, a second business day (new records and edits) goes to the worker. The commands it writes for
that day are exactly what a replay predicts — the whole retained history through the core again
(``streams.replay.Replay``), the first day with the settings it was decided with, the new events with the
settings now in force — and every audit record of the new day names the new revision.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from cli.main import main
from ops.operations import settings_in_force
from ops.retained import read_history
from streams.core.contract import ChangeEvent, Command, change_event_json, parse_command
from streams.core.rules import load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS
from streams.replay import OneTenantSettings, Replay, read
from tests.agents.test_whatif import CUSTOMER, ORDER, PRODUCT  # the scripted day's records

SETTINGS = """
# Accounting is our product master: CRM products no longer go to accounting.
rules_off = ["PRD-1"]

# CRM's "Địa chỉ giao hàng" (custom field 12) is the customer's address in accounting.
[[field_mappings]]
system = "crm"
entity = "customer"
source_field = "custom_field12"
target_field = "address"
type = "text"
"""

CUSTOMER2 = {"id": "c-2", "code": "KH2", "name": "Công ty B", "phone": "0903", "custom_field12": "kho B"}
PRODUCT2 = {"id": "p-2", "code": "SP2", "name": "Trà đen", "unit_price": "90000"}
ORDER2 = {
    **ORDER,
    "id": "o-2",
    "code": "DH2",
    "name": "Đơn trà 2",
    "customer_code": "KH2",
    "lines": [{"line_id": "l1", "product_code": "SP1", "quantity": 1, "unit_price": "100000", "amount": "100000"}],
    "total_amount": "100000",
}


@pytest.fixture(autouse=True)
def cli_env(module_settings, monkeypatch):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)


class Business:
    """The tenant's business, produced to the broker as the capture services and a connector would."""

    def __init__(self, kafka, tenant: str) -> None:
        self.kafka = kafka
        self.tenant = tenant
        self.start_ms = int(time.time() * 1000)
        self.n = 0

    def change(self, entity: str, op: str, *, after: dict, before: dict | None = None) -> str:
        event_id = f"e{self.n}"
        value = change_event_json(
            event_id=event_id,
            tenant=self.tenant,
            system="crm",
            entity=entity,
            op=op,
            ts_ms=self.start_ms + self.n * 1000,
            before=before,
            after=after,
        )
        self.n += 1
        self.kafka.produce(f"cdc.crm.{entity}", value, key=f"{self.tenant}:{after['id']}")
        return event_id

    def result(self, entity: str, code: str, target_id: str) -> None:
        """The accounting connector's answer to the command that wrote ``code``: its id there (X-3)."""
        value = {
            "command_id": f"r{self.n}",
            "tenant": self.tenant,
            "target": "acct",
            "entity": entity,
            "status": "applied",
            "target_id": target_id,
            "code": code,
        }
        self.n += 1
        self.kafka.produce("results.acct", value, key=f"{self.tenant}:{entity}:{code}")


def audits(kafka, tenant: str, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The audit record of each of ``event_ids`` (waited for: the worker writes one per change)."""

    def mine(messages: list[dict]) -> dict[str, dict[str, Any]]:
        return {
            m["value"]["event_id"]: m["value"]
            for m in messages
            if isinstance(m["value"], dict) and m["value"].get("tenant") == tenant
        }

    found = kafka.read(["audit.sync"], until=lambda ms: set(event_ids) <= set(mine(ms)), timeout=60)
    return {event_id: audit for event_id, audit in mine(found).items() if event_id in event_ids}


def tenant_commands(kafka, tenant: str) -> list[Command]:
    """Every command written for the tenant so far, to either system."""
    return [
        parse_command(orjson.dumps(m["value"]))
        for m in kafka.read_to_end(["commands.acct", "commands.crm"])
        if isinstance(m["value"], dict) and m["value"].get("tenant") == tenant
    ]


def seen(commands: list[Command]) -> list[tuple[str, str, str, str, str, str, dict[str, Any]]]:
    """What a connector would write, command by command: id, rule, target, entity, op, record, fields."""
    return sorted(
        (c.command_id, c.rule, c.target.value, c.entity, c.op.value, c.key.as_text(), c.fields) for c in commands
    )


def fields(example: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {name: (v["in_force"], v["proposed"]) for name, v in example["fields"].items()}


def test_a_previewed_settings_change_applied_live_does_what_the_preview_said(
    worker, kafka, module_settings, tenant: str, tmp_path: Path, capsys
) -> None:
    prefix = module_settings.kafka.topic_prefix
    day = Business(kafka, tenant)

    # Day 1, with the default settings: a product, a customer, an order naming both; the connector's
    # answers for the customer and the product written to accounting; then edits.
    first = [
        day.change("product", "c", after=PRODUCT),
        day.change("customer", "c", after=CUSTOMER),
        day.change("sale_order", "c", after=ORDER),
    ]
    audits(kafka, tenant, first)
    day.result("customer", "KH1", "a-1")
    day.result("product", "SP1", "ap-1")
    first += [
        day.change("product", "u", before=PRODUCT, after={**PRODUCT, "name": "Trà xanh 500g"}),
        day.change("customer", "u", before=CUSTOMER, after={**CUSTOMER, "custom_field12": "b.vn"}),
        day.change("customer", "u", before={**CUSTOMER, "custom_field12": "b.vn"}, after={**CUSTOMER, "phone": "0902"}),
    ]
    day_one = audits(kafka, tenant, first)
    assert {audit["settings_revision"] for audit in day_one.values()} == {0}
    day_one_commands = {c.command_id for c in tenant_commands(kafka, tenant)}
    assert len(day_one_commands) == 5  # PRD-1 twice, CUS-10 and SO-1 for the order, CUS-3 for the phone

    # The preview.
    settings_file = tmp_path / "sync.toml"
    settings_file.write_text(SETTINGS, encoding="utf-8")
    assert main(["whatif", tenant, "--settings", str(settings_file), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["history"] == {
        "change_events": 6,
        "results": 2,
        "bad_input": 0,
        "whole": True,
        "whole_since_ms": None,
    }
    assert (report["settings"]["in_force"], report["settings"]["proposed"]["revision"]) == ({"schema_version": 1}, 1)
    assert (report["events"], report["events_differing"], report["commands"]) == (
        6,
        5,
        {"in_force": 5, "proposed": 4},
    )
    assert report["rules"] == [
        {"rule": "CUS-3", "added": 1, "removed": 0, "changed": 1},
        {"rule": "CUS-10", "added": 0, "removed": 0, "changed": 1},
        {"rule": "PRD-1", "added": 0, "removed": 2, "changed": 0},
    ]
    product = {"code": ("SP1", None), "unit_price": ("100000", None)}
    customer = {"code": (None, "KH1"), "name": (None, "Công ty A"), "phone": (None, "0901")}
    assert [(e["kind"], e["rule"], e["op"], e["key"], fields(e), e["event_id"]) for e in report["examples"]] == [
        ("added", "CUS-3", "update", "KH1", {"address": (None, "b.vn"), **customer}, "e6"),
        ("changed", "CUS-3", "update", "KH1", {"address": (None, "a.vn")}, "e7"),
        ("changed", "CUS-10", "upsert", "KH1", {"address": (None, "a.vn")}, "e2"),
        ("removed", "PRD-1", "upsert", "SP1", {**product, "name": ("Trà xanh", None)}, "e0"),
        ("removed", "PRD-1", "upsert", "SP1", {**product, "name": ("Trà xanh 500g", None)}, "e5"),
    ]
    assert [e["ts_ms"] for e in report["examples"]] == [day.start_ms + n * 1000 for n in (6, 7, 2, 0, 5)]

    # Applied live: the next revision, once `tenant get` shows it.
    assert main(["tenant", "set", tenant, "--file", str(settings_file)]) == 0
    assert orjson.loads(capsys.readouterr().out)["revision"] == 1
    deadline = time.monotonic() + 30
    while True:
        assert main(["tenant", "get", tenant]) == 0
        if orjson.loads(capsys.readouterr().out).get("revision") == 1:
            break
        assert time.monotonic() < deadline, "tenant get never showed revision 1"
        time.sleep(0.2)

    # Day 2: a new customer, product and order (naming the new customer and the old product), an edit
    # of the old customer's custom field and of the old product.
    second = [
        day.change("customer", "c", after=CUSTOMER2),
        day.change("product", "c", after=PRODUCT2),
        day.change("sale_order", "c", after=ORDER2),
        day.change(
            "customer",
            "u",
            before={**CUSTOMER, "phone": "0902"},
            after={**CUSTOMER, "phone": "0902", "custom_field12": "c.vn"},
        ),
        day.change(
            "product", "u", before={**PRODUCT, "name": "Trà xanh 500g"}, after={**PRODUCT, "name": "Trà xanh 1kg"}
        ),
    ]
    day_two = audits(kafka, tenant, second)
    assert {event_id: audit["settings_revision"] for event_id, audit in day_two.items()} == dict.fromkeys(second, 1)
    written = [c for c in tenant_commands(kafka, tenant) if c.command_id not in day_one_commands]
    assert {c.command_id for c in written} == {c["command_id"] for a in day_two.values() for c in a["commands"]}

    # What the preview's engine predicts for day 2: the whole history replayed, day 1 with the settings it
    # was decided with, the new events with the settings now in force.
    in_force_now = settings_in_force(module_settings.kafka, tenant)
    assert in_force_now.revision == 1
    messages, _ = read_history(module_settings.kafka, tenant, timeout=10)
    replay = Replay(load_rules(), DEFAULT_SETTINGS, topic_prefix=prefix)
    predicted: list[Command] = []
    for message in messages:
        item = read(message, prefix)
        if isinstance(item, ChangeEvent) and item.event_id in second:
            replay.state.tenant_settings = OneTenantSettings(in_force_now)
        replayed = replay.apply(item)
        if replayed is not None and replayed.event.event_id in second:
            predicted += [c for d in replayed.decisions for c in d.commands]
    assert replay.counts.events == 11
    assert seen(written) == seen(predicted)
    # and what that is: no product to accounting (PRD-1 off), the address from CRM's custom field
    assert sorted((c.rule, c.key.as_text(), c.fields.get("address")) for c in written) == [
        ("CUS-10", "KH2", "kho B"),
        ("CUS-3", "KH1", "c.vn"),
        ("SO-1", "DH2", None),
    ]
