"""The sandboxes: their APIs, the transactional outbox of change events, fault injection."""

from __future__ import annotations

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sandboxes.app import create_sandbox
from sandboxes.faults import FaultConfig
from sandboxes.store import SandboxStore

CRM_CREDENTIALS = {"client-1": "cty-abc", "client-1:secret": "s3cret"}
ACCT_CREDENTIALS = {"app-1": "cty-abc", "app-1:code": "conn-1"}


@pytest.fixture()
def crm_store(tmp_path):
    store = SandboxStore(tmp_path / "crm.sqlite", "crm")
    yield store
    store.close()


@pytest.fixture()
def acct_store(tmp_path):
    store = SandboxStore(tmp_path / "acct.sqlite", "acct")
    yield store
    store.close()


async def client_for(app) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def outbox(store: SandboxStore) -> list[dict]:
    return [orjson.loads(value) for _, _, _, value in store.pending()]


async def test_crm_login_then_customers_by_id_code_and_page(crm_store):
    client = await client_for(create_sandbox("crm", crm_store, credentials=CRM_CREDENTIALS))
    try:
        assert (await client.get("/api/v2/Customers")).status == 401
        denied = await client.post("/Account", json={"client_id": "client-1", "client_secret": "wrong"})
        assert denied.status == 401
        login = await (await client.post("/Account", json={"client_id": "client-1", "client_secret": "s3cret"})).json()
        auth = {"Authorization": f"Bearer {login['Data']['access_token']}"}
        created = await client.post(
            "/api/v2/Customers",
            headers=auth,
            json=[
                {"Code": "KH0001", "AccountName": "Công ty ABC", "TaxCode": "0101"},
                {"Code": "KH0002", "AccountName": "Cửa hàng B"},
            ],
        )
        assert created.status == 200
        first, _ = (await created.json())["Data"]
        assert first["Code"] == "KH0001" and first["Id"]
        by_id = await (await client.get(f"/api/v2/Customers/{first['Id']}", headers=auth)).json()
        assert by_id["Data"]["TaxCode"] == "0101"
        by_code = await (await client.get("/api/v2/Customers?code=KH0002", headers=auth)).json()
        assert by_code["Data"][0]["AccountName"] == "Cửa hàng B"
        assert crm_store.by_code("cty-abc", "customer", "KH0002")["name"] == "Cửa hàng B"  # stored canonical
        page = await (await client.get("/api/v2/Customers?page=2&pageSize=1", headers=auth)).json()
        assert page["Total"] == 2 and [r["Code"] for r in page["Data"]] == ["KH0002"]
        assert (await client.get("/api/v2/Customers/nope", headers=auth)).status == 404
    finally:
        await client.close()


async def test_every_change_is_one_change_event_in_the_outbox(acct_store):
    client = await client_for(create_sandbox("acct", acct_store, credentials=ACCT_CREDENTIALS))
    auth = {"X-App-Id": "app-1", "X-Connection-Code": "conn-1"}
    try:
        assert (await client.get("/api/dictionary/customers", headers={"X-App-Id": "app-1"})).status == 401
        created = await (
            await client.post("/api/dictionary/customers", headers=auth, json={"code": "KH0001", "name": "ABC"})
        ).json()
        record_id = created["Data"][0]["id"]
        await client.put("/api/dictionary/customers", headers=auth, json={"id": record_id, "name": "ABC mới"})
        await client.put("/api/dictionary/customers", headers=auth, json={"id": record_id, "name": "ABC mới"})  # no-op
        await client.post(
            "/api/dictionary/customers",
            headers={**auth, "X-Lienthong-Origin": "sync"},
            json={"code": "KH0002", "name": "from CRM"},
        )
        assert (await client.delete(f"/api/dictionary/customers/{record_id}", headers=auth)).status == 200
    finally:
        await client.close()
    events = outbox(acct_store)
    assert [(e["op"], e["origin"], (e["after"] or e["before"])["code"]) for e in events] == [
        ("c", "user", "KH0001"),
        ("u", "user", "KH0001"),
        ("c", "sync", "KH0002"),
        ("d", "user", "KH0001"),
    ]
    update = events[1]
    assert update["before"]["name"] == "ABC" and update["after"]["name"] == "ABC mới"
    assert all(
        e["schema_version"] == 1 and e["tenant"] == "cty-abc" and e["system"] == "acct" and e["entity"] == "customer"
        for e in events
    )
    assert len({e["event_id"] for e in events}) == 4
    topics_keys = [(topic, key) for _, topic, key, _ in acct_store.pending()]
    assert topics_keys[0] == ("cdc.acct.customer", f"cty-abc:{record_id}".encode())


def test_a_failed_write_leaves_neither_record_nor_event(acct_store, monkeypatch):
    """The record and its event are one transaction: a crash between them keeps neither."""

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(acct_store, "_queue", crash)
    with pytest.raises(RuntimeError):
        acct_store.upsert("cty-abc", "customer", {"code": "KH9"})
    monkeypatch.undo()
    assert acct_store.by_code("cty-abc", "customer", "KH9") is None
    assert outbox(acct_store) == []
    acct_store.upsert("cty-abc", "customer", {"code": "KH9"})
    assert len(outbox(acct_store)) == 1


def test_records_and_outbox_survive_a_restart(tmp_path):
    store = SandboxStore(tmp_path / "acct.sqlite", "acct")
    store.upsert("t1", "receipt", {"code": "PT1", "amount": "100"})
    store.close()
    reopened = SandboxStore(tmp_path / "acct.sqlite", "acct")
    assert reopened.by_code("t1", "receipt", "PT1")["amount"] == "100"
    assert len(reopened.pending()) == 1
    reopened.close()


async def test_faults_are_injected_as_configured(acct_store):
    faults = FaultConfig(error_rate=0.3, throttle_rate=0.2, retry_after_s=1.5, seed=42)
    client = await client_for(create_sandbox("acct", acct_store, credentials=ACCT_CREDENTIALS, faults=faults))
    auth = {"X-App-Id": "app-1", "X-Connection-Code": "conn-1"}
    statuses = []
    try:
        for _ in range(200):
            response = await client.get("/api/voucher/receipts", headers=auth)
            statuses.append(response.status)
            if response.status == 429:
                assert response.headers["Retry-After"] == "1.5"
        assert (await client.get("/", headers=auth)).status == 200  # the page is never disturbed
    finally:
        await client.close()
    assert 40 <= statuses.count(503) <= 80 and 20 <= statuses.count(429) <= 60
    assert statuses.count(503) == faults.counts["error"] and statuses.count(429) == faults.counts["throttle"]


async def test_the_page_lists_records_for_a_person(crm_store):
    crm_store.upsert("cty-abc", "customer", {"code": "KH0001", "name": "Công ty <ABC>"})
    client = await client_for(create_sandbox("crm", crm_store, credentials=CRM_CREDENTIALS))
    try:
        page = await (await client.get("/")).text()
    finally:
        await client.close()
    assert "AMIS CRM sandbox" in page and "cty-abc" in page and "KH0001" in page and "&lt;ABC&gt;" in page
