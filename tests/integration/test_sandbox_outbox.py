"""A sandbox's outbox reaches cdc.* on the real broker, in order, and is marked only once delivered."""

from __future__ import annotations

import pytest

from sandboxes.publisher import OutboxPublisher
from sandboxes.store import SandboxStore

pytestmark = pytest.mark.broker


def test_outbox_events_reach_their_cdc_topics_once(kafka, module_settings, tmp_path, tenant):
    store = SandboxStore(tmp_path / "acct.sqlite", "acct", topic_prefix=module_settings.topic_prefix)
    created = store.upsert(tenant, "customer", {"code": "KH0001", "name": "ABC"})
    store.upsert(tenant, "customer", {"id": created.after["id"], "name": "ABC mới"})
    store.upsert(tenant, "receipt", {"code": "PT1", "order_id": "AO1", "amount": "100"})
    publisher = OutboxPublisher(store, module_settings.bootstrap_servers)
    assert publisher.publish_pending() == 3
    assert store.pending() == [] and publisher.publish_pending() == 0

    def mine(ms):
        return [m for m in ms if m["key"] and m["key"].startswith(tenant + ":")]

    messages = kafka.read(["cdc.acct.customer", "cdc.acct.receipt"], until=lambda ms: len(mine(ms)) >= 3, settle=1.0)
    customer = [m["value"] for m in mine(messages) if m["topic"] == "cdc.acct.customer"]
    assert [(e["op"], e["after"]["name"]) for e in customer] == [("c", "ABC"), ("u", "ABC mới")]
    (receipt,) = [m for m in mine(messages) if m["topic"] == "cdc.acct.receipt"]
    assert (
        receipt["value"]["after"]["amount"] == "100" and receipt["key"] == f"{tenant}:{receipt['value']['after']['id']}"
    )
    store.close()


def test_unacknowledged_events_stay_in_the_outbox(module_settings, tmp_path):
    store = SandboxStore(tmp_path / "crm.sqlite", "crm", topic_prefix=module_settings.topic_prefix)
    store.upsert("t1", "customer", {"code": "KH1"})
    # nothing listens on this port: nothing is acknowledged, nothing is marked
    publisher = OutboxPublisher(store, "127.0.0.1:1")
    assert publisher.publish_pending(timeout=2.0) == 0
    assert len(store.pending()) == 1
    store.close()
