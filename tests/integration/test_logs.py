"""A service on the real broker, with JSON logs: every line is JSON, and the lines about a command
name its tenant, entity, record id, rule and command id."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from common.names import System
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id, dumps

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connector_lines_about_a_command_name_it(module_settings, kafka, tmp_path):
    tenant, code = f"cty-{uuid.uuid4().hex[:6]}", "KH001"
    event_id = uuid.uuid4().hex
    command = Command(
        command_id=command_id(
            tenant=tenant, event_id=event_id, rule="CUS-1", target="crm", entity="customer", op="upsert", key=code
        ),
        tenant=tenant,  # no CRM credentials for it: the connector rejects the command at once
        target=System.CRM,
        entity="customer",
        op=Op.UPSERT,
        key=CommandKey(code=code),
        source=CommandSource(system=System.ACCT, entity="customer", id="acct-1", event_id=event_id),
        fields={"account_name": "Công ty ABC"},
        rule="CUS-1",
        ts_ms=int(time.time() * 1000),
    )
    kafka.produce("commands.crm", dumps(command), key=command.message_key)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIENTHONG_")},
        "LIENTHONG_LOG_FORMAT": "json",
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
        "LIENTHONG_DATA_DIR": str(tmp_path),
        "LIENTHONG_CRM_URL": f"http://127.0.0.1:{free_port()}",
        "LIENTHONG_CRM_CONNECTOR_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "connector", "crm"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the connector logs "dead-lettered …" before it writes the dead letter: once that is on the broker,
        # both lines are in its log
        read = kafka.read(
            ["results.crm", "dlq.commands"],
            until=lambda found: {m["topic"] for m in found} >= {"results.crm", "dlq.commands"},
            timeout=60,
        )
        results = [m for m in read if m["topic"] == "results.crm"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert results[0]["value"]["status"] == "rejected"
    lines = []
    for line in stderr.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    about = [line for line in lines if line.get("command_id") == command.command_id]
    messages = [line["message"] for line in about]
    assert any(m.startswith("rejected upsert") for m in messages), messages
    assert any(m.startswith("dead-lettered") for m in messages), messages
    for line in about:
        assert (line["tenant"], line["entity"], line["record_id"], line["rule"]) == (tenant, "customer", code, "CUS-1")
        assert line["service"] == "connector-crm"
