"""The broker's part of the security model: on the SASL_SSL broker of deploy/kafka/secure.sh, which
authorizes every request against the ACLs of ops/acls.py, each service's principal may do what that
service does and nothing else; above all, only capture may write change events.

Every client is configured as the services configure theirs (common.kafka_config, from the
LIENTHONG_KAFKA_* settings of the principal's client-<user>.env). The deployment has a topic prefix
and its own app id, so the prefixed ACLs are what is exercised.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from common.kafka_config import confluent_config
from common.settings import KafkaSettings
from ops.admin import create_topics
from ops.dashboard.collect import DashboardData
from streams.settings import TableSettings, WorkerSettings
from tests.integration.conftest import Kafka, Worker, change_event
from tests.integration.test_security import SECURE_SH, free_port_pair

pytestmark = pytest.mark.broker

PREFIX = f"acl-{uuid.uuid4().hex[:8]}."
APP_ID = f"{PREFIX}lienthong"


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> Iterator[dict[str, dict[str, str]]]:
    """A SASL_SSL broker with this module's ACLs (its prefix and app id), the contract's topics made
    by the admin; each SCRAM user's client settings."""
    if shutil.which("keytool") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("needs a JDK 17+ (keytool) for deploy/kafka/secure.sh: apt-get install openjdk-17-jdk-headless")
    data = tmp_path_factory.mktemp("acl-broker")
    env = {
        **os.environ,
        "LIENTHONG_SECURE_KAFKA_PORT": str(free_port_pair()),
        "LIENTHONG_SECURE_KAFKA_DATA": str(data),
        "LIENTHONG_KAFKA_HEAP": "384m",
        "LIENTHONG_TOPIC_PREFIX": PREFIX,
        "LIENTHONG_APP_ID": APP_ID,
        "LIENTHONG_PYTHON": sys.executable,
    }
    try:
        started = subprocess.run(
            ["bash", str(SECURE_SH), "start"], env=env, capture_output=True, text=True, timeout=150
        )
        assert started.returncode == 0, f"secure.sh start failed:\n{started.stdout}\n{started.stderr}"
        assert "ACL bindings in place" in started.stdout, started.stdout
        found = {}
        for user in ("admin", "worker", "capture", "connector", "dashboard"):
            lines = (data / f"client-{user}.env").read_text().splitlines()
            found[user] = dict(line.split("=", 1) for line in lines if "=" in line)
        created = create_topics(as_user(found["admin"]), partitions=2, replication_factor=1)
        assert {outcome.status for outcome in created} == {"created"}
        yield found
    finally:  # also when start failed half-way: no broker is left behind on its ports
        subprocess.run(["bash", str(SECURE_SH), "stop"], env=env, capture_output=True, timeout=60)


def as_user(client_env: dict[str, str]) -> KafkaSettings:
    """The shared Kafka settings block as a service with this client env reads it."""
    fields = {name.removeprefix("LIENTHONG_").lower(): value for name, value in client_env.items()}
    return KafkaSettings(**fields, topic_prefix=PREFIX)


def produce(kafka: KafkaSettings, topic: str, idempotent: bool = True) -> KafkaError | None:
    """Produce one message as the services do (acks=all, idempotent); the delivery error, or None."""
    producer = Producer(confluent_config(kafka, {"acks": "all", "enable.idempotence": idempotent}))
    outcome: list[KafkaError | None] = []
    producer.produce(PREFIX + topic, key=b"t1:A1", value=b"{}", on_delivery=lambda err, _msg: outcome.append(err))
    producer.flush(20)
    assert outcome, f"no delivery report for {topic} within 20 s"
    return outcome[0]


WRITES = [
    ("capture", "cdc.acct.customer", True),
    ("connector", "cdc.acct.customer", False),
    ("worker", "cdc.crm.customer", False),
    ("dashboard", "cdc.crm.customer", False),
    ("connector", "results.acct", True),
    ("connector", "dlq.commands", True),
    ("worker", "results.acct", False),
    ("capture", "commands.crm", False),
    ("connector", "commands.crm", False),
    ("dashboard", "audit.sync", False),
    ("capture", "config.tenants", False),
]


@pytest.mark.parametrize(("user", "topic", "allowed"), WRITES)
def test_who_may_write_where(users, user, topic, allowed):
    # The dashboard writes nowhere, so the broker gives it no producer id: an idempotent producer would
    # stop at that (CLUSTER_AUTHORIZATION_FAILED) before the topic is asked; a plain one is what it has.
    error = produce(as_user(users[user]), topic, idempotent=user != "dashboard")
    if allowed:
        assert error is None, f"{user} could not write {topic}: {error}"
    else:
        assert error is not None, f"{user} wrote {topic}"
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_transactions_only_under_the_workers_own_transactional_ids(users):
    worker = as_user(users["worker"])
    producer = Producer(confluent_config(worker, {"transactional.id": f"{APP_ID}-{uuid.uuid4().hex}"}))
    producer.init_transactions(20)
    producer.begin_transaction()
    producer.produce(PREFIX + "commands.crm", key=b"t1:A1", value=b"{}")
    producer.produce(PREFIX + "audit.sync", key=b"t1:A1", value=b"{}")
    producer.commit_transaction(20)

    elsewhere = Producer(confluent_config(worker, {"transactional.id": f"someone-else-{uuid.uuid4().hex}"}))
    with pytest.raises(KafkaException) as refused:
        elsewhere.init_transactions(20)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    connector = as_user(users["connector"])
    stranger = Producer(confluent_config(connector, {"transactional.id": f"{APP_ID}-{uuid.uuid4().hex}"}))
    with pytest.raises(KafkaException) as refused:
        stranger.init_transactions(20)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_the_worker_as_its_own_principal_turns_a_change_into_a_command(users, monkeypatch, tmp_path):
    """The real worker with the worker's settings: it creates its own topics, joins its group, reads
    the tenant settings, commits each batch in a transaction; capture writes the change, a connector
    reads the command."""
    for name, value in users["worker"].items():
        monkeypatch.setenv(name, value)  # the worker subprocess inherits them
    settings = WorkerSettings(
        kafka=as_user(users["worker"]),
        tables=TableSettings(data_dir=tmp_path / "worker"),
        app_id=APP_ID,
        web_enabled=False,
        topic_partitions=2,
    )
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready(timeout=60)
        tenant = f"tenant-{uuid.uuid4().hex[:8]}"
        event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty Phân Quyền"})
        Kafka(as_user(users["capture"])).produce("cdc.acct.customer", event, key=f"{tenant}:A1")
        messages = Kafka(as_user(users["connector"])).read(
            ["commands.crm"], until=lambda ms: any((m["key"] or "").startswith(f"{tenant}:") for m in ms), timeout=45
        )
    finally:
        worker.stop()
    (command,) = [m["value"] for m in messages if (m["key"] or "").startswith(f"{tenant}:")]
    assert command["rule"] == "CUS-6"
    assert command["fields"]["name"] == "Công ty Phân Quyền"
    assert "AUTHORIZATION_FAILED" not in (tmp_path / "worker.log").read_text()


def connector_consumer(kafka: KafkaSettings, group: str) -> Consumer:
    return Consumer(
        confluent_config(kafka, {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    )


def test_a_connector_reads_its_commands_in_its_group_and_no_other(users):
    connector = as_user(users["connector"])
    assert produce(as_user(users["admin"]), "commands.acct") is None
    consumer = connector_consumer(connector, f"{PREFIX}lienthong-connector-acct")
    try:
        consumer.subscribe([PREFIX + "commands.acct"])
        message = poll_one(consumer)
        consumer.commit(message, asynchronous=False)
    finally:
        consumer.close()

    # the worker's group is not a connector's: joining it is refused
    intruder = connector_consumer(connector, APP_ID)
    try:
        intruder.subscribe([PREFIX + "commands.acct"])
        error = poll_error(intruder)
    finally:
        intruder.close()
    assert error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, error

    # nor may it read the change events
    reader = connector_consumer(connector, f"{PREFIX}lienthong-connector-crm")
    try:
        reader.subscribe([PREFIX + "cdc.crm.customer"])
        error = poll_error(reader)
    finally:
        reader.close()
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_the_dashboard_sees_topics_and_groups_and_changes_nothing(users):
    # a connector group with a committed offset, for the dashboard to measure
    assert produce(as_user(users["admin"]), "commands.crm") is None
    consumer = connector_consumer(as_user(users["connector"]), f"{PREFIX}lienthong-connector-crm")
    try:
        consumer.subscribe([PREFIX + "commands.crm"])
        consumer.commit(poll_one(consumer), asynchronous=False)
    finally:
        consumer.close()
    assert produce(as_user(users["admin"]), "commands.crm") is None  # one behind: lag 1 at least

    assert produce(as_user(users["admin"]), "audit.sync") is None  # for its tail to read

    dashboard = DashboardData(as_user(users["dashboard"]))
    assert f"{PREFIX}lienthong-connector-crm" in dashboard.groups()
    sample = dashboard.sample_now()
    assert set(sample.ends) >= {"cdc.acct.customer", "commands.crm", "results.acct", "audit.sync", "config.tenants"}
    assert sample.lag.get((f"{PREFIX}lienthong-connector-crm", "commands.crm"), 0) >= 1
    dashboard.start()
    try:
        deadline = time.monotonic() + 20
        while dashboard.tail_position.get("audit.sync", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        dashboard.stop()
    assert dashboard.tail_error is None
    assert dashboard.tail_position.get("audit.sync", 0) >= 1, dashboard.tail_position

    # read-only: committing in a connector's group is refused
    dashboard_consumer = Consumer(
        confluent_config(
            as_user(users["dashboard"]),
            {"group.id": f"{PREFIX}lienthong-connector-crm", "enable.auto.commit": False},
        )
    )
    try:
        with pytest.raises(KafkaException) as refused:
            dashboard_consumer.commit(offsets=[TopicPartition(PREFIX + "commands.crm", 0, 0)], asynchronous=False)
    finally:
        dashboard_consumer.close()
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def poll_one(consumer: Consumer, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None:
            assert not message.error(), message.error()
            return message
    raise AssertionError(f"no message within {timeout} s")


def poll_error(consumer: Consumer, timeout: float = 20.0) -> KafkaError:
    """The first error the consumer reports (a refused group or topic), failing if it reads a message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = consumer.poll(0.5)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            return error
        if message is not None:
            assert message.error(), f"read {message.topic()}@{message.offset()}: it should be refused"
            return message.error()
    raise AssertionError(f"no error within {timeout} s")
