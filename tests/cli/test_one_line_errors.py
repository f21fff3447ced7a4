"""A user's mistake gets one line saying what was wrong and what to do, exit code 2, and no traceback:
through ``main`` (the operator's commands), and through the command itself, a process of its own (the
services' taken ports, a missing broker, a bad setting or command line)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


# --- the same, through the command a user types (a process of its own: python -m cli) --------------------

REPO = Path(__file__).resolve().parents[2]


def run_cli(argv: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``lienthong ARGV`` as a user runs it, with only the given LIENTHONG_* settings (and this checkout's code)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("LIENTHONG_")}
    clean.update({"PYTHONPATH": str(REPO), "LIENTHONG_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv], cwd=REPO, env=clean, capture_output=True, text=True, timeout=120
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lienthong "), result.stderr
    return lines[0]


@pytest.fixture()
def taken_port() -> Iterator[int]:
    """A port another process would hold: something listens there."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_service_whose_port_is_taken_names_the_port_and_what_moves_it(bootstrap, taken_port, tmp_path):
    port = str(taken_port)
    broker = {"LIENTHONG_BOOTSTRAP_SERVERS": bootstrap}
    crm = {"LIENTHONG_CRM_CREDENTIALS": '{"t1": {"client_id": "a", "client_secret": "s"}}'}
    cases = [
        ("worker", ["worker"], {"LIENTHONG_WEB_PORT": port}, "LIENTHONG_WEB_PORT"),
        (
            "connector crm",
            ["connector", "crm"],
            {**crm, "LIENTHONG_CRM_CONNECTOR_PORT": port},
            "LIENTHONG_CRM_CONNECTOR_PORT",
        ),
        ("capture crm", ["capture", "crm"], {**crm, "LIENTHONG_CRM_CAPTURE_PORT": port}, "LIENTHONG_CRM_CAPTURE_PORT"),
        (
            "webhooks",
            ["webhooks", "--port", "0"],
            {"LIENTHONG_WEBHOOK_METRICS_PORT": port},
            "LIENTHONG_WEBHOOK_METRICS_PORT",
        ),
        ("dashboard", ["dashboard", "--port", port], {}, "--port"),
        ("sandbox crm", ["sandbox", "crm", "--port", port], {}, "--port"),
    ]
    for name, argv, env, mover in cases:
        said = one_line(run_cli(argv, {**broker, **env}, tmp_path))
        assert said.startswith(f"lienthong {name}: "), said
        assert f"cannot listen on 127.0.0.1:{port} (another process listens there)" in said, said
        assert mover in said, said


def test_every_command_says_a_missing_broker_the_same_way_within_the_one_timeout(tmp_path):
    env = {"LIENTHONG_BROKER_TIMEOUT": "2", "LIENTHONG_WEB_PORT": "0"}
    said = {}
    for argv in (["lag"], ["dlq", "list"], ["topics", "create"], ["explain", "t1", "customer", "C1"], ["worker"]):
        line = one_line(run_cli([*argv, "-b", NOWHERE], env, tmp_path))
        said[argv[0]] = line.split(": ", 1)[1]
    assert len(set(said.values())) == 1, said
    (wording,) = set(said.values())
    assert wording.startswith(f"no Kafka broker answers at {NOWHERE} (PLAINTEXT) within 2s (")
    assert "lienthong kafka start" in wording and "LIENTHONG_BROKER_TIMEOUT" in wording


def test_a_bad_setting_or_command_line_is_one_line_naming_it(tmp_path):
    said = one_line(run_cli(["worker"], {"LIENTHONG_TOPIC_PARTITIONS": "0"}, tmp_path))
    assert said.startswith("lienthong worker: invalid setting(s): LIENTHONG_TOPIC_PARTITIONS:"), said
    said = one_line(run_cli(["dlq", "purge"], {}, tmp_path))
    assert "'purge' is not one of 'list', 'show', 'replay'" in said and "lienthong dlq --help" in said
    said = one_line(run_cli(["connector", "erp"], {}, tmp_path))
    assert "'erp' is not one of 'crm', 'acct'" in said
    said = one_line(run_cli(["reconcile"], {}, tmp_path))
    assert "Missing option '--tenant'" in said


def test_the_version_and_the_help_of_every_command(tmp_path):
    version = run_cli(["--version"], {}, tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("lienthong "), version
    listed = run_cli(["--help"], {}, tmp_path)
    assert listed.returncode == 0
    commands = [line.split()[0] for line in listed.stdout.split("Commands:")[1].splitlines() if line.startswith("  ")]
    assert {"worker", "topics", "lag", "dlq", "backfill", "demo", "sandbox"} <= set(commands)
    dlq = run_cli(["dlq", "-h"], {}, tmp_path).stdout
    assert "TOPIC:PARTITION:OFFSET" in dlq and "--bootstrap-server" in dlq and "--dry-run" in dlq
