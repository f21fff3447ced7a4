"""The demo's broker and its summary: it uses any broker that answers, whoever started it, and its
summary counts only its own tenant's messages of this run. Run after run, it ends the same way: each
run has topics and files of its own, and clears the earlier runs'. It knows its worker is ready from the
process and its /readyz, and says which port is taken."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from demo.run import DemoFailed, _ensure_broker_and_topics, end_offsets, tenant_counts
from demo.settings import DemoSettings
from ops.admin import admin_client, delete_topics_with_prefix

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


# --- the demo as a user runs it, again and again (python -m cli demo --exit, a process of its own) --------

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def demo(bootstrap: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("LIENTHONG_")}
    clean.update(
        {
            "PYTHONPATH": str(REPO),
            "LIENTHONG_BOOTSTRAP_SERVERS": bootstrap,
            "LIENTHONG_DATA_DIR": str(tmp_path / "data"),
            "LIENTHONG_WEB_PORT": str(free_port()),
            **env,
        }
    )
    argv = ["demo", "--exit", "--crm-port", "0", "--acct-port", "0", "--dashboard-port", "0"]
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv], cwd=REPO, env=clean, capture_output=True, text=True, timeout=300
    )


def test_the_demo_ends_the_same_way_run_after_run_each_run_clean(bootstrap, tmp_path):
    prefixes = []
    for _ in range(2):
        result = demo(bootstrap, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "this run's commands for cty-demo: crm 6, acct 4; dead letters 0" in result.stdout, result.stdout
        (prefix,) = re.findall(r"its topics: (\S+)\*", result.stdout)
        prefixes.append(prefix)
    first, second = prefixes
    assert first != second
    topics = admin_client(KafkaSettings(bootstrap_servers=bootstrap)).list_topics(timeout=10).topics
    assert not [name for name in topics if name.startswith(first)], "the first run's topics are left"
    assert [name for name in topics if name.startswith(second)]
    (run_dir,) = (tmp_path / "data" / "demo").iterdir()  # the first run's files are gone, the last one's kept
    assert second.endswith(f"{run_dir.name}.") and (run_dir / "worker.log").is_file()
    delete_topics_with_prefix(KafkaSettings(bootstrap_servers=bootstrap), second)


def test_the_demo_knows_its_worker_died_and_says_why(bootstrap, tmp_path):
    # a setting only the worker reads, invalid: the worker process exits at once
    result = demo(bootstrap, tmp_path, LIENTHONG_CONSUMER_FETCH_KB="0")
    assert result.returncode == 2, result.stdout + result.stderr
    (said,) = result.stderr.strip().splitlines()
    assert said.startswith("lienthong demo: the worker exited (status 2) before it was ready: ")
    assert "LIENTHONG_CONSUMER_FETCH_KB" in said and "worker.log" in said
    assert "worker ready" not in result.stdout


def test_the_demo_says_which_port_is_taken_and_what_moves_it(bootstrap, tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        result = demo(bootstrap, tmp_path, LIENTHONG_WEB_PORT=port)
    assert result.returncode == 2, result.stdout + result.stderr
    (said,) = result.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port} (another process listens there)" in said
    assert "LIENTHONG_WEB_PORT" in said
