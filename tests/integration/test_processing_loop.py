"""The processing loop on the real broker: poison never stops it, every compression codec is read, and
a partition it cannot read is skipped while the others flow."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from common.settings import KafkaSettings
from streams.settings import TableSettings, WorkerSettings
from tests.integration.conftest import Kafka, Worker, change_event

pytestmark = pytest.mark.broker


def customer(tenant: str, record_id: str, **more) -> dict:
    return change_event(tenant, "acct", "customer", {"id": record_id, "code": f"KH-{record_id}", "name": "ABC", **more})


def commands_for(kafka: Kafka, tenant: str, count: int, timeout: float = 60.0, settle: float = 0.0) -> list[dict]:
    def mine(messages: list[dict]) -> list[dict]:
        return [m["value"] for m in messages if (m["key"] or "").startswith(f"{tenant}:")]

    topics = ["commands.crm", "commands.acct"]
    return mine(kafka.read(topics, until=lambda ms: len(mine(ms)) >= count, timeout=timeout, settle=settle))


def test_poison_goes_to_the_dead_letter_topic_whole_and_the_stream_goes_on(kafka, worker, tenant):
    """Too large for the broker, too deep for JSON, a number whose aggregate outgrows a message, and
    garbage larger than a dead letter may be: each is dead-lettered with its key and bytes, and the
    good events around them are decided by the same worker, which never restarts an agent."""
    big = Producer({"bootstrap.servers": kafka.settings.bootstrap_servers, "message.max.bytes": 1_048_000})
    deep = b'{"level":0}'  # 300 levels: JSON a reader takes, deeper than a writer may write
    for level in range(1, 300):
        deep = b'{"level":%d,"inner":%s}' % (level, deep)
    poison = {
        f"{tenant}:P1": orjson.dumps(customer(tenant, "P1", name="N" * 1_000_000)),  # its CUS-6 command: too large
        f"{tenant}:P2": orjson.dumps(customer(tenant, "P2", notes="<deep>")).replace(b'"<deep>"', deep),
        f"{tenant}:P3": b"\x00garbage" * 129_000,  # not JSON, and with headers larger than a message
    }
    receipt = change_event(tenant, "acct", "receipt", {"id": "R1", "order_id": "AO1", "amount": "1e999999"})
    order = change_event(
        tenant, "acct", "sale_order", {"id": "AO1", "code": "DH1", "crm_id": "O1", "total_amount": "5", "lines": []}
    )
    kafka.produce("cdc.acct.customer", customer(tenant, "G1"), key=f"{tenant}:G1")
    for key, raw in poison.items():
        big.produce(kafka.name("cdc.acct.customer"), raw, key.encode())
    big.flush(30)
    kafka.produce("cdc.acct.sale_order", order, key=f"{tenant}:AO1")
    kafka.produce("cdc.acct.receipt", receipt, key=f"{tenant}:R1")  # an amount no contract allows
    kafka.produce("cdc.acct.customer", customer(tenant, "G2"), key=f"{tenant}:G2")

    good = commands_for(kafka, tenant, 2)
    assert sorted(c["source"]["id"] for c in good if c["rule"] == "CUS-6") == ["G1", "G2"]
    letters = [
        m
        for m in kafka.read(["dlq.cdc"], until=lambda ms: sum((m["key"] or "").startswith(tenant) for m in ms) >= 4)
        if (m["key"] or "").startswith(tenant)
    ]
    by_key = {m["key"]: m for m in letters}
    assert set(by_key) == {f"{tenant}:P1", f"{tenant}:P2", f"{tenant}:P3", f"{tenant}:R1"}, sorted(by_key)
    assert by_key[f"{tenant}:P1"]["headers"]["error.kind"] == "too_large"
    assert "limit" in by_key[f"{tenant}:P1"]["headers"]["error.message"]
    assert by_key[f"{tenant}:P2"]["headers"]["error.kind"] == "unserializable"
    assert by_key[f"{tenant}:P2"]["value"] == orjson.loads(poison[f"{tenant}:P2"])  # the original, whole
    assert "dlq.truncated" not in by_key[f"{tenant}:P2"]["headers"]
    garbage = by_key[f"{tenant}:P3"]
    assert garbage["headers"]["error.kind"] == "decode"
    for name in ("P1", "P3"):  # originals that do not fit in a dead letter with its headers: their first bytes
        letter = by_key[f"{tenant}:{name}"]
        assert letter["headers"]["dlq.truncated"] == "true"
        assert letter["headers"]["dlq.original_bytes"] == str(len(poison[f"{tenant}:{name}"]))
        assert isinstance(letter["value"], bytes) and len(letter["value"]) > 900_000
        assert poison[f"{tenant}:{name}"].startswith(letter["value"])
    # a receipt of 1e999999 would grow its order's aggregate past a message: it is refused at the edge
    # with the field and value named, and the order it names is decided as if it had never come
    refused = by_key[f"{tenant}:R1"]
    assert refused["headers"]["error.kind"] == "schema"
    assert "amount" in refused["headers"]["error.message"] and "1e999999" in refused["headers"]["error.message"]
    assert refused["value"] == orjson.loads(orjson.dumps(receipt))
    assert not [m for m in letters if m["key"] == f"{tenant}:AO1"]

    log = worker.log_path.read_text(errors="replace")
    assert "Restarting" not in log and "Crashed" not in log, worker.tail()
    assert worker.process.poll() is None


@pytest.mark.parametrize("codec", ["lz4", "zstd", "snappy", "gzip"])
def test_every_compression_codec_is_read(kafka, worker, tenant, codec):
    producer = Producer(
        {"bootstrap.servers": kafka.settings.bootstrap_servers, "compression.type": codec, "linger.ms": 5}
    )
    for n in range(3):
        event = customer(tenant, f"{codec}{n}")
        producer.produce(kafka.name("cdc.acct.customer"), orjson.dumps(event), f"{tenant}:{codec}{n}".encode())
    assert producer.flush(30) == 0
    commands = commands_for(kafka, tenant, 3)
    assert sorted(c["source"]["id"] for c in commands) == [f"{codec}{n}" for n in range(3)]


def test_a_partition_the_worker_cannot_read_is_skipped_and_the_others_flow(module_settings, tmp_path):
    """A worker without the lz4 codec (its library hidden from it) gets an lz4 batch on one partition:
    it says which topic and partition it cannot read and why, and decides everything else."""
    hidden = tmp_path / "no-codecs"
    (hidden / "cramjam").mkdir(parents=True)
    (hidden / "cramjam" / "__init__.py").write_text("raise ImportError('hidden from this worker by the test')\n")
    prefix = f"nocodec-{uuid.uuid4().hex[:8]}."
    from ops.admin import create_topics, delete_topics_with_prefix

    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=module_settings.kafka.bootstrap_servers, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "data"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    kafka = Kafka(settings.kafka)
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{hidden}{os.pathsep}{previous}" if previous else str(hidden)
    try:
        worker = Worker(settings, tmp_path / "worker.log")
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        worker.wait_ready()
        lz4 = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "compression.type": "lz4"})
        lz4.produce(
            kafka.name("cdc.acct.customer"), orjson.dumps(customer(tenant, "Z1")), f"{tenant}:Z1".encode(), partition=2
        )
        lz4.flush(30)
        plain = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
        expected = []
        for n, partition in enumerate((0, 1, 3, 4, 5)):
            record_id = f"G{n}"
            expected.append(record_id)
            plain.produce(
                kafka.name("cdc.acct.customer"),
                orjson.dumps(customer(tenant, record_id)),
                f"{tenant}:{record_id}".encode(),
                partition=partition,
            )
        plain.produce(
            kafka.name("cdc.crm.product"),
            orjson.dumps(change_event(tenant, "crm", "product", {"id": "P9", "code": "SP9", "name": "Bút"})),
            f"{tenant}:P9".encode(),
        )
        plain.flush(30)
        commands = commands_for(kafka, tenant, len(expected) + 1, settle=2.0)
        assert sorted(c["source"]["id"] for c in commands) == sorted([*expected, "P9"])
        deadline = time.monotonic() + 10
        while b"cannot read" not in Path(worker.log_path).read_bytes() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = worker.log_path.read_text(errors="replace")
        assert f"cannot read {prefix}cdc.acct.customer partition 2" in log, worker.tail()
        assert "UnsupportedCodecError" in log and "lz4" in log
        assert worker.process.poll() is None, "the worker stopped"
    finally:
        worker.stop(signal.SIGTERM)
        delete_topics_with_prefix(settings.kafka, prefix)
