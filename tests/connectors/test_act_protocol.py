"""The accounting sandbox speaks the ACT Open API, and the connectors' ACT client talks it.

Shapes from amis-apis.md Part 2 and the Part 6 checklist: the connect envelope whose Data is a JSON
string, X-MISA-AccessToken, ExpiredToken answered with HTTP 200, dictionaries by last_sync_time,
save answered "queued" with the result by signed callback, proposals updated until generated and
then IsCreatedVoucher, callbacks 2 / 18 / 22, undelivered ones pulled back, the documented limits.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from amis.acct_client import (
    ActClient,
    ActCredentials,
    callback_signature,
    parse_callback,
    parse_envelope,
    parse_token,
    signature_holds,
    sync_time,
)
from amis.errors import Refused
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.faults import FaultConfig

APP_ID = "0c9f6d2e-app"
CREDENTIALS = {f"{APP_ID}:acc3ss": "cty-abc"}
ADMIN = {"Authorization": "Bearer act-sandbox-admin-token"}  # the sandbox's /sandbox/... routes need it


class Receiver:
    """The partner's APICallBack URL: keeps what arrives, answers as the reference says."""

    def __init__(self, *, accept: bool = True) -> None:
        self.received: list[dict] = []
        self.accept = accept
        app = web.Application()
        app.router.add_post("/callback", self.handle)
        self.server = TestServer(app)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(body)
        return web.json_response({"Success": self.accept, "ErrorCode": None, "ErrorMessage": None, "Data": None})

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.received


@pytest.fixture()
async def world(tmp_path):
    receiver = Receiver()
    await receiver.server.start_server()
    store = ActStore(tmp_path / "acct.sqlite")
    sandbox = TestServer(
        create_acct_sandbox(
            store,
            app_id=APP_ID,
            credentials=CREDENTIALS,
            callback_url=str(receiver.server.make_url("/callback")),
            admin_token="act-sandbox-admin-token",
        )
    )
    await sandbox.start_server()
    session = aiohttp.ClientSession()
    client = ActClient(
        str(sandbox.make_url("")),
        session,
        APP_ID,
        {"cty-abc": ActCredentials(SecretStr("acc3ss"), "0101234567")},
    )
    yield {"store": store, "sandbox": sandbox, "receiver": receiver, "client": client, "session": session}
    await session.close()
    await sandbox.close()
    await receiver.server.close()
    store.close()


async def test_connect_answers_a_json_string_token_of_12_hours_and_data_calls_need_it(world):
    session, url = world["session"], world["sandbox"].make_url
    raw = await (
        await session.post(
            url("/api/oauth/actopen/connect"),
            json={"app_id": APP_ID, "access_code": "acc3ss", "org_company_code": "0101234567"},
        )
    ).json()
    assert set(raw) >= {"Success", "ErrorCode", "ErrorMessage", "Data"} and isinstance(raw["Data"], str)
    token, expires = parse_token(parse_envelope(raw))
    data = orjson.loads(raw["Data"])
    assert data["expired_time"].endswith("+07:00") and set(data) == {
        "access_token",
        "expired_time",
        "tenant_code",
        "app_name",
    }
    assert abs(expires - (time.time() + 12 * 3600)) < 60
    wrong = await (
        await session.post(url("/api/oauth/actopen/connect"), json={"app_id": APP_ID, "access_code": "nope"})
    ).json()
    assert wrong["Success"] is False and wrong["ErrorCode"] == "AppIDDisconnect"
    body = {"app_id": APP_ID, "data_type": 1, "skip": 0, "take": 10}
    no_token = await session.post(url("/apir/sync/actopen/get_dictionary"), json=body)
    assert no_token.status == 200 and (await no_token.json())["ErrorCode"] == "InvalidToken"
    ok = await (
        await session.post(url("/apir/sync/actopen/get_dictionary"), json=body, headers={"X-MISA-AccessToken": token})
    ).json()
    assert ok["Success"] is True and ok["Data"] == "[]" and "LastSyncTime" in orjson.loads(ok["CustomData"])
    assert (await session.post(url("/sandbox/expire-tokens"), headers=ADMIN)).status == 200
    expired = await session.post(
        url("/apir/sync/actopen/get_dictionary"), json=body, headers={"X-MISA-AccessToken": token}
    )
    assert expired.status == 200 and (await expired.json())["ErrorCode"] == "ExpiredToken"


async def test_the_client_renews_an_expired_token_and_refuses_without_credentials(world):
    client, session = world["client"], world["session"]
    assert await client.get_dictionary("cty-abc", 1) == []
    assert client.connects == 1
    assert (await session.post(world["sandbox"].make_url("/sandbox/expire-tokens"), headers=ADMIN)).status == 200
    assert await client.get_dictionary("cty-abc", 1) == []  # ExpiredToken -> connect again -> answered
    assert client.connects == 2
    with pytest.raises(Refused) as refused:
        await client.get_dictionary("cty-nobody", 1)
    assert refused.value.status == 401 and "LIENTHONG_ACCT_CREDENTIALS" in str(refused.value)
    stranger = ActClient(
        str(world["sandbox"].make_url("")), session, APP_ID, {"t": ActCredentials(SecretStr("bad-code"), "x")}
    )
    with pytest.raises(Refused) as bad:
        await stranger.get_dictionary("t", 1)
    assert "AppIDDisconnect" in str(bad.value) and "bad-code" not in str(bad.value)


async def test_dictionaries_by_last_sync_time_deletions_and_the_200_item_limit(world):
    client, store = world["client"], world["store"]
    items = [
        {
            "dictionary_type": 1,
            "account_object_code": f"KH{n:03d}",
            "account_object_name": f"Khách {n}",
            "is_customer": True,
        }
        for n in range(250)
    ]
    calls = []
    original = client.call

    async def counting(tenant, name, body, **kw):
        calls.append((name, len(body.get("dictionary") or [])))
        return await original(tenant, name, body, **kw)

    client.call = counting
    results = await client.save_dictionary("cty-abc", items)
    assert [n for name, n in calls if name == "save_dictionary"] == [200, 50]  # split at the documented limit
    assert all(r["success"] for r in results) and len({r["account_object_id"] for r in results}) == 250
    everything, skip = [], 0
    while True:
        page = await client.get_dictionary("cty-abc", 1, skip=skip, take=100)
        everything += page
        if len(page) < 100:
            break
        skip += 100
    assert len(everything) == 250 and everything[0]["modified_date"].endswith("+07:00")
    with pytest.raises(Refused):
        await client.call("cty-abc", "save_dictionary", {"dictionary": items[:201]})

    await asyncio.sleep(1.1)
    later = time.time()
    await client.save_dictionary(
        "cty-abc",
        [{"dictionary_type": 1, "account_object_code": "KH007", "account_object_name": "Đổi tên", "state": 2}],
    )
    await client.save_dictionary("cty-abc", [{"dictionary_type": 1, "account_object_code": "KH008", "state": 3}])
    since = sync_time(later)  # "YYYY-MM-DD HH:mm:ss", Vietnam time
    changed = await client.get_dictionary("cty-abc", 1, last_sync_time=since)
    assert [r["account_object_code"] for r in changed] == ["KH007"] and changed[0]["account_object_name"] == "Đổi tên"
    deleted = await client.get_dictionary_delete("cty-abc", 1, last_sync_time=since)
    assert [d["account_object_code"] for d in deleted] == ["KH008"] and "deleted_date" in deleted[0]
    missing = await client.save_dictionary(
        "cty-abc", [{"dictionary_type": 1, "account_object_code": "KH999", "account_object_name": "x", "state": 2}]
    )
    assert missing[0]["success"] is False and missing[0]["error_code"] == "InvalidParam"
    assert store.dictionary_record("cty-abc", 1, code="KH000")["account_object_name"] == "Khách 0"


async def order(client, org_refid, refno="DH0001", total=100000, lines=1):
    return {
        "voucher_type": 20,
        "org_refid": org_refid,
        "org_refno": refno,
        "refno": refno,
        "account_object_code": "KH001",
        "total_amount": total,
        "is_get_new_id": False,
        "detail": [
            {"ref_detail_id": f"L{n}", "inventory_item_code": "SP01", "quantity": 1, "amount": total}
            for n in range(lines)
        ],
    }


async def test_save_is_queued_its_result_comes_signed_and_generation_locks_the_proposal(world):
    client, receiver, store = world["client"], world["receiver"], world["store"]
    await client.save_dictionary(
        "cty-abc",
        [
            {"dictionary_type": 1, "account_object_code": "KH001", "account_object_name": "A"},
            {"dictionary_type": 3, "inventory_item_code": "SP01", "inventory_item_name": "Bút"},
        ],
    )
    answer = await client.call("cty-abc", "save", {"voucher": [await order(client, "ref-1")]})
    assert answer.success and answer.data is None  # queued: nothing booked yet
    (first,) = await receiver.wait_for(1)
    callback = parse_callback(orjson.dumps(first))
    assert callback.data_type == 1 and isinstance(first["data"], str)
    assert first["signature"] == callback_signature(first["data"], APP_ID) and signature_holds(callback, APP_ID)
    assert not signature_holds(callback, "another-key")
    assert first["org_company_code"] == "0101234567" and first["app_id"] == APP_ID
    (item,) = callback.items
    assert (
        item["org_refid"] == "ref-1" and item["success"] is True and item["voucher_type"] == 20 and item["session_id"]
    )

    await client.save("cty-abc", [await order(client, "ref-1", total=120000)])  # the same org_refid: an update
    await receiver.wait_for(2)
    assert len(store.proposals("cty-abc")) == 1 and store.proposal("cty-abc", "ref-1")[0]["total_amount"] == 120000

    generated = await world["session"].post(
        world["sandbox"].make_url("/sandbox/ui/cty-abc/proposals/ref-1/generate"), headers=ADMIN
    )
    assert generated.status == 200
    await receiver.wait_for(3)
    eighteen = parse_callback(receiver.received[2])
    assert eighteen.data_type == 18 and eighteen.items[0]["refid"] == "ref-1" and eighteen.items[0]["refno"] == "DH0001"

    await client.save("cty-abc", [await order(client, "ref-1", total=1)])
    await receiver.wait_for(4)
    locked = parse_callback(receiver.received[3]).items[0]
    assert locked["success"] is False and locked["error_code"] == "IsCreatedVoucher"
    assert locked["error_message"] == "Đã sinh chứng từ kế toán, không thể cập nhật được."

    # the accountant's own vouchers and edits: data_type 22 with ModelState 1 / 2 / 3
    url = world["sandbox"].make_url
    entered = await (
        await world["session"].post(
            url("/sandbox/ui/cty-abc/vouchers"),
            json={"voucher_type": 5, "refno": "PT0001", "sa_order_refid": "ref-1", "total_amount": 20000},
            headers=ADMIN,
        )
    ).json()
    refid = entered["data"]["refid"]
    edited = await world["session"].post(
        url("/sandbox/ui/cty-abc/vouchers"),
        json={"voucher_type": 5, "refid": refid, "total_amount": 25000},
        headers=ADMIN,
    )
    assert edited.status == 200
    assert (await world["session"].delete(url(f"/sandbox/ui/cty-abc/vouchers/{refid}"), headers=ADMIN)).status == 200
    await receiver.wait_for(7)
    states = [parse_callback(c).items[0]["custom_param"]["ModelState"] for c in receiver.received[4:7]]
    assert [parse_callback(c).data_type for c in receiver.received[4:7]] == [22, 22, 22] and states == [1, 2, 3]


async def test_a_callback_about_an_extension_says_so_outside_the_signed_data(world):
    client, receiver = world["client"], world["receiver"]
    await client.save_dictionary(
        "cty-abc", [{"dictionary_type": 1, "account_object_code": "KH001", "account_object_name": "A"}]
    )
    await client.save("cty-abc", [{**(await order(client, "ref-q")), "voucher_type": 9002, "detail": []}])
    (callback,) = await receiver.wait_for(1)
    assert "quotes" in callback["x_sandbox_extension"] and signature_holds(parse_callback(callback), APP_ID)
    await client.save("cty-abc", [await order(client, "ref-o")])
    await receiver.wait_for(2)
    assert "x_sandbox_extension" not in receiver.received[1]  # a documented voucher_type: nothing added


async def test_delete_unknown_references_and_the_voucher_limits(world):
    client, receiver = world["client"], world["receiver"]
    await client.save("cty-abc", [{**(await order(client, "ref-2")), "account_object_code": "KH-NONE"}])
    (result,) = await receiver.wait_for(1)
    item = parse_callback(result).items[0]
    assert item["success"] is False and "KH-NONE" in item["error_message"]
    await client.delete("cty-abc", [{"voucher_type": 20, "org_refid": "ref-unknown"}])
    await receiver.wait_for(2)
    deletion = parse_callback(receiver.received[1])
    assert deletion.data_type == 2 and deletion.items[0]["error_code"] == "VoucherNotFound"
    with pytest.raises(Refused, match="at most 500"):
        await client.save("cty-abc", [await order(client, "ref-3", lines=501)])
    raw = await client.call("cty-abc", "save", {"voucher": []})
    assert raw.success
    with pytest.raises(Refused, match="InvalidParam"):
        await client.call("cty-abc", "save", {"voucher": [await order(client, f"r{n}") for n in range(101)]})


async def test_undelivered_callbacks_are_kept_for_get_call_back_detail_error(tmp_path):
    store = ActStore(tmp_path / "acct.sqlite")
    faults = FaultConfig(callback_drop_rate=1.0, seed=1)
    sandbox = TestServer(
        create_acct_sandbox(
            store, app_id=APP_ID, credentials=CREDENTIALS, callback_url="http://127.0.0.1:9/x", faults=faults
        )
    )
    await sandbox.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = ActClient(
                str(sandbox.make_url("")), session, APP_ID, {"cty-abc": ActCredentials(SecretStr("acc3ss"), "C")}
            )
            started = time.time()
            await client.delete("cty-abc", [{"voucher_type": 20, "org_refid": "gone"}])
            deadline = time.monotonic() + 5
            found = []
            while not found and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                found = await client.undelivered("cty-abc", started - 5, time.time() + 5)
            (callback,) = found
            assert callback.data_type == 2 and callback.items[0]["org_refid"] == "gone"
            assert signature_holds(callback, APP_ID)
            assert store.callbacks("cty-abc")[0]["state"] == "undelivered"
    finally:
        await sandbox.close()
        store.close()


def test_the_documented_shapes_are_read():
    # the connect answer as a saved real response has it (amis-apis.md §2.2)
    envelope = parse_envelope(
        {
            "Success": True,
            "ErrorCode": None,
            "ErrorMessage": None,
            "Data": '{"access_token":"abc","expired_time":"2025-11-11T11:25:17.25+07:00",'
            '"tenant_code":"t","app_name":"C"}',
        }
    )
    token, expires = parse_token(envelope)
    assert token == "abc" and expires == datetime.fromisoformat("2025-11-11T11:25:17.25+07:00").timestamp()
    # a save callback as A4/A5 describe it: data is a JSON string, the signature an HMAC of it keyed by app_id
    data = (
        '[{"org_refid":"r1","success":false,"error_code":"IsCreatedVoucher","error_message":"m",'
        '"session_id":"s","voucher_type":13,"error_call_back_message":null}]'
    )
    body = {
        "success": False,
        "error_code": None,
        "error_message": None,
        "signature": callback_signature(data, "app-1"),
        "data_type": 1,
        "data": data,
        "org_company_code": "0101",
        "app_id": "app-1",
    }
    callback = parse_callback(orjson.dumps(body))
    assert callback.items[0]["error_code"] == "IsCreatedVoucher" and signature_holds(callback, "app-1")
    # CukCuk's receiver spells the envelope in PascalCase (A8): read the same
    pascal = parse_callback({"Success": True, "Signature": body["signature"], "Data_Type": 1, "Data": data})
    assert pascal.data_type == 1 and signature_holds(pascal, "app-1")
    tampered = parse_callback({**body, "data": data.replace("r1", "r2")})
    assert not signature_holds(tampered, "app-1")
