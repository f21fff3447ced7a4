"""``lienthong lag``: a group's committed offset, the end offset and the lag of each partition, as a table."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cli.main import main
from ops.lag import read_lag
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.broker


def test_a_group_behind_shows_committed_end_and_lag_per_partition(module_settings, monkeypatch, capsys):
    topic = module_settings.kafka.topic_prefix + "cdc.crm.customer"
    producer = Producer({"bootstrap.servers": module_settings.kafka.bootstrap_servers})
    for n in range(7):
        producer.produce(topic, key=f"t:{n}".encode(), value=b"{}", partition=0)
    for n in range(3):
        producer.produce(topic, key=f"t:{n}".encode(), value=b"{}", partition=1)
    assert producer.flush(10) == 0
    group = f"{module_settings.kafka.topic_prefix}reader-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": module_settings.kafka.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 3)], asynchronous=False)
    consumer.close()

    rows = read_lag(module_settings.kafka, [group])
    assert [(r.topic, r.partition, r.committed, r.end, r.lag) for r in rows] == [
        (topic, 0, 5, 7, 2),
        (topic, 1, 3, 3, 0),
    ]

    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", module_settings.kafka.bootstrap_servers)
    monkeypatch.setenv("LIENTHONG_TOPIC_PREFIX", module_settings.kafka.topic_prefix)
    assert main(["lag", "--group", group]) == 0
    table = capsys.readouterr().out
    assert "2 in all" in table
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in table.splitlines() if topic in line]
    assert cells == [[group, topic, "0", "5", "7", "2"], [group, topic, "1", "3", "3", "0"]], table
    assert main(["lag", "--nonzero"]) == 0  # every group of this prefix, only partitions that lag
    shown = capsys.readouterr().out
    assert group in shown and shown.count(topic) == 1
    assert main(["lag", "--group", group, "--json"]) == 0  # the same, for a script
    document = orjson.loads(capsys.readouterr().out)
    assert document["lag"] == 2
    assert [(p["topic"], p["partition"], p["committed"], p["end"], p["lag"]) for p in document["partitions"]] == [
        (topic, 0, 5, 7, 2),
        (topic, 1, 3, 3, 0),
    ]
    assert document["groups"] == [{"group": group, "state": "empty", "members": []}]


def test_watch_refreshes_until_ctrl_c(module_settings):
    topic = module_settings.kafka.topic_prefix + "cdc.acct.customer"
    group = f"{module_settings.kafka.topic_prefix}watched-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": module_settings.kafka.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    consumer.close()
    # a terminal of 200 columns (a pty), as a person watching it has: the table is redrawn in place
    env = {**os.environ, "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers, "COLUMNS": "200"}
    screen, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "lag", "--group", group, "--watch", "--interval", "0.3"],
        cwd=REPO_ROOT,
        env=env,
        stdout=terminal,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(terminal)
    shown = b""

    def read_screen(until, seconds: float) -> None:
        nonlocal shown
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            if select.select([screen], [], [], 0.2)[0]:
                try:
                    shown += os.read(screen, 65536)
                except OSError:  # the terminal's other end is closed: the process is gone
                    return

    try:
        read_screen(lambda: shown.count(group.encode()) >= 2, 60)  # drawn, then drawn again
        assert shown.count(group.encode()) >= 2, f"the table was not redrawn within 60 s: {shown[-2000:]!r}"
    finally:
        process.send_signal(signal.SIGINT)
        read_screen(lambda: process.poll() is not None, 20)  # what it writes as it stops, read
        _, err = process.communicate(timeout=20)
        os.close(screen)
    assert process.returncode == 0 and "Traceback" not in err, err
    assert topic.encode() in shown
