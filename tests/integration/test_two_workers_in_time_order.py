"""Two workers, many tenants: an edit made milliseconds after the change it depends on is never
decided without it.

Per tenant an accountant creates a customer (``cdc.acct.customer``), its CRM copy appears
(``origin: sync``) and a salesperson edits the copy's phone milliseconds later: the edit must become
CUS-3. The accounting create and the CRM events sit on different input partitions, routed by
whichever of the two workers reads them; the edit's owner decides it only once every input has
passed its time (docs/state.md, "Time order"). Once live, once drained as a backlog produced while
the workers were down.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from common.kafka_config import confluent_config
from common.settings import KafkaSettings
from ops.admin import create_topics, delete_topics_with_prefix
from streams.settings import TableSettings, WorkerSettings
from tests.integration.conftest import Worker, wait_for_shared_partitions

pytestmark = pytest.mark.broker

TENANTS = 500


@pytest.fixture()
def deployment(bootstrap, tmp_path):
    prefix = f"two-{uuid.uuid4().hex[:8]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "w1"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
        session_timeout=10.0,
    )
    create_topics(settings.kafka, partitions=settings.topic_partitions, replication_factor=1)
    yield settings
    delete_topics_with_prefix(settings.kafka, prefix)


def events_of(tenant: str, now_ms: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value): the acct create, the CRM copy (sync) and the salesperson's edit, ms apart."""
    customer = {"id": "A1", "code": "KH1", "name": "Công ty ABC", "phone": "0901"}
    copy = {"id": "C1", "code": "KH1", "name": "Công ty ABC", "phone": "0901"}

    def event(system: str, record: dict, n: int, **more) -> bytes:
        return orjson.dumps({"schema_version": 1, "event_id": f"{tenant}-{n}", "tenant": tenant, "system": system,
                             "entity": "customer", "op": "c", "origin": "user", "ts_ms": now_ms + n,
                             "before": None, "after": record, **more})  # fmt: skip

    edited = dict(copy, phone="0902")
    return [
        ("cdc.acct.customer", f"{tenant}:A1".encode(), event("acct", customer, 0)),
        ("cdc.crm.customer", f"{tenant}:C1".encode(), event("crm", copy, 1, origin="sync")),
        ("cdc.crm.customer", f"{tenant}:C1".encode(), event("crm", edited, 2, op="u", before=copy)),
    ]


def produce_business(settings: WorkerSettings, tenants: list[str], *, spread_ms: float) -> None:
    producer = Producer(confluent_config(settings.kafka, {"linger.ms": 0}))
    prefix = settings.kafka.topic_prefix
    for tenant in tenants:
        for topic, key, value in events_of(tenant, int(time.time() * 1000)):
            producer.produce(prefix + topic, value, key)
            producer.poll(0)
            if spread_ms:
                time.sleep(spread_ms / 1000)
    producer.flush(30)


def audits_of_edits(settings: WorkerSettings, tenants: list[str], timeout: float) -> dict[str, dict]:
    """The audit record of each tenant's edit (event ``<tenant>-2``), once every one is there."""
    consumer = Consumer(
        confluent_config(settings.kafka, {"group.id": f"check-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.kafka.topic_prefix + "audit.sync"])
    wanted = {f"{tenant}-2": tenant for tenant in tenants}
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(wanted) and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error():
                    continue
                audit = orjson.loads(message.value())
                if audit["event_id"] in wanted:
                    found[wanted[audit["event_id"]]] = audit
    finally:
        consumer.close()
    assert len(found) == len(wanted), f"{len(wanted) - len(found)} edits not decided within {timeout:g}s"
    return found


def two_workers(settings: WorkerSettings, tmp_path) -> list[Worker]:
    workers = []
    for n in (1, 2):
        data = settings.tables.model_copy(update={"data_dir": tmp_path / f"w{n}"})
        workers.append(Worker(settings.model_copy(update={"tables": data}), tmp_path / f"worker-{n}.log"))
    for worker in workers:
        worker.wait_ready()
    return workers


def assert_every_edit_became_cus3(audits: dict[str, dict]) -> None:
    not_linked = sorted(tenant for tenant, audit in audits.items() if audit["rule"] != "CUS-3")
    assert not not_linked, f"{len(not_linked)} of {len(audits)} edits not sent as CUS-3: {not_linked[:5]} " + str(
        [audits[t]["notes"] for t in not_linked[:3]]
    )


def test_live_edits_milliseconds_after_the_create_are_all_synced(deployment, tmp_path):
    workers = two_workers(deployment, tmp_path)
    try:
        wait_for_shared_partitions(workers, [deployment.kafka.topic_prefix + "cdc.crm.customer"])
        tenants = [f"live{n}-{uuid.uuid4().hex[:4]}" for n in range(TENANTS)]
        produce_business(deployment, tenants, spread_ms=1)
        assert_every_edit_became_cus3(audits_of_edits(deployment, tenants, timeout=120))
    finally:
        for worker in workers:
            worker.stop()


def test_a_backlog_drained_by_two_workers_syncs_every_edit(deployment, tmp_path):
    tenants = [f"back{n}-{uuid.uuid4().hex[:4]}" for n in range(TENANTS)]
    produce_business(deployment, tenants, spread_ms=0)  # while no worker runs: an outage
    workers = two_workers(deployment, tmp_path)
    try:
        assert_every_edit_became_cus3(audits_of_edits(deployment, tenants, timeout=180))
    finally:
        for worker in workers:
            worker.stop()
