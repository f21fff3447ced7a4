"""The operator's commands of issue 25 as a user runs them on the real broker: ``explain`` by code with
``--json`` and one-line refusals, ``tenant set|get|list`` as JSON, ``lag`` with each group's state and
members, ``dlq list`` over every dead-letter topic."""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cli.main import main
from tests.integration.conftest import change_event

pytestmark = pytest.mark.broker


@pytest.fixture()
def on_module_topics(module_settings, monkeypatch, tmp_path):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))  # history's index
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
    return module_settings


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.out, captured.err


def test_explain_by_code_as_json_and_its_refusals(worker, kafka, tenant, on_module_topics, capsys):
    customer = {"id": "A7", "code": "KH0007", "name": "Khách 7"}
    event = change_event(tenant, "acct", "customer", customer)
    kafka.produce("cdc.acct.customer", event, key=f"{tenant}:A7")
    kafka.read(["audit.sync"], until=lambda ms: any(m["value"]["event_id"] == event["event_id"] for m in ms))

    code, out, _ = run(capsys, ["explain", tenant, "customer", "KH0007", "--json"])
    assert code == 0
    found = orjson.loads(out)
    (change,) = found["changes"]
    assert (change["record_id"], change["rule"]) == ("A7", "CUS-6")
    (command,) = change["commands"]
    assert (command["rule"], command["target"], command["key"]) == ("CUS-6", "crm", "KH0007")
    assert command["status"] == "pending"  # no connector in this module: no result came back

    code, out, err = run(capsys, ["explain", tenant, "customer", "KH9999"])
    assert code == 1 and "no customer 'KH9999'" in err
    code, _, err = run(capsys, ["explain", tenant, "custmer", "KH0007"])
    assert code == 2 and "no entity 'custmer'" in err and "customer" in err and "\n" not in err.strip()
    code, _, err = run(capsys, ["explain", f"{tenant}-typo", "customer", "KH0007"])
    assert code == 2 and f"no message of tenant '{tenant}-typo'" in err and "\n" not in err.strip()


def test_tenant_set_get_list_print_json_and_refuse_what_the_contract_refuses(on_module_topics, tenant, capsys):
    code, out, _ = run(capsys, ["tenant", "set", tenant, "--order-target", "contract"])
    assert code == 0 and orjson.loads(out) == {"schema_version": 1, "tenant": tenant, "order_target": "contract"}
    code, out, _ = run(capsys, ["tenant", "get", tenant])
    assert code == 0 and orjson.loads(out)["order_target"] == "contract"
    code, out, _ = run(capsys, ["tenant", "list"])
    assert code == 0 and tenant in [t["tenant"] for t in orjson.loads(out)]

    code, _, err = run(capsys, ["tenant", "set", "cty:abc", "--order-target", "contract"])
    assert code == 2 and "is not a tenant id" in err
    code, _, err = run(capsys, ["tenant", "set", tenant])
    assert code == 2 and "--order-target" in err
    code, _, err = run(capsys, ["tenant", "get", f"{tenant}-none"])
    assert code == 1 and "has no settings" in err


def test_lag_says_each_groups_state_and_plainly_when_it_has_no_member(on_module_topics, capsys):
    settings = on_module_topics
    topic = settings.kafka.topic_prefix + "cdc.crm.product"
    group = f"{settings.kafka.topic_prefix}gone-{uuid.uuid4().hex[:6]}"
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(topic, value=b"{}", partition=0)  # the topic made a moment ago is known once this is taken
    assert producer.flush(15) == 0
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()
    code, out, _ = run(capsys, ["lag", "--group", group])
    assert code == 0
    (row,) = [
        [cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "nothing consumes" in line
    ]
    assert row[:3] == [group, "empty", "0"], out


def test_dlq_list_covers_every_dead_letter_topic_by_default(kafka, tenant, on_module_topics, capsys):
    kafka.produce("dlq.cdc", b"not json", key=f"{tenant}:x", headers={"error.kind": b"decode"})
    kafka.produce("dlq.commands", b"{}", key=f"{tenant}:customer:KH1", headers={"error.kind": b"http_401"})
    code, out, _ = run(capsys, ["dlq", "list", "--tenant", tenant])
    assert code == 0 and ": 2" in out and "decode" in out and "http_401" in out, out
    code, out, _ = run(capsys, ["dlq", "list", "--tenant", tenant, "--topic", "dlq.commands"])
    assert code == 0 and ": 1" in out and "http_401" in out and "decode" not in out


def test_a_broker_that_does_not_answer_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # nothing listens there
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))
    for argv in (
        ["explain", "t1", "customer", "KH1"],
        ["history", "t1", "customer", "KH1"],
        ["tenant", "get", "t1"],
        ["tenant", "list"],
    ):
        code, _, err = run(capsys, argv)
        assert code == 2 and "127.0.0.1:1" in err and "\n" not in err.strip(), (argv, err)
