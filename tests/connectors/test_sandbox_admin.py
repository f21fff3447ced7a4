"""The sandboxes' ``/sandbox/...`` routes (test controls, an accountant's screens) need the sandbox's admin token.

Without it, or with a wrong one, each answers 401 and changes nothing; with it (``Authorization: Bearer`` or
the page's own buttons, opened through the ``/?token=`` link) it acts. ``lienthong sandbox`` prints a token
made for the run when ``LIENTHONG_SANDBOX_ADMIN_TOKEN`` is unset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "the-right-admin-token-0123"
APP_ID = "app-7"
TENANT = "cty-abc"
DENIED: dict[str, dict[str, str] | None] = {
    "no token": None,
    "a wrong token": {"Authorization": "Bearer the-wrong-admin-token-999"},
    "another scheme": {"Authorization": f"Basic {TOKEN}"},
}
RIGHT = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
async def acct(tmp_path) -> AsyncIterator[tuple[TestClient, ActStore]]:
    store = ActStore(tmp_path / "acct.sqlite")
    client = TestClient(
        TestServer(
            create_acct_sandbox(store, app_id=APP_ID, credentials={f"{APP_ID}:acc3ss": TENANT}, admin_token=TOKEN)
        )
    )
    await client.start_server()
    yield client, store
    await client.close()
    store.close()


@pytest.fixture()
async def crm(tmp_path) -> AsyncIterator[TestClient]:
    store = CrmStore(tmp_path / "crm.sqlite")
    client = TestClient(
        TestServer(create_crm_sandbox(store, credentials={"app-1": TENANT, "app-1:secret": "s3"}, admin_token=TOKEN))
    )
    await client.start_server()
    yield client
    await client.close()
    store.close()


async def refused_each_way(call: Callable[[dict[str, str] | None], Awaitable[aiohttp.ClientResponse]]) -> None:
    for how, headers in DENIED.items():
        answer = await call(headers)
        assert answer.status == 401, f"{how}: {answer.status} {await answer.text()}"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "LIENTHONG_SANDBOX_ADMIN_TOKEN" in (await answer.json())["message"]  # says what to send


def pending_proposal(store: ActStore, org_refid: str) -> None:
    assert store.save_proposal(TENANT, {"org_refid": org_refid, "voucher_type": 20, "org_refno": "DH1"}) == (None, None)


async def test_an_accountants_dictionary_edit_needs_the_token(acct):
    client, store = acct
    item = {"dictionary_type": 1, "account_object_code": "KH9", "account_object_name": "Chín", "is_customer": True}
    await refused_each_way(lambda h: client.post(f"/sandbox/ui/{TENANT}/dictionary", json=item, headers=h))
    assert store.dictionary_record(TENANT, 1, code="KH9") is None
    assert (await client.post(f"/sandbox/ui/{TENANT}/dictionary", json=item, headers=RIGHT)).status == 200
    assert store.dictionary_record(TENANT, 1, code="KH9")["account_object_name"] == "Chín"


async def test_generating_a_proposal_needs_the_token(acct):
    client, store = acct
    pending_proposal(store, "ref-1")
    path = f"/sandbox/ui/{TENANT}/proposals/ref-1/generate"
    await refused_each_way(lambda h: client.post(path, headers=h))
    assert store.proposal(TENANT, "ref-1")[1] == "pending" and store.voucher(TENANT, "ref-1") is None
    assert (await client.post(path, headers=RIGHT)).status == 200
    assert store.proposal(TENANT, "ref-1")[1] == "generated"


async def test_entering_and_deleting_a_voucher_need_the_token(acct):
    client, store = acct
    voucher = {"voucher_type": 5, "refid": "pt-1", "refno": "PT1", "total_amount": 20000}
    await refused_each_way(lambda h: client.post(f"/sandbox/ui/{TENANT}/vouchers", json=voucher, headers=h))
    assert store.vouchers(TENANT) == []
    assert (await client.post(f"/sandbox/ui/{TENANT}/vouchers", json=voucher, headers=RIGHT)).status == 200
    assert store.voucher(TENANT, "pt-1")["total_amount"] == 20000
    await refused_each_way(lambda h: client.delete(f"/sandbox/ui/{TENANT}/vouchers/pt-1", headers=h))
    assert store.voucher(TENANT, "pt-1") is not None
    assert (await client.delete(f"/sandbox/ui/{TENANT}/vouchers/pt-1", headers=RIGHT)).status == 200
    assert store.voucher(TENANT, "pt-1") is None


async def act_dictionary(client: TestClient, token: str) -> dict[str, Any]:
    body = {"app_id": APP_ID, "data_type": 1, "skip": 0, "take": 10}
    answer = await client.post("/apir/sync/actopen/get_dictionary", json=body, headers={"X-MISA-AccessToken": token})
    return await answer.json()


async def test_expiring_acts_tokens_needs_the_admin_token(acct):
    client, _store = acct
    connect = {"app_id": APP_ID, "access_code": "acc3ss", "org_company_code": "0101"}
    raw = await (await client.post("/api/oauth/actopen/connect", json=connect)).json()
    act_token = orjson.loads(raw["Data"])["access_token"]
    await refused_each_way(lambda h: client.post("/sandbox/expire-tokens", headers=h))
    assert (await act_dictionary(client, act_token))["Success"] is True  # the token still works
    assert (await client.post("/sandbox/expire-tokens", headers=RIGHT)).status == 200
    assert (await act_dictionary(client, act_token))["ErrorCode"] == "ExpiredToken"


async def test_revoking_crm_tokens_needs_the_admin_token(crm):
    answer = await (await crm.post("/api/v2/Account", json={"client_id": "app-1", "client_secret": "s3"})).json()
    login = {"Authorization": f"Bearer {answer['data']}", "Clientid": "app-1"}
    await refused_each_way(lambda h: crm.post("/sandbox/revoke-tokens", headers=h))
    assert (await crm.get("/api/v2/Customers", params={"page": "1", "pageSize": "10"}, headers=login)).status == 200
    assert (await crm.post("/sandbox/revoke-tokens", headers=RIGHT)).status == 200
    assert (await crm.get("/api/v2/Customers", params={"page": "1", "pageSize": "10"}, headers=login)).status == 401


async def test_the_pages_button_acts_only_when_the_page_was_opened_with_the_token(acct):
    client, store = acct
    pending_proposal(store, "ref-2")
    plain = await (await client.get("/")).text()
    assert "<form" not in plain and "/?token=" in plain  # the proposal but no button, and says how
    wrong = await (await client.get("/", params={"token": "the-wrong-admin-token-999"})).text()
    assert "<form" not in wrong and "not this sandbox's admin token" in wrong
    opened = await client.get("/", params={"token": TOKEN}, allow_redirects=False)
    assert opened.status == 303 and opened.headers["Location"] == "/"  # the token leaves the address bar...
    assert "HttpOnly" in opened.headers["Set-Cookie"] and "SameSite=Strict" in opened.headers["Set-Cookie"]
    page = await (await client.get("/")).text()  # ...for a cookie the client keeps, as a browser does
    button = re.search(r'<form method=post action="([^"]+)"><input type=hidden name=token value="([^"]+)">', page)
    assert button is not None, page
    action, token = button.groups()
    assert action == f"/sandbox/ui/{TENANT}/proposals/ref-2/generate?redirect=1" and token == TOKEN
    forged = await client.post(action, data={"token": "the-wrong-admin-token-999"}, allow_redirects=False)
    assert forged.status == 401 and store.proposal(TENANT, "ref-2")[1] == "pending"
    pressed = await client.post(action, data={"token": token}, allow_redirects=False)  # as the browser sends it
    assert pressed.status == 303 and pressed.headers["Location"] == "/"  # back to the page
    assert store.proposal(TENANT, "ref-2")[1] == "generated"


def wait_for_line(process: subprocess.Popen[str], pattern: str, seconds: float) -> re.Match[str]:
    deadline, seen = time.monotonic() + seconds, []
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if found := re.search(pattern, line):
            return found
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"no line matching {pattern!r} in: {''.join(seen)}")


def post(url: str, token: str) -> int:
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_lienthong_sandbox_prints_a_token_made_for_the_run_and_it_is_the_one_that_works(tmp_path):
    env = {**os.environ, "LIENTHONG_DATA_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("LIENTHONG_SANDBOX_ADMIN_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "sandbox", "crm", "--port", "0"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = wait_for_line(process, r"crm sandbox on (http://\S+)/", 60).group(1)
        link = wait_for_line(process, r"the page with its buttons: (\S+)", 10).group(1)
        assert link.startswith(f"{url}/?token=")
        token = link.split("?token=", 1)[1]
        assert post(f"{url}/sandbox/revoke-tokens", "guess") == 401
        assert post(f"{url}/sandbox/revoke-tokens", token) == 200
    finally:
        process.terminate()
        process.wait(30)
