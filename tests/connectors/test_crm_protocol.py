"""The CRM sandbox speaks the public CRM Open API v2, and the connectors' CRM client talks it.

Shapes from amis-apis.md Part 1 and the Part 6 checklist: the token call, the two headers of every
data call (401 with an empty body otherwise), arrays in and per-item results out, PUT changing only
what is sent, lists newest first without a total, at most 100 a page.
"""

from __future__ import annotations

import time

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from amis.crm_client import CrmClient, CrmCredentials, parse_list, parse_token_response, parse_write_results
from amis.errors import ProtocolError, Refused
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore

CREDENTIALS = {"app-abc": "cty-abc", "app-abc:secret": "s3cret"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store(tmp_path):
    store = CrmStore(tmp_path / "crm.sqlite")
    yield store
    store.close()


async def started(app) -> TestClient:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def auth_headers(client: TestClient) -> dict[str, str]:
    answer = await (
        await client.post("/api/v2/Account", json={"client_id": "app-abc", "client_secret": "s3cret"})
    ).json()
    return {"Authorization": f"Bearer {answer['data']}", "Clientid": "app-abc"}


async def test_the_token_is_a_jwt_of_24_hours_and_data_calls_need_both_headers(store):
    client = await started(create_crm_sandbox(store, credentials=CREDENTIALS))
    try:
        answer = await (
            await client.post("/api/v2/Account", json={"client_id": "app-abc", "client_secret": "s3cret"})
        ).json()
        assert answer["success"] is True and answer["code"] == 0 and isinstance(answer["data"], str)
        claims = jwt.decode(answer["data"], options={"verify_signature": False})
        assert claims["iss"] == "MISA" and claims["aud"] == "AMISCRM2" and "payloaddata" in claims
        assert abs(claims["exp"] - (time.time() + 24 * 3600)) < 60
        wrong = await client.post("/api/v2/Account", json={"client_id": "app-abc", "client_secret": "nope"})
        assert wrong.status == 401 and (await wrong.json())["ErrorCode"] == "InvalidAppID"

        token = answer["data"]
        for headers in (
            {},
            {"Authorization": f"Bearer {token}"},  # no Clientid
            {"Clientid": "app-abc"},  # no token
            {"Authorization": f"Bearer {token}", "Clientid": "someone-else"},
            {"Authorization": "Bearer not-a-token", "Clientid": "app-abc"},
        ):
            refused = await client.get("/api/v2/Customers", headers=headers)
            assert refused.status == 401 and await refused.read() == b""
        ok = await client.get("/api/v2/Customers", headers={"Authorization": f"Bearer {token}", "Clientid": "app-abc"})
        assert ok.status == 200 and await ok.json() == {"success": True, "code": 200, "data": []}
        # the documented root of the doc serves the same API
        alt = await client.get(
            "/crm/gc/api/public/api/v2/Customers", headers={"Authorization": f"Bearer {token}", "Clientid": "app-abc"}
        )
        assert alt.status == 200
    finally:
        await client.close()


async def test_writes_take_arrays_and_answer_per_item_put_changes_only_what_is_sent(store):
    client = await started(create_crm_sandbox(store, credentials=CREDENTIALS))
    try:
        auth = await auth_headers(client)
        created = await client.post(
            "/api/v2/Customers",
            headers=auth,
            json=[
                {"account_number": "KH0001", "account_name": "Công ty ABC", "tax_code": "0101"},
                {"account_number": "KH0002"},  # no name: refused, item by item
                {"account_number": "KH0001", "account_name": "twice"},  # the code exists
            ],
        )
        assert created.status == 200
        body = await created.json()
        assert body["success"] is False and body["code"] == 200
        first, second, third = body["results"]
        assert first["success"] is True and isinstance(first["data"], int)
        assert second["success"] is False and second["validate_infos"][0]["field_name"] == "account_name"
        assert third["validate_infos"][0]["field_name"] == "account_number"

        patched = await client.put(
            "/api/v2/Customers", headers=auth, json=[{"id": first["data"], "office_tel": "0901"}]
        )
        assert (await patched.json())["results"] == [{"success": True, "data": first["data"]}]
        (record,) = (await (await client.get(f"/api/v2/Customers/id?id={first['data']}", headers=auth)).json())["data"]
        assert (
            record["account_name"] == "Công ty ABC" and record["tax_code"] == "0101" and record["office_tel"] == "0901"
        )
        assert record["modified_date"].endswith("+07:00") and "." in record["modified_date"]
        by_code = (await (await client.get("/api/v2/Customers/code?code=KH0001&code=KH9", headers=auth)).json())["data"]
        assert [r["id"] for r in by_code] == [first["data"]]

        missing = await (
            await client.put("/api/v2/Customers", headers=auth, json=[{"id": 999999, "tax_code": "x"}])
        ).json()
        assert missing["results"][0]["success"] is False
        bad_label = await (
            await client.post(
                "/api/v2/SaleOrders", headers=auth, json=[{"sale_order_no": "DH1", "revenue_status": "proposed"}]
            )
        ).json()
        assert bad_label["results"][0]["validate_infos"][0]["field_name"] == "revenue_status"

        deleted = await (await client.delete("/api/v2/Customers", headers=auth, json=[first["data"], 424242])).json()
        assert [r["success"] for r in deleted["results"]] == [True, False]
        assert (await (await client.get("/api/v2/Customers", headers=auth)).json())["data"] == []
    finally:
        await client.close()


async def test_lists_are_newest_first_by_modified_date_at_most_100_a_page_without_a_total(store):
    clock = Clock()
    store.clock = clock
    client = await started(create_crm_sandbox(store, credentials=CREDENTIALS))
    try:
        auth = await auth_headers(client)
        for n in range(12):
            clock.now += 1
            await client.post(
                "/api/v2/Products", headers=auth, json=[{"product_code": f"SP{n:02d}", "product_name": "x"}]
            )
        clock.now += 1
        first = store.by_code("cty-abc", "Products", "SP00")
        await client.put("/api/v2/Products", headers=auth, json=[{"id": first["id"], "unit_price": 5}])
        page1 = await (await client.get("/api/v2/Products", headers=auth)).json()
        assert set(page1) == {"success", "code", "data"}  # no total
        codes = [r["product_code"] for r in page1["data"]]
        assert len(codes) == 10 and codes[:3] == ["SP00", "SP11", "SP10"]  # the edited one is newest
        page0 = await (await client.get("/api/v2/Products?page=0", headers=auth)).json()
        assert page0["data"] == page1["data"]  # 0 and 1 are both the first page
        page2 = await (await client.get("/api/v2/Products?page=2&pageSize=10", headers=auth)).json()
        assert [r["product_code"] for r in page2["data"]] == ["SP02", "SP01"]
        oldest = await (
            await client.get("/api/v2/Products?pageSize=2&isDescending=false&orderBy=modified_date", headers=auth)
        ).json()
        assert [r["product_code"] for r in oldest["data"]] == ["SP01", "SP02"]
        too_big = await client.get("/api/v2/Products?pageSize=101", headers=auth)
        assert too_big.status == 400 and (await too_big.json())["ErrorCode"] == "InvalidParam"
    finally:
        await client.close()


async def test_extension_resources_say_so(store):
    client = await started(create_crm_sandbox(store, credentials=CREDENTIALS))
    try:
        auth = await auth_headers(client)
        answer = await client.post("/api/v2/Quotes", headers=auth, json=[{"quote_code": "BG1"}])
        assert "not part of AMIS CRM Open API v2" in answer.headers["X-Sandbox-Extension"]
        assert "not part of" in (await answer.json())["extension"]
        documented = await client.get("/api/v2/Customers", headers=auth)
        assert "X-Sandbox-Extension" not in documented.headers
        page = await (await client.get("/")).text()
        assert "extension" in page and "Quotes" in page
    finally:
        await client.close()


async def test_extension_fields_of_documented_resources_say_so(store):
    client = await started(create_crm_sandbox(store, credentials=CREDENTIALS))
    try:
        auth = await auth_headers(client)
        await client.post("/api/v2/SaleOrders", headers=auth, json=[{"sale_order_no": "DH1"}])
        plain = await client.get("/api/v2/SaleOrders", headers=auth)
        assert "X-Sandbox-Extension" not in plain.headers and "extension_fields" not in await plain.json()
        (order,) = (await plain.json())["data"]
        await client.put(
            "/api/v2/SaleOrders", headers=auth, json=[{"id": order["id"], "delivered_quantities": {"1": 2}}]
        )
        labelled = await client.get("/api/v2/SaleOrders", headers=auth)
        assert "delivered_quantities" in labelled.headers["X-Sandbox-Extension"]
        assert "not part of AMIS CRM Open API v2" in (await labelled.json())["extension_fields"]["delivered_quantities"]
        assert "extension fields: delivered_quantities" in await (await client.get("/")).text()
    finally:
        await client.close()


async def test_the_client_caches_the_token_renews_it_before_it_ends_and_after_a_401(store):
    clock = Clock()
    store.clock = clock
    server = TestServer(
        create_crm_sandbox(store, credentials=CREDENTIALS, token_ttl_s=3600, admin_token="crm-admin-t0ken")
    )
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            creds = {"cty-abc": CrmCredentials("app-abc", SecretStr("s3cret"))}
            crm = CrmClient(str(server.make_url("/api/v2")), session, creds, renew_before=600, clock=clock)
            results = await crm.create("cty-abc", "Customers", [{"account_number": "KH1", "account_name": "A"}])
            assert results[0].success
            for _ in range(3):
                await crm.list_page("cty-abc", "Customers", 1)
            assert crm.logins == 1  # cached
            clock.now += 3600 - 500  # within renew_before of exp: a new token before it ends
            await crm.list_page("cty-abc", "Customers", 1)
            assert crm.logins == 2
            revoked = await session.post(  # the token stops working
                server.make_url("/sandbox/revoke-tokens"), headers={"Authorization": "Bearer crm-admin-t0ken"}
            )
            assert revoked.status == 200
            clock.now += 1
            assert len(await crm.by_codes("cty-abc", "Customers", ["KH1"])) == 1  # 401 -> new token -> answered
            assert crm.logins == 3
            with pytest.raises(Refused) as refused:
                await crm.list_page("nobody", "Customers", 1)
            assert refused.value.status == 401 and "LIENTHONG_CRM_CREDENTIALS" in str(refused.value)
            wrong = CrmClient(
                str(server.make_url("/api/v2")), session, {"t": CrmCredentials("app-abc", SecretStr("bad"))}
            )
            with pytest.raises(Refused) as bad_login:
                await wrong.list_page("t", "Customers", 1)
            assert bad_login.value.status == 401 and "InvalidAppID" in str(bad_login.value)
            assert "bad" not in str(bad_login.value)  # the secret is never in a message
    finally:
        await server.close()


def test_the_documented_envelopes_are_read():
    token = jwt.encode(
        {"payloaddata": "x", "exp": 1764201600, "iss": "MISA", "aud": "AMISCRM2"}, "k" * 32, algorithm="HS256"
    )
    assert parse_token_response({"success": True, "code": 0, "data": token}) == (token, 1764201600.0)
    with pytest.raises(ProtocolError):
        parse_token_response({"success": True, "code": 0, "data": {"access_token": token}})
    assert parse_list({"success": True, "code": 200, "data": [{"id": 1}]}) == [{"id": 1}]
    (ok,) = parse_write_results({"success": True, "code": 200, "results": [{"success": True, "data": 6770}]}, 1)
    assert ok.success and ok.id == "6770"
    (failed,) = parse_write_results(
        {
            "success": False,
            "code": 200,
            "results": [
                {
                    "success": False,
                    "data": None,
                    "validate_infos": [{"field_name": "account_name", "error_message": "Trống"}],
                }
            ],
        },
        1,
    )
    assert not failed.success and failed.message() == "account_name: Trống"
    with pytest.raises(ProtocolError):
        parse_write_results({"success": True, "code": 200, "results": []}, 1)
