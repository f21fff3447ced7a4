"""``whatif``'s engine: a tenant's retained history replayed twice in memory (``streams.replay``), with the
settings in force and proposed ones, and the commands that would differ (``streams.core.whatif``)."""

from __future__ import annotations

from typing import Any

import orjson

from common.messages import Retained
from common.names import System, cdc_topic, results_topic
from streams.core.contract import change_event_json
from streams.core.rule_table import RULE_TABLE
from streams.core.rules import RuleBook, load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS, FieldMapping, SyncSettings
from streams.replay import Replay, whatif

T = "cty-a"
DAY = 1_764_201_600_000
CUSTOMER = {"id": "c-1", "code": "KH1", "name": "Công ty A", "phone": "0901", "custom_field12": "a.vn"}
PRODUCT = {"id": "p-1", "code": "SP1", "name": "Trà xanh", "unit_price": "100000"}
ORDER = {
    "id": "o-1",
    "code": "DH1",
    "name": "Đơn trà",
    "customer_code": "KH1",
    "revenue_status": "proposed",
    "lines": [{"line_id": "l1", "product_code": "SP1", "quantity": 2, "unit_price": "100000", "amount": "200000"}],
    "total_amount": "200000",
}


class History:
    """A tenant's retained messages, as ``ops.retained`` reads them back: change events and results."""

    def __init__(self) -> None:
        self.messages: list[Retained] = []

    def change(self, system: str, entity: str, op: str, *, after: Any, before: Any = None, **extra: Any) -> None:
        n = len(self.messages)
        value = change_event_json(
            event_id=f"e{n}",
            tenant=T,
            system=System(system),
            entity=entity,
            op=op,
            ts_ms=DAY + n * 1000,
            before=before,
            after=after,
            **extra,
        )
        record = after if after is not None else before
        self._keep(cdc_topic(System(system), entity), value, f"{T}:{record['id']}")

    def result(self, target: str, entity: str, code: str, target_id: str) -> None:
        value = {
            "command_id": f"r{len(self.messages)}",
            "tenant": T,
            "target": target,
            "entity": entity,
            "status": "applied",
            "target_id": target_id,
            "code": code,
        }
        self._keep(results_topic(System(target)), value, f"{T}:{entity}:{code}")

    def _keep(self, topic: str, value: dict[str, Any], key: str) -> None:
        n = len(self.messages)
        self.messages.append(Retained(topic, 0, n, DAY + n * 1000, key.encode(), orjson.dumps(value)))


def business_day() -> History:
    """A CRM product and customer, an order naming both, the customer linked in accounting, then edits."""
    day = History()
    day.change("crm", "product", "c", after=PRODUCT)
    day.change("crm", "customer", "c", after=CUSTOMER)
    day.change("crm", "sale_order", "c", after=ORDER)
    day.result("acct", "customer", "KH1", "a-1")
    day.result("acct", "product", "SP1", "ap-1")
    day.change("crm", "product", "u", before=PRODUCT, after={**PRODUCT, "name": "Trà xanh 500g"})
    day.change("crm", "customer", "u", before=CUSTOMER, after={**CUSTOMER, "custom_field12": "b.vn"})
    day.change(
        "crm", "customer", "u", before={**CUSTOMER, "custom_field12": "b.vn"}, after={**CUSTOMER, "phone": "0902"}
    )
    return day


PROPOSED = SyncSettings(
    schema_version=2,
    tenant=T,
    revision=1,
    rules_off=frozenset({"PRD-1"}),
    field_mappings=(
        FieldMapping(system=System.CRM, entity="customer", source_field="custom_field12", target_field="website"),
    ),
)


def run(proposed: SyncSettings, rules: RuleBook | None = None) -> dict[str, Any]:
    in_force = load_rules()
    report, counts = whatif(
        business_day().messages,
        rules_in_force=in_force,
        settings_in_force=DEFAULT_SETTINGS,
        rules_proposed=rules or in_force,
        settings_proposed=proposed,
    )
    assert (counts.events, counts.decided, counts.results, counts.bad_input) == (6, 6, 2, 0)
    return report.to_json()


def test_the_same_settings_change_nothing() -> None:
    report = run(DEFAULT_SETTINGS)
    assert (report["events"], report["events_differing"], report["rules"], report["examples"]) == (6, 0, [], [])
    # PRD-1 twice, CUS-10 and SO-1 for the order, CUS-3 for the phone (not for custom_field12: a CRM
    # custom field crosses to accounting only through a field mapping)
    assert report["commands"]["in_force"] == report["commands"]["proposed"] == 5


def test_a_rule_off_and_a_field_mapping_are_previewed_command_by_command() -> None:
    """PRD-1 off (accounting is the product master) and CRM's custom_field12 written as the website."""
    report = run(PROPOSED)
    assert report["rules"] == [
        # the custom field's edit is sent now (the mapping writes it), the phone's edit carries it
        {"rule": "CUS-3", "added": 1, "removed": 0, "changed": 1},
        # the customer sent first for the order carries the mapped field too
        {"rule": "CUS-10", "added": 0, "removed": 0, "changed": 1},
        {"rule": "PRD-1", "added": 0, "removed": 2, "changed": 0},
    ]
    assert (report["commands"], report["events_differing"]) == ({"in_force": 5, "proposed": 4}, 5)
    product = {"code": ("SP1", None), "unit_price": ("100000", None)}
    assert [(e["kind"], e["rule"], e["key"], fields(e), e["event"]) for e in report["examples"]] == [
        (
            "added",
            "CUS-3",
            "KH1",
            {"code": (None, "KH1"), "name": (None, "Công ty A"), "phone": (None, "0901"), "website": (None, "b.vn")},
            "crm customer KH1 (Công ty A) update",
        ),
        (
            "changed",
            "CUS-3",
            "KH1",
            {"website": (None, "a.vn")},
            "crm customer KH1 (Công ty A) update",
        ),
        (
            "changed",
            "CUS-10",
            "KH1",
            {"website": (None, "a.vn")},
            "crm sale_order DH1 (Đơn trà) create",
        ),
        (
            "removed",
            "PRD-1",
            "SP1",
            {**product, "name": ("Trà xanh", None)},
            "crm product SP1 (Trà xanh) create",
        ),
        (
            "removed",
            "PRD-1",
            "SP1",
            {**product, "name": ("Trà xanh 500g", None)},
            "crm product SP1 (Trà xanh 500g) update",
        ),
    ]
    assert {e["source_record"] for e in report["examples"]} == {
        "crm customer KH1 (Công ty A)",
        "crm sale_order DH1 (Đơn trà)",
        "crm product SP1 (Trà xanh)",
        "crm product SP1 (Trà xanh 500g)",
    }


def fields(example: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {name: (v["in_force"], v["proposed"]) for name, v in example["fields"].items()}


def test_a_changed_rule_table_is_previewed_too() -> None:
    """``--rules``: CUS-1 (a CRM customer created: none) made to write the customer to accounting."""
    table = [dict(row) for row in RULE_TABLE]
    cus1 = next(row for row in table if row["id"] == "CUS-1")
    cus1.update(effect="write", target="acct", target_entity="customer", op="upsert")
    report = run(DEFAULT_SETTINGS, load_rules(table))
    # the customer written at its creation need not be sent first for the order any more
    assert report["rules"] == [
        {"rule": "CUS-1", "added": 1, "removed": 0, "changed": 0},
        {"rule": "CUS-10", "added": 0, "removed": 1, "changed": 0},
    ]
    assert [(e["kind"], e["rule"], e["key"], e["event_id"]) for e in report["examples"]] == [
        ("added", "CUS-1", "KH1", "e1"),
        ("removed", "CUS-10", "KH1", "e2"),
    ]
    assert fields(report["examples"][0])["phone"] == (None, "0901")


def test_a_replay_decides_as_the_worker_did_and_writes_nothing() -> None:
    """Replayed alone, the history decides the commands the worker decided live (same ids: the ids are
    made from the events), and bad input is counted, not decided."""
    replay = Replay(load_rules())
    day = business_day()
    day.messages.append(Retained(cdc_topic(System.CRM, "customer"), 0, 99, DAY + 99_000, b"x", b"{not json"))
    decided = list(replay.run(day.messages))
    assert [[c.rule for d in r.decisions for c in d.commands] for r in decided] == [
        ["PRD-1"],
        [],
        ["CUS-10", "SO-1"],
        ["PRD-1"],
        [],  # only custom_field12 changed: it is the company's own, no rule copies it
        ["CUS-3"],
    ]
    assert (replay.counts.events, replay.counts.bad_input, replay.counts.bad_input_reasons) == (7, 1, {"decode": 1})
