"""The processing loop on the real broker: poison never stops it, and every compression codec is read
(librdkafka's own: lz4, snappy, zstd, gzip)."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer

from tests.integration.conftest import Kafka, change_event

pytestmark = pytest.mark.broker


def customer(tenant: str, record_id: str, **more) -> dict:
    return change_event(tenant, "acct", "customer", {"id": record_id, "code": f"KH-{record_id}", "name": "ABC", **more})


def commands_for(kafka: Kafka, tenant: str, count: int, timeout: float = 60.0) -> list[dict]:
    def mine(messages: list[dict]) -> list[dict]:
        return [m["value"] for m in messages if (m["key"] or "").startswith(f"{tenant}:")]

    topics = ["commands.crm", "commands.acct"]
    return mine(kafka.read(topics, until=lambda ms: len(mine(ms)) >= count, timeout=timeout))


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
