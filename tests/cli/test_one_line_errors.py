"""A user's mistake gets one line saying what was wrong and what to do, exit code 2, and no traceback."""

from __future__ import annotations

import pytest

from cli.main import main

pytestmark = pytest.mark.broker

NOWHERE = "127.0.0.1:1"  # nothing listens there


@pytest.fixture()
def on_module_topics(module_settings, monkeypatch):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
    return module_settings


def said(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured.out, captured.err)
    assert "Traceback" not in captured.err + captured.out
    line = captured.err.strip()
    assert line.startswith("lienthong ") and "\n" not in line, line
    return line


def test_an_unknown_tenant_is_named_with_the_tenants_that_have_credentials(on_module_topics, monkeypatch, capsys):
    monkeypatch.setenv("LIENTHONG_CRM_CREDENTIALS", '{"cty-abc": {"client_id": "a", "client_secret": "s"}}')
    monkeypatch.setenv("LIENTHONG_ACCT_CREDENTIALS", '{"cty-abc": {"access_code": "c", "org_company_code": "0101"}}')
    message = said(capsys, ["reconcile", "--tenant", "cty-xyz"])
    assert "unknown tenant 'cty-xyz'" in message and "cty-abc" in message and "LIENTHONG_CRM_CREDENTIALS" in message
    message = said(capsys, ["backfill", "--tenant", "cty-xyz", "--system", "crm"])
    assert "unknown tenant 'cty-xyz'" in message and "cty-abc" in message


def test_a_system_that_does_not_answer_is_named_with_its_setting(on_module_topics, monkeypatch, capsys):
    monkeypatch.setenv("LIENTHONG_CRM_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("LIENTHONG_CRM_CREDENTIALS", '{"t1": {"client_id": "a", "client_secret": "s"}}')
    monkeypatch.setenv("LIENTHONG_ACCT_CREDENTIALS", '{"t1": {"access_code": "c", "org_company_code": "0101"}}')
    monkeypatch.setenv("LIENTHONG_ACCT_APP_ID", "app")
    message = said(capsys, ["reconcile", "--tenant", "t1"])
    assert "could not read CRM customers of t1 at http://127.0.0.1:1" in message


def test_a_broker_that_does_not_answer_says_how_to_start_one(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", NOWHERE)
    for argv in (["lag"], ["dlq", "list"]):
        message = said(capsys, argv)
        assert NOWHERE in message and ("kafka start" in message or "kafka status" in message), message
    records = tmp_path / "customers.jsonl"
    records.write_text('{"id": "C1", "code": "KH1", "name": "A"}\n')
    message = said(
        capsys, ["backfill", "--tenant", "t1", "--system", "acct", "--entity", "customer", "--from-file", str(records)]
    )
    assert NOWHERE in message and "kafka start" in message


def test_unknown_topics_groups_and_positions_are_refused_with_what_exists(on_module_topics, capsys):
    assert "'dlq.nope' is not a dead-letter topic; use one of dlq.cdc, dlq.commands" in said(
        capsys, ["dlq", "list", "--topic", "dlq.nope"]
    )
    assert "no dead letter at dlq.cdc:0:99" in said(capsys, ["dlq", "show", "dlq.cdc:0:99"])
    assert "names no dead letter" in said(capsys, ["dlq", "show", "somewhere"])
    assert "cannot read the time 'yesterday-ish'" in said(capsys, ["dlq", "list", "--since", "yesterday-ish"])
    assert "no consumer group no-such-group" in said(capsys, ["lag", "--group", "no-such-group"])


def test_topics_that_were_never_created_are_named(module_settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", "never-created.")
    records = tmp_path / "r.jsonl"
    records.write_text('{"id": "C1", "code": "KH1", "name": "A"}\n')
    message = said(
        capsys, ["backfill", "--tenant", "t1", "--system", "acct", "--entity", "customer", "--from-file", str(records)]
    )
    assert "never-created.cdc.acct.customer not found" in message and "lienthong topics create" in message
    assert "lienthong topics create" in said(capsys, ["dlq", "list"])


def test_a_bad_file_is_refused_by_line_before_anything_is_published(on_module_topics, kafka, capsys, tmp_path):
    records = tmp_path / "bad.jsonl"
    records.write_text('{"id": "C1", "code": "KH1", "name": "A"}\n{"id": "C2", "code": \n')
    message = said(
        capsys, ["backfill", "--tenant", "t1", "--system", "acct", "--entity", "customer", "--from-file", str(records)]
    )
    assert f"{records}:2: not JSON" in message
    records.write_text('{"id": "C1", "code": "KH1", "total_amount": 1.5}\n')
    message = said(
        capsys,
        ["backfill", "--tenant", "t1", "--system", "acct", "--entity", "sale_order", "--from-file", str(records)],
    )
    assert f"{records}:1: the processor would refuse it" in message and "total_amount" in message
    assert "no entity 'client'" in said(
        capsys, ["backfill", "--tenant", "t1", "--system", "crm", "--entity", "client", "--from-file", str(records)]
    )
    assert "cannot read" in said(
        capsys,
        ["backfill", "--tenant", "t1", "--system", "crm", "--entity", "customer", "--from-file", "/nonexistent.jsonl"],
    )
    assert "which entity" in said(
        capsys, ["backfill", "--tenant", "t1", "--system", "crm", "--from-file", str(records)]
    )
    assert kafka.read_to_end(["cdc.acct.customer", "cdc.acct.sale_order"]) == []  # the commands have returned
