"""``--json`` of the read commands that need no broker: one JSON document on stdout that says what the
table says (reconcile's is in test_reconcile.py, with the sandboxes)."""

from __future__ import annotations

import orjson

from cli.main import main
from streams.core.rules import load_rules
from streams.topics import contract_topics


def test_the_rule_table_as_json(capsys):
    assert main(["matrix", "--json"]) == 0
    rules = orjson.loads(capsys.readouterr().out)
    book = load_rules()
    assert [rule["id"] for rule in rules] == [rule.id for rule in book.rules]
    cus3 = next(rule for rule in rules if rule["id"] == "CUS-3")
    expected = next(rule for rule in book.rules if rule.id == "CUS-3")
    assert cus3["source"] == expected.source.value and cus3["entity"] == expected.entity
    assert cus3["requires_link"] is True and cus3["label_en"] == expected.label_en


def test_the_contract_topics_as_json(capsys, monkeypatch):
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", "acme.")
    assert main(["topics", "list", "--json"]) == 0
    topics = orjson.loads(capsys.readouterr().out)
    assert [topic["name"] for topic in topics] == [f"acme.{spec.name}" for spec in contract_topics()]
    compacted = {topic["name"] for topic in topics if topic["config"].get("cleanup.policy") == "compact"}
    assert compacted == {f"acme.{spec.name}" for spec in contract_topics() if spec.compacted}
