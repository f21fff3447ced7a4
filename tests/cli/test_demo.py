"""The demo's broker and its summary: it uses any broker that answers, whoever started it, and its
summary counts only its own tenant's messages of this run."""

from __future__ import annotations

import uuid

import pytest

from common.settings import KafkaSettings
from demo.run import DemoFailed, _ensure_broker_and_topics, end_offsets, tenant_counts
from demo.settings import DemoSettings
from ops.admin import delete_topics_with_prefix

pytestmark = pytest.mark.broker


def test_the_demo_uses_a_broker_that_answers_whoever_started_it(bootstrap, monkeypatch, tmp_path, capsys):
    # a cache dir of its own: kafka.sh knows no broker there, and would refuse the taken port
    monkeypatch.setenv("LIENTHONG_CACHE_DIR", str(tmp_path / "other-cache"))
    prefix = f"demo-{uuid.uuid4().hex[:8]}."
    settings = DemoSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix), topic_partitions=1)
    try:
        _ensure_broker_and_topics(settings)
        said = capsys.readouterr().out
        assert f"using the Kafka broker at {bootstrap}" in said and "created" in said
    finally:
        delete_topics_with_prefix(settings.kafka, prefix)
    with pytest.raises(DemoFailed, match=r"no Kafka broker answers at nowhere\.invalid:9092.*loopback"):
        _ensure_broker_and_topics(DemoSettings(kafka=KafkaSettings(bootstrap_servers="nowhere.invalid:9092")))


def test_the_demo_summary_counts_only_its_tenants_messages_of_this_run(kafka, module_settings):
    mine, other = f"mine-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    kafka.produce("commands.crm", b"{}", key=f"{mine}:customer:OLD")  # an earlier run
    marks = end_offsets(module_settings.kafka)
    for n in range(2):
        kafka.produce("commands.crm", b"{}", key=f"{mine}:customer:KH{n}")
    for n in range(3):
        kafka.produce("commands.crm", b"{}", key=f"{other}:customer:KH{n}")
    kafka.produce("commands.acct", b"{}", key=f"{other}:sale_order:DH1")
    kafka.produce("dlq.cdc", b"not json", key=f"{mine}:x")
    assert tenant_counts(module_settings.kafka, mine, marks) == {
        "commands.crm": 2,
        "commands.acct": 0,
        "dlq.cdc": 1,
        "dlq.commands": 0,
    }
