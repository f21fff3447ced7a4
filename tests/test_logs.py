"""Structured logs (common/logs.py): JSON lines naming the record, text for a terminal, librdkafka's
own lines through the same handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Producer

from common.kafka_config import confluent_config
from common.logs import about, bind_record, record_context, setup_logging
from common.settings import KafkaSettings, LogSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def json_lines(text: str) -> list[dict]:
    """Every line as JSON (a line that is not fails the test, naming it)."""
    lines = []
    for line in text.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    return lines


def test_json_lines_name_the_record_in_context(restore_logging):
    out = io.StringIO()
    assert setup_logging(LogSettings(log_format="json"), "connector-crm", stream=out) == "json"
    log = logging.getLogger("lienthong.test")
    with record_context(tenant="cty-abc", entity="customer", record_id="KH001"):
        with record_context(rule="CUS-1", command_id="c-1"):
            log.warning("rejected %s", "upsert")
        log.info("outside the inner context")
    log.info("about nothing")
    log.info("one line", extra=about(tenant="cty-x", record_id="R9"))
    first, second, third, fourth = json_lines(out.getvalue())
    assert first == {
        "time": first["time"],
        "level": "WARNING",
        "logger": "lienthong.test",
        "message": "rejected upsert",
        "service": "connector-crm",
        "tenant": "cty-abc",
        "entity": "customer",
        "record_id": "KH001",
        "rule": "CUS-1",
        "command_id": "c-1",
    }
    assert "rule" not in second and second["record_id"] == "KH001"
    assert not {"tenant", "entity", "record_id", "rule", "command_id"} & third.keys()
    assert fourth["tenant"] == "cty-x" and fourth["record_id"] == "R9"


def test_text_format_for_a_terminal(restore_logging):
    out = io.StringIO()
    assert setup_logging(LogSettings(log_format="text"), "worker", stream=out) == "text"
    with record_context(tenant="cty-abc", entity="customer", record_id="KH001"):
        logging.getLogger("lienthong.test").warning("dead-lettered")
    line = out.getvalue().strip()
    assert " WARNING lienthong.test: dead-lettered  tenant=cty-abc entity=customer record_id=KH001" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_is_json_unless_stderr_is_a_terminal(restore_logging):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert setup_logging(LogSettings(log_format="auto"), "worker", stream=io.StringIO()) == "json"
    assert setup_logging(LogSettings(log_format="auto"), "worker", stream=Terminal()) == "text"


async def test_each_task_names_its_own_record(restore_logging):
    out = io.StringIO()
    setup_logging(LogSettings(log_format="json"), "connector-crm", stream=out)
    log = logging.getLogger("lienthong.test")

    async def handle(command_id: str) -> None:
        bind_record(tenant="cty-abc", command_id=command_id)
        await asyncio.sleep(0.01)
        log.info("applied")

    await asyncio.gather(handle("c-1"), handle("c-2"))
    log.info("after")
    lines = json_lines(out.getvalue())
    assert sorted(line.get("command_id") for line in lines if line["message"] == "applied") == ["c-1", "c-2"]
    assert "command_id" not in lines[-1]


def test_librdkafka_lines_go_through_the_same_handler(restore_logging):
    out = io.StringIO()
    setup_logging(LogSettings(log_format="json"), "topics-create", stream=out)
    producer = Producer(confluent_config(KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")))
    deadline = time.monotonic() + 10
    kafka = []
    while not kafka and time.monotonic() < deadline:
        producer.poll(0.2)  # librdkafka's log lines are delivered by poll()
        kafka = [line for line in json_lines(out.getvalue()) if line["logger"] == "librdkafka"]
    assert kafka, "no librdkafka line within 10 s"
    assert "Connection refused" in kafka[0]["message"] and kafka[0]["level"] == "ERROR"
    assert kafka[0]["kafka_facility"] and kafka[0]["kafka_client"].startswith("rdkafka#producer")


def test_a_service_run_with_json_logs_writes_only_json_lines(tmp_path):
    """`lienthong connector crm` pointed at a closed port: its stderr is JSON lines, librdkafka's
    complaints among them (no raw %3|… lines)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIENTHONG_")},
        "LIENTHONG_LOG_FORMAT": "json",
        "LIENTHONG_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
        "LIENTHONG_DATA_DIR": str(tmp_path),
        "LIENTHONG_CRM_CONNECTOR_PORT": str(closed_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "connector", "crm"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # both streams read as they come: the service runs until it has said it waits for Kafka (its
    # client was refused by then; librdkafka's own lines about it come out as the client is closed)
    seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
    refused = threading.Event()

    def read(name: str, stream: IO[str]) -> None:
        for line in stream:
            seen[name].append(line)
            if name == "stderr" and "waits for Kafka" in line:
                refused.set()

    readers = [
        threading.Thread(target=read, args=(name, stream), daemon=True)
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    for reader in readers:
        reader.start()
    try:
        assert refused.wait(60), "not waiting for Kafka within 60 s: " + "".join(seen["stderr"])[-2000:]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(10)
    stdout, stderr = "".join(seen["stdout"]), "".join(seen["stderr"])
    lines = json_lines(stderr)
    assert any(line["logger"] == "librdkafka" and "Connection refused" in line["message"] for line in lines), stderr[
        -2000:
    ]
    assert all(line["service"] == "connector-crm" for line in lines)
    assert "%3|" not in stdout + stderr and "%4|" not in stdout + stderr
