"""Inbound webhooks on the real broker: signed ones become change events, others produce nothing."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY, generate_latest

from capture.webhooks import create_webhooks, webhook_signature
from common.kafka_config import confluent_config

pytestmark = pytest.mark.broker


async def test_signed_webhooks_become_change_events_and_bad_ones_nothing(kafka, module_settings, tenant, tmp_path):
    app = create_webhooks(
        secrets={("crm", tenant): "whsec"},
        data_dir=tmp_path,
        kafka=confluent_config(module_settings.kafka),
        topic_prefix=module_settings.kafka.topic_prefix,
        tolerance_s=300,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    event_id = f"wh-{uuid.uuid4().hex}"
    body = orjson.dumps(
        {
            "event_id": event_id,
            "entity": "customer",
            "op": "c",
            "ts_ms": 1764201600000,
            "before": None,
            "after": {"id": 9, "account_number": "KH0009", "account_name": "Khách webhook", "tax_code": "0109"},
        }
    )
    now = str(int(time.time()))
    try:
        good = await client.post(
            f"/webhooks/crm/{tenant}",
            data=body,
            headers={"X-Timestamp": now, "X-Signature": webhook_signature("whsec", now, body)},
        )
        assert good.status == 202
        wrong_secret = await client.post(
            f"/webhooks/crm/{tenant}",
            data=body.replace(b"KH0009", b"KH6666"),
            headers={"X-Timestamp": now, "X-Signature": webhook_signature("other", now, body)},
        )
        tampered = await client.post(
            f"/webhooks/crm/{tenant}",
            data=body.replace(b"KH0009", b"KH6666"),
            headers={"X-Timestamp": now, "X-Signature": webhook_signature("whsec", now, body)},
        )
        old = str(int(time.time()) - 3600)
        replayed = await client.post(
            f"/webhooks/crm/{tenant}",
            data=body,
            headers={"X-Timestamp": old, "X-Signature": webhook_signature("whsec", old, body)},
        )
        unknown = await client.post(
            "/webhooks/crm/someone-else",
            data=body,
            headers={"X-Timestamp": now, "X-Signature": webhook_signature("whsec", now, body)},
        )
        assert [r.status for r in (wrong_secret, tampered, replayed, unknown)] == [401, 401, 401, 401]
        assert "replay" in (await replayed.json())["error"]
    finally:
        await client.close()

    # a webhook taken is answered once the broker acknowledged its event: every answer is in, so
    # whatever the receiver produced is on the topic up to its end
    messages = kafka.read_to_end(["cdc.crm.customer"])
    produced = [m for m in messages if m["topic"] == "cdc.crm.customer" and m["key"].startswith(tenant)]
    assert len(produced) == 1  # only the good one
    event = produced[0]["value"]
    assert event["event_id"] == event_id and event["tenant"] == tenant and event["system"] == "crm"
    # CRM's API names (account_number, account_name) become the contract's (code, name)
    assert event["after"] == {"id": "9", "code": "KH0009", "name": "Khách webhook", "tax_code": "0109"}


def signed(body: bytes, secret: str = "whsec", timestamp: str | None = None) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    return {"X-Timestamp": timestamp, "X-Signature": webhook_signature(secret, timestamp, body)}


def webhook(event_id: str | None, op: str, ts_ms: int, name: str, **extra) -> bytes:
    record = {"id": 7, "account_number": "KH0007", "account_name": name}
    return orjson.dumps(
        {
            "event_id": event_id,
            "entity": "customer",
            "op": op,
            "ts_ms": ts_ms,
            "before": record if op == "d" else None,
            "after": None if op == "d" else record,
            **extra,
        }
    )


async def test_replayed_webhooks_out_of_order_leave_the_record_at_its_newest(kafka, module_settings, tenant, tmp_path):
    """The versions of one record arrive out of order, twice, and across a restart of the receiver:
    only ever-newer ones are produced, so the record ends as its newest version, and the delete is
    not undone by the older create and updates that arrive after it."""

    def receiver() -> TestClient:
        return TestClient(
            TestServer(
                create_webhooks(
                    secrets={("crm", tenant): "whsec"},
                    kafka=confluent_config(module_settings.kafka),
                    topic_prefix=module_settings.kafka.topic_prefix,
                    data_dir=tmp_path,
                )
            )
        )

    created = webhook(f"wh-{uuid.uuid4().hex}", "c", 1_764_201_600_000, "v1")
    renamed = webhook(f"wh-{uuid.uuid4().hex}", "u", 1_764_201_700_000, "v2", origin="sync")
    newest = webhook(f"wh-{uuid.uuid4().hex}", "u", 1_764_201_800_000, "v3")
    deleted = webhook(f"wh-{uuid.uuid4().hex}", "d", 1_764_201_900_000, "v3")
    answers = []
    client = receiver()
    await client.start_server()
    try:
        for body in (renamed, created, newest, renamed, newest):
            answers.append((await client.post(f"/webhooks/crm/{tenant}", data=body, headers=signed(body))).status)
    finally:
        await client.close()
    client = receiver()  # a restart: what was taken is remembered
    await client.start_server()
    try:
        for body in (created, deleted, newest, renamed, deleted):
            response = await client.post(f"/webhooks/crm/{tenant}", data=body, headers=signed(body))
            answers.append(response.status)
        ignored = await response.json()
    finally:
        await client.close()
    assert answers == [202, 200, 202, 200, 200, 200, 202, 200, 200, 200]
    assert ignored["reason"] == "already accepted"

    messages = kafka.read_to_end(["cdc.crm.customer"])  # every answer is in: all it produced is there
    produced = [m["value"] for m in messages if m["key"] == f"{tenant}:7"]
    assert [(e["op"], (e["after"] or e["before"])["name"]) for e in produced] == [("u", "v2"), ("u", "v3"), ("d", "v3")]
    # the payload said "sync" (which rule X-1 drops as the integration's own echo): the server says user
    assert {e["origin"] for e in produced} == {"user"}


@pytest.mark.parametrize(
    ("timestamp", "body", "status", "reason"),
    [
        ("nan", None, 401, "timestamp"),
        ("inf", None, 401, "timestamp"),
        ("-inf", None, 401, "timestamp"),
        ("1e3", None, 401, "timestamp"),
        (str(int(time.time()) + 3600), None, 401, "replay"),
        (str(int(time.time()) - 3600), None, 401, "replay"),
        (None, webhook(None, "u", 1_764_201_600_000, "x"), 400, "event_id"),
        (None, webhook("", "u", 1_764_201_600_000, "x"), 400, "event_id"),
        (
            None,
            orjson.dumps({"event_id": "e", "entity": "customer", "op": "u", "ts_ms": 1, "after": [1]}),
            400,
            "after",
        ),
        (
            None,
            orjson.dumps({"event_id": "e", "entity": "customer", "op": "u", "ts_ms": 1, "after": "x"}),
            400,
            "after",
        ),
        (None, orjson.dumps({"event_id": "e", "entity": "customer", "op": "u", "ts_ms": 1, "after": 3}), 400, "after"),
        (None, orjson.dumps({"event_id": "e", "entity": "customer", "op": "u", "ts_ms": 1, "after": {}}), 400, "id"),
        (None, orjson.dumps({"event_id": "e", "entity": "customer", "op": "u", "after": {"id": 1}}), 400, "ts_ms"),
        (None, orjson.dumps([{"event_id": "e"}]), 400, "one webhook"),
        (None, b'{"event_id": "e", "entity": "cust', 400, "not JSON"),
    ],
)
async def test_a_hostile_webhook_is_refused_in_one_line(
    kafka, module_settings, tenant, tmp_path, timestamp, body, status, reason
):
    body = body or webhook(f"wh-{uuid.uuid4().hex}", "u", 1_764_201_600_000, "x")
    client = TestClient(
        TestServer(
            create_webhooks(
                secrets={("crm", tenant): "whsec"},
                kafka=confluent_config(module_settings.kafka),
                topic_prefix=module_settings.kafka.topic_prefix,
                data_dir=tmp_path,
            )
        )
    )
    await client.start_server()
    try:
        response = await client.post(f"/webhooks/crm/{tenant}", data=body, headers=signed(body, timestamp=timestamp))
        answer = await response.json()
    finally:
        await client.close()
    assert response.status == status
    assert reason in answer["error"] and "\n" not in answer["error"]


async def test_a_made_up_system_is_404_and_no_metric_label_of_its_own(module_settings, tmp_path):
    client = TestClient(
        TestServer(create_webhooks(secrets={}, kafka=confluent_config(module_settings.kafka), data_dir=tmp_path))
    )
    await client.start_server()
    made_up = f"sys{uuid.uuid4().hex}"
    try:
        response = await client.post(f"/webhooks/{made_up}/t1", data=b"{}")
        # what the receiver's /metrics (on its internal listener) says: this process's registry
        scraped = generate_latest(REGISTRY).decode()
    finally:
        await client.close()
    assert response.status == 404
    assert made_up not in scraped and 'lienthong_webhooks_total{status="404",system="unknown"}' in scraped
