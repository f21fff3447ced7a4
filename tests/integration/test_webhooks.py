"""Inbound webhooks on the real broker: signed ones become change events, others produce nothing."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from capture.webhooks import create_webhooks, webhook_signature
from common.kafka_config import confluent_config

pytestmark = pytest.mark.broker


async def test_signed_webhooks_become_change_events_and_bad_ones_nothing(kafka, module_settings, tenant):
    app = create_webhooks(
        secrets={("crm", tenant): "whsec"},
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

    messages = kafka.read(
        ["cdc.crm.customer", "audit.sync"],
        settle=2.0,
        until=lambda ms: any(m["topic"] == "cdc.crm.customer" and m["key"] == f"{tenant}:9" for m in ms),
    )
    produced = [m for m in messages if m["topic"] == "cdc.crm.customer" and m["key"].startswith(tenant)]
    assert len(produced) == 1  # only the good one
    event = produced[0]["value"]
    assert event["event_id"] == event_id and event["tenant"] == tenant and event["system"] == "crm"
    # CRM's API names (account_number, account_name) become the contract's (code, name)
    assert event["after"] == {"id": "9", "code": "KH0009", "name": "Khách webhook", "tax_code": "0109"}
