"""Upgrading a deployment that ran the faust tables (until 2026-12): no link is lost.

The old processor's changelogs (``<app id>-links-changelog`` and the others, JSON keys and values as
faust wrote them) hold a tenant's link; ``lienthong tables migrate`` copies them to the state
changelog; the new worker restores them, and a salesperson's edit of the linked customer is CUS-3
to the accounting record the old tables knew — not "not linked".
"""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from cli.main import main
from common.kafka_config import confluent_config
from common.names import changes_topic
from common.settings import KafkaSettings
from ops.admin import create_topics, delete_topics_with_prefix
from streams.settings import TableSettings, WorkerSettings
from streams.upgrade import partition_of
from tests.integration.conftest import Kafka, Worker, change_event

pytestmark = pytest.mark.broker


@pytest.fixture()
def old_deployment(bootstrap, tmp_path):
    prefix = f"up-{uuid.uuid4().hex[:8]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "data"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )
    create_topics(settings.kafka, partitions=settings.topic_partitions, replication_factor=1)
    admin = AdminClient(confluent_config(settings.kafka))
    old = [NewTopic(f"{settings.app_id}-{table}-changelog", 1, 1) for table in ("links", "written", "crm_records")]
    old += [NewTopic(f"{settings.app_id}-{table}-changelog", 6, 1) for table in ("seen_events", "orders")]
    for future in admin.create_topics(old).values():
        future.result()
    yield settings
    delete_topics_with_prefix(settings.kafka, prefix)


def faust_wrote(settings: WorkerSettings, table: str, key: str, value, partition: int = 0) -> None:
    producer = Producer(confluent_config(settings.kafka))
    raw = None if value is None else orjson.dumps(value)
    producer.produce(f"{settings.app_id}-{table}-changelog", raw, orjson.dumps(key), partition=partition)
    producer.flush(10)


def test_the_links_of_the_old_tables_survive_the_upgrade(old_deployment, tmp_path, monkeypatch, capsys):
    settings, tenant = old_deployment, f"tenant-{uuid.uuid4().hex[:6]}"
    # what the old processor knew: acct customer A1 is KH1; an old fact deleted since; an aggregate
    faust_wrote(settings, "links", f"{tenant}:customer:code=KH1>acct", "A1")
    faust_wrote(settings, "links", f"{tenant}:customer:acct=A1>code", "KH1")
    faust_wrote(settings, "links", f"{tenant}:customer:code=OLD>acct", "A0")
    faust_wrote(settings, "links", f"{tenant}:customer:code=OLD>acct", None)
    faust_wrote(settings, "orders", f"{tenant}:AO1", {"tenant": tenant, "order_id": "AO1"}, partition=3)
    for name, value in (
        ("LIENTHONG_BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers),
        ("LIENTHONG_TOPIC_PREFIX", settings.kafka.topic_prefix),
        ("LIENTHONG_APP_ID", settings.app_id),
    ):
        monkeypatch.setenv(name, value)
    assert main(["tables", "migrate"]) == 0
    said = capsys.readouterr().out
    assert "migrated 3 key(s)" in said and "links 2" in said and "orders 1" in said

    # once is enough: a second run would mix the old state into what new workers wrote
    assert main(["tables", "migrate"]) == 2
    assert "already holds state" in capsys.readouterr().err

    kafka = Kafka(settings.kafka)
    worker = Worker(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        copy = {"id": "C1", "code": "KH1", "name": "ABC"}
        kafka.produce("cdc.crm.customer", change_event(tenant, "crm", "customer", copy), key=f"{tenant}:C1")
        edited = change_event(tenant, "crm", "customer", dict(copy, name="ABC mới"), op="u", before=copy)
        kafka.produce("cdc.crm.customer", edited, key=f"{tenant}:C1")
        commands = kafka.read(
            ["commands.acct"], until=lambda ms: any(m["key"].startswith(tenant) for m in ms), timeout=60
        )
    finally:
        worker.stop()
    (command,) = [m["value"] for m in commands if m["key"].startswith(tenant)]
    assert command["rule"] == "CUS-3" and command["key"] == {"id": "A1", "code": "KH1"}


def test_the_migration_puts_a_tenant_where_the_processor_routes_it(old_deployment):
    """partition_of is the producer's murmur2 partitioner: checked against librdkafka's own choice."""
    settings = old_deployment
    from streams.app import ensure_internal_topics

    partitions = ensure_internal_topics(settings)
    producer = Producer(confluent_config(settings.kafka, {"partitioner": "murmur2_random"}))
    chosen: dict[str, int] = {}

    def delivered(error, message) -> None:
        assert error is None
        chosen[message.key().decode()] = message.partition()

    tenants = [f"t{n}" for n in range(40)] + ["cty-abc", "công-ty", "0101234567"]
    for tenant in tenants:
        producer.produce(changes_topic(settings.app_id), b"{}", tenant.encode(), on_delivery=delivered)
    producer.flush(10)
    assert {tenant: partition_of(tenant, partitions) for tenant in tenants} == chosen
