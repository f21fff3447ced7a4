"""Transport security on a real broker: a second local broker whose only listener is SASL_SSL
(SCRAM-SHA-512 over TLS, made by deploy/kafka/secure.sh with keytool and kafka-storage's --add-scram).

The worker, the topic tools and the test's own clients all connect through the LIENTHONG_KAFKA_* settings;
a wrong password is refused at start with a message that says so, within seconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from ops.admin import create_topics
from streams.settings import TableSettings, WorkerSettings
from tests.integration.conftest import REPO_ROOT, Kafka, Worker, change_event

pytestmark = pytest.mark.broker

SECURE_SH = REPO_ROOT / "deploy" / "kafka" / "secure.sh"


def free_port_pair() -> int:
    """A port P on loopback with P+1 free too (the broker's client and controller ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


@pytest.fixture(scope="module")
def secure_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """A SASL_SSL broker of this module's own (port, data, keys, users); its client settings."""
    data = tmp_path_factory.mktemp("secure-broker")
    env = {
        **os.environ,
        "LIENTHONG_SECURE_KAFKA_PORT": str(free_port_pair()),
        "LIENTHONG_SECURE_KAFKA_DATA": str(data),
        "LIENTHONG_KAFKA_HEAP": "384m",
        "LIENTHONG_PYTHON": sys.executable,  # secure.sh applies the ACLs with the project's Python
    }
    started = subprocess.run(["bash", str(SECURE_SH), "start"], env=env, capture_output=True, text=True, timeout=150)
    try:
        assert started.returncode == 0, f"secure.sh start failed:\n{started.stdout}\n{started.stderr}"
        client = dict(line.split("=", 1) for line in (data / "client.env").read_text().splitlines() if "=" in line)
        yield client
    finally:
        subprocess.run(["bash", str(SECURE_SH), "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture()
def secure_settings(secure_env, monkeypatch, tmp_path) -> WorkerSettings:
    for name, value in secure_env.items():
        monkeypatch.setenv(name, value)  # the worker subprocess inherits them
    prefix = f"sec-{uuid.uuid4().hex[:8]}."
    return WorkerSettings(
        kafka=KafkaSettings(topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "worker"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )


def test_the_secure_broker_refuses_a_client_without_tls_and_sasl(secure_env):
    plain = KafkaSettings(
        bootstrap_servers=secure_env["LIENTHONG_BOOTSTRAP_SERVERS"], kafka_security_protocol="PLAINTEXT"
    )
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": plain.bootstrap_servers}).list_topics(timeout=3)


def test_worker_over_sasl_ssl_turns_a_change_into_a_command(secure_settings, tmp_path):
    secure = secure_settings.kafka
    assert secure.kafka_security_protocol == "SASL_SSL"
    created = create_topics(
        secure,
        partitions=secure_settings.topic_partitions,
        replication_factor=secure_settings.topic_replication_factor,
    )
    assert {outcome.status for outcome in created} == {"created"}
    kafka = Kafka(secure)
    worker = Worker(secure_settings, tmp_path / "worker.log")
    try:
        worker.wait_ready(timeout=90)
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty An Toàn"})
        kafka.produce("cdc.acct.customer", event, key=f"{tenant}:A1")
        messages = kafka.read(
            ["commands.crm"], until=lambda ms: any(m["key"].startswith(f"{tenant}:") for m in ms), timeout=60
        )
    finally:
        worker.stop()
    (command,) = [m["value"] for m in messages if m["key"].startswith(f"{tenant}:")]
    assert command["rule"] == "CUS-6"
    assert command["fields"]["name"] == "Công ty An Toàn"
    # the worker logged in with the password and logged it nowhere
    assert secure.kafka_sasl_password is not None
    assert secure.kafka_sasl_password.get_secret_value() not in (tmp_path / "worker.log").read_text()


def test_a_wrong_password_is_refused_at_start_with_a_clear_error(secure_env, monkeypatch, tmp_path):
    for name, value in secure_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LIENTHONG_KAFKA_SASL_PASSWORD", "not-the-password")
    monkeypatch.setenv("LIENTHONG_DATA_DIR", str(tmp_path))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "worker"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert "refused the login" in done.stderr
    assert "LIENTHONG_KAFKA_SASL_PASSWORD" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout
    assert took < 30


def test_incomplete_security_settings_are_refused_naming_the_variable(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("LIENTHONG_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LIENTHONG_KAFKA_SASL_PASSWORD", "s3cret-never-shown")
    monkeypatch.delenv("LIENTHONG_KAFKA_SASL_USERNAME", raising=False)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "list"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "LIENTHONG_KAFKA_SASL_USERNAME" in done.stderr
    assert "s3cret-never-shown" not in done.stderr + done.stdout
