"""``lienthong whatif`` on the real broker, as a company's administrator runs it: a tenant's business day
retained on Kafka, proposed settings from a file, the difference per rule and with examples; nothing
written anywhere; a bad file said in one line."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from cli.main import main
from common import topic_wait
from common.kafka_config import confluent_config
from common.names import TENANT_CONFIG
from tests.agents.test_whatif import business_day

SETTINGS = """
rules_off = ["PRD-1"]

[[field_mappings]]
system = "crm"
entity = "customer"
source_field = "custom_field12"
target_field = "address"
"""


@pytest.fixture(autouse=True)
def cli_env(module_settings, monkeypatch):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)


@pytest.fixture(scope="module")
def day(kafka):
    day = business_day()
    now_ms = int(time.time() * 1000)
    for n, message in enumerate(day.messages):
        kafka.producer.produce(kafka.name(message.topic), key=message.key, value=message.value, timestamp=now_ms + n)
    kafka.producer.flush(10)
    return day


def end_offsets(module_settings) -> dict[tuple[str, int], int]:
    """Every partition's end offset of the module's topics: what a command that writes would move."""
    consumer = Consumer(confluent_config(module_settings.kafka, {"group.id": "ends"}))
    try:
        prefix = module_settings.kafka.topic_prefix
        topics = [topic for topic in consumer.list_topics(timeout=10).topics if topic.startswith(prefix)]
        return topic_wait.end_offsets(consumer, topics, 30)
    finally:
        consumer.close()


def test_whatif_previews_a_settings_file_and_writes_nothing(day, module_settings, tmp_path: Path, capsys) -> None:
    settings = tmp_path / "sync.toml"
    settings.write_text(SETTINGS, encoding="utf-8")
    before = end_offsets(module_settings)
    assert main(["whatif", "cty-a", "--settings", str(settings), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert report["rules"] == [
        {"rule": "CUS-3", "added": 1, "removed": 0, "changed": 1},
        {"rule": "CUS-10", "added": 0, "removed": 0, "changed": 1},
        {"rule": "PRD-1", "added": 0, "removed": 2, "changed": 0},
    ]
    assert report["history"] == {
        "change_events": 6,
        "results": 2,
        "bad_input": 0,
        "whole": True,
        "whole_since_ms": None,
    }
    assert report["settings"]["in_force"] == {"schema_version": 1}
    assert report["settings"]["proposed"]["revision"] == 1
    assert [e["fields"] for e in report["examples"] if e["rule"] == "CUS-10"] == [
        {"address": {"in_force": None, "proposed": "a.vn"}}
    ]
    assert end_offsets(module_settings) == before  # nothing written, not even the settings

    assert main(["whatif", "cty-a", "--settings", str(settings)]) == 0
    text = capsys.readouterr().out
    assert (
        "tenant cty-a: 6 change event(s) and 2 result(s) replayed, settings revision 0 against the proposed 1" in text
    )
    assert "PRD-1" in text and "removed upsert" in text and "crm product SP1 (Trà xanh) create" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('rules_off = ["PRD-99"]', "PRD-99 is not a rule of the matrix"),
        ('tenant = "cty-b"', "value names tenant 'cty-b' but the key is 'cty-a'"),
        ("rules_off = [", "is neither JSON nor TOML"),
        (
            '[[field_mappings]]\nsystem = "crm"\nentity = "customer"\nsource_field = "custom_field1"\n'
            'target_field = "website"',
            "acct customer takes no field 'website'",
        ),
    ],
)
def test_a_bad_settings_file_is_one_line_and_exit_2(
    day, module_settings, tmp_path: Path, capsys, text: str, message: str
) -> None:
    settings = tmp_path / "sync.toml"
    settings.write_text(text, encoding="utf-8")
    assert main(["whatif", "cty-a", "--settings", str(settings)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lienthong whatif: ") and message in err and err.count("\n") == 1


def test_whatif_needs_something_proposed(day, capsys) -> None:
    assert main(["whatif", "cty-a"]) == 2
    assert capsys.readouterr().err == "lienthong whatif: give the proposed --settings FILE, --rules FILE, or both\n"


def test_the_settings_in_force_are_the_tenants_on_config_tenants(day, kafka, tmp_path: Path, capsys) -> None:
    """With PRD-1 already off, proposing it off again changes nothing."""
    kafka.produce(
        TENANT_CONFIG,
        {"schema_version": 2, "tenant": "cty-a", "revision": 3, "rules_off": ["PRD-1"]},
        key="cty-a",
    )
    settings = tmp_path / "same.json"
    settings.write_text('{"rules_off": ["PRD-1"]}', encoding="utf-8")
    assert main(["whatif", "cty-a", "--settings", str(settings), "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert (report["rules"], report["settings"]["proposed"]["revision"]) == ([], 4)
