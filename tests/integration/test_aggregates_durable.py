"""Aggregates on the real broker: co-partitioning verified, and `kill -9` in the middle of a stream.

A seeded history of accounting documents (orders, vouchers edited and deleted, receipts, duplicates)
is produced; the worker is killed with SIGKILL while it works and a new one is started. Then every
aggregate in the state changelog's ``orders`` table and the last derived command of every order and
rule must say what the independent oracle (``tests/core/oracle.py``) works out from the documents, and
a command that was sent twice carries the same id.
Every key of the tenant's state lives on the one partition its changes were routed to.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import orjson
import pytest

from common.names import changes_topic, state_changelog_topic
from common.settings import KafkaSettings
from ops.admin import create_topics, delete_topics_with_prefix
from ops.lag import read_lag
from ops.operations import read_topic
from streams.core.aggregates import OrderAggregate, derive
from streams.core.contract import ChangeEvent
from streams.core.rules import Effect, load_rules
from streams.settings import TableSettings, WorkerSettings
from streams.tables.store import decode_key
from tests.core.oracle import SALE_ORDER_FIELDS, OrderTruth, truths, wire_problems, wire_values
from tests.integration.conftest import Kafka, Worker, change_event

pytestmark = pytest.mark.broker

ORDERS = 400


def history(tenant: str, seed: int = 7) -> tuple[list[dict], dict[str, list[dict]]]:
    """Events in production order, and each document's versions (for the recomputation)."""
    rng = random.Random(seed)
    docs: dict[str, list[dict]] = {}
    per_order: list[list[dict]] = []
    for n in range(ORDERS):
        order_id = f"AO{n}"
        lines = [
            {"line_id": f"L{i}", "product_code": f"SP{i}", "quantity": rng.randint(1, 5), "amount": str(100 * (i + 1))}
            for i in range(3)
        ]
        total = str(sum(Decimal(line["amount"]) for line in lines))
        order = {
            "id": order_id,
            "code": f"DH{n:04d}",
            "crm_id": f"O{n}",
            "revenue_status": "recorded",
            "status": "in_progress",
            "total_amount": total,
            "lines": lines,
        }
        events = [change_event(tenant, "acct", "sale_order", order)]
        docs[f"order/{order_id}"] = [events[0]]
        for v in range(rng.randint(1, 4)):
            voucher_id = f"V{n}-{v}"
            previous = None
            for _version in range(rng.randint(1, 3)):
                if previous and rng.random() < 0.25:
                    ev = change_event(tenant, "acct", "sales_voucher", None, op="d", before=previous)
                    events.append(ev)
                    docs.setdefault(voucher_id, []).append(ev)
                    break
                chosen = rng.sample(lines, rng.randint(1, 3))
                voucher = {
                    "id": voucher_id,
                    "code": voucher_id,
                    "order_id": order_id,
                    "lines": [
                        {
                            "line_id": line["line_id"],
                            "product_code": line["product_code"],
                            "quantity": rng.randint(0, line["quantity"]),
                            "amount": line["amount"],
                        }
                        for line in chosen
                    ],
                    "invoice_no": f"HD{voucher_id}" if rng.random() < 0.4 else None,
                    "einvoice_published": False,
                    "invoice_date": "2026-11-27",
                }
                ev = change_event(
                    tenant, "acct", "sales_voucher", voucher, op="c" if previous is None else "u", before=previous
                )
                events.append(ev)
                docs.setdefault(voucher_id, []).append(ev)
                previous = voucher
        for r in range(rng.randint(0, 2)):
            receipt = {
                "id": f"R{n}-{r}",
                "code": f"PT{n}-{r}",
                "order_id": order_id,
                "amount": str(rng.choice([100, 250, 600])),
            }
            ev = change_event(tenant, "acct", "receipt", receipt)
            events.append(ev)
            docs[receipt["id"]] = [ev]
        per_order.append(events)
    # interleave orders (each document keeps its own order), with some duplicates later on
    stream: list[dict] = []
    queues = [list(events) for events in per_order]
    while queues:
        queue = rng.choice(queues)
        stream.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    for ev in rng.sample(stream, 30):
        stream.insert(rng.randint(stream.index(ev) + 1, len(stream)), ev)
    return stream, docs


def truth(tenant: str, stream: list[dict]) -> dict[str, OrderTruth]:
    """Each order as its documents say, by the oracle (not by the core's apply/derive)."""
    return {order_id: order for (t, order_id), order in truths(map(ChangeEvent.model_validate, stream)).items()}


def read_all(settings: WorkerSettings, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    return [(r.partition, r.key, r.value) for r in read_topic(settings.kafka, topic)]


@pytest.fixture()
def fresh(bootstrap, tmp_path):
    prefix = f"dur-{uuid.uuid4().hex[:10]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "data", store="rocksdb://"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
        # the killed worker's partitions go to the new one after this many seconds
        session_timeout=10.0,
        # the killed worker's open transaction holds read_committed readers back at most this long
        transaction_timeout=10.0,
    )
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    yield settings
    delete_topics_with_prefix(settings.kafka, prefix)


def test_kill_9_mid_stream_loses_no_aggregate_and_no_derived_command(fresh, tmp_path):
    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    kafka = Kafka(fresh.kafka)
    stream, _docs = history(tenant)
    event_ids = {ev["event_id"] for ev in stream}

    first = Worker(fresh, tmp_path / "first.log")
    first.wait_ready()
    for ev in stream:
        key = f"{tenant}:{(ev['after'] or ev['before'])['id']}"
        kafka.producer.produce(kafka.name(f"cdc.acct.{ev['entity']}"), key=key.encode(), value=orjson.dumps(ev))
    kafka.producer.flush(30)
    # kill -9 once the worker is well into the stream
    kafka.read(["audit.sync"], until=lambda ms: len(ms) >= 50, timeout=60)
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    audited_before_kill = len(read_all(fresh, kafka.name("audit.sync")))
    assert audited_before_kill < len(event_ids), "the worker finished before it was killed: nothing was tested"

    second = Worker(fresh, tmp_path / "second.log")
    try:
        second.wait_ready()
        kafka.read(
            ["audit.sync"],
            timeout=120,
            until=lambda ms: event_ids <= {m["value"]["event_id"] for m in ms if isinstance(m["value"], dict)},
        )
        # the worker commits its input offsets in the transaction that writes its tables: once its group has
        # no lag, the last table writes are in the changelog
        deadline = time.monotonic() + 60
        while any(row.lag for row in read_lag(fresh.kafka, [fresh.app_id])):
            assert time.monotonic() < deadline, second.tail()
            time.sleep(0.1)
    finally:
        second.stop()

    expected = truth(tenant, stream)
    rules = load_rules()

    # 1. every aggregate in the state changelog derives what the oracle says
    changelog = read_all(fresh, state_changelog_topic(fresh.app_id))
    stored: dict[str, dict] = {}
    state_partitions: set[int] = set()
    for partition, key, value in changelog:
        table, table_key = decode_key(key)
        assert table_key.startswith(tenant + ":"), (table, table_key)
        state_partitions.add(partition)
        if table == "orders" and value is not None:
            stored[table_key] = orjson.loads(value)
    assert set(stored) == {f"{tenant}:{order_id}" for order_id in expected}
    for order_id, order in expected.items():
        derived = derive(OrderAggregate.from_json(stored[f"{tenant}:{order_id}"]))
        assert wire_problems(derived, order.crm(), [*SALE_ORDER_FIELDS, "receipts"]) == [], order_id

    # 2. co-partitioned: all of the tenant's state lives on one partition of the changelog, the
    #    partition its changes were routed to
    routed = {partition for partition, key, _ in read_all(fresh, changes_topic(fresh.app_id)) if key == tenant.encode()}
    assert len(routed) == 1 and state_partitions == routed, (routed, state_partitions)

    # 3. the last derived command of every order and rule says what the truth says; ids are stable
    commands = [
        orjson.loads(value)
        for _, key, value in read_all(fresh, kafka.name("commands.crm"))
        if key and key.decode().startswith(tenant + ":")
    ]
    derived_rules = {r.id for r in rules.rules if r.effect is Effect.DERIVED and r.order_target == "sale_order"}
    shown: dict[str, dict] = defaultdict(dict)  # CRM order id -> the fields derived commands wrote, in order
    by_cause: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for command in commands:
        if command["rule"] in derived_rules:
            shown[command["key"]["id"]].update(command["fields"])
            by_cause[(command["key"]["id"], command["rule"], command["source"]["event_id"])].add(command["command_id"])
    for order_id, order in expected.items():
        # a field no command wrote shows the untouched order's value (X-2: nothing to send)
        view = {**wire_values(order.untouched(), SALE_ORDER_FIELDS), **shown[str(order.crm_id)]}
        assert wire_problems(view, order.crm(), SALE_ORDER_FIELDS) == [], order_id
    assert all(len(ids) == 1 for ids in by_cause.values()), "a derived command re-sent with another id"
