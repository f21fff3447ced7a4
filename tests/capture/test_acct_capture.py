"""Accounting change capture against the ACT sandbox (the public ACT Open API, in-process) and the real broker.

Dictionaries are polled with ``get_dictionary`` by ``last_sync_time`` and ``get_dictionary_delete``;
vouchers come by ACT's signed callbacks to the capture service's ``/callback``: a bad signature is
refused and produces nothing; results of ``save`` / ``delete`` (data_type 1, 2) settle what the
accounting connector waits for; a generated proposal (18) and the accountant's own vouchers (22)
become change events.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials, callback_signature
from amis.ledger import CallbackOutcome, LocalWrites, WriteLedger
from capture.acct import ActCapture
from capture.state import CaptureState, ChangeReporter, CrashForTest, new_producer
from common.kafka_config import confluent_config
from common.names import System
from connectors.writers import ActWriter
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_api import CONFIG
from sandboxes.acct_store import ActStore
from sandboxes.admin import ADMIN_TOKEN
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id
from streams.settings import WorkerSettings
from tests.capture.conftest import events_of

pytestmark = pytest.mark.broker

APP_ID = "app-lienthong-test"
COMPANY = "0101234567"
CALLBACK_SECRET = SecretStr("cb-secret-of-the-test-company-0123")
CALLBACK_PATH = f"/callback/{CALLBACK_SECRET.get_secret_value()}"


@dataclass
class World:
    tenant: str
    store: ActStore
    sandbox: TestServer
    receiver: TestServer
    capture: ActCapture
    client: ActClient
    ledger: WriteLedger
    session: aiohttp.ClientSession
    settings: WorkerSettings

    def person_saves(self, **item: Any) -> dict[str, Any]:
        """What the accountant types in AMIS Kế toán's customer screen."""
        return self.store.save_dictionary_item(self.tenant, {"dictionary_type": 1, **item}, "ui")

    async def ui(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        token = self.sandbox.app[ADMIN_TOKEN]  # the accountant's screens need the sandbox's admin token
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.request(method, self.sandbox.make_url(path), json=body, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()

    def events(self, entity: str) -> list[dict[str, Any]]:
        return events_of(self.settings.kafka, f"cdc.acct.{entity}", self.tenant)


@contextlib.asynccontextmanager
async def acct_world(module_settings: WorkerSettings, tmp_path: Path, tenant: str) -> AsyncIterator[World]:
    ledger = WriteLedger(tmp_path / "acct-shared.sqlite")
    session = aiohttp.ClientSession()
    creds = {tenant: ActCredentials(SecretStr("acc3ss"), COMPANY)}
    store = ActStore(tmp_path / "acct.sqlite")
    # the sandbox posts its callbacks to the capture service's /callback, told once both listen
    sandbox = TestServer(create_acct_sandbox(store, app_id=APP_ID, credentials={f"{APP_ID}:acc3ss": tenant}))
    await sandbox.start_server()
    client = ActClient(str(sandbox.make_url("")), session, APP_ID, creds)
    reporter = ChangeReporter(
        System.ACCT,
        CaptureState(tmp_path / "acct-capture.sqlite"),
        ledger,
        new_producer(confluent_config(module_settings.kafka)),
        topic_prefix=module_settings.kafka.topic_prefix,
    )
    capture = ActCapture(
        client,
        reporter,
        ledger,
        {tenant: COMPANY},
        callback_secrets={tenant: CALLBACK_SECRET},
        entities=["customer"],
        overlap_s=0,
    )
    receiver = TestServer(capture.callback_app())
    await receiver.start_server()
    sandbox.app[CONFIG]["callback_url"] = str(receiver.make_url(CALLBACK_PATH))
    try:
        yield World(tenant, store, sandbox, receiver, capture, client, ledger, session, module_settings)
    finally:
        await session.close()
        await sandbox.close()
        await receiver.close()
        reporter.producer.flush(10)
        reporter.state.close()
        ledger.close()
        store.close()


async def test_dictionaries_are_read_by_last_sync_time_and_deletions_by_get_dictionary_delete(
    module_settings, tmp_path, tenant
):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        sent: list[tuple[str, str | None]] = []
        original = world.client.dictionary_page

        async def noting(tenant_, name, data_type, skip, take, last_sync_time):
            sent.append((name, last_sync_time))
            return await original(tenant_, name, data_type, skip, take, last_sync_time)

        world.client.dictionary_page = noting  # type: ignore[method-assign]
        world.person_saves(account_object_code="KH1", account_object_name="Một", is_customer=True)
        world.person_saves(account_object_code="KH2", account_object_name="Hai", is_customer=True)
        world.person_saves(account_object_code="NCC1", account_object_name="Nhà cung cấp", is_customer=False)
        await world.capture.poll_all()
        assert sent[0] == ("get_dictionary", None)  # the first scan reads everything
        await asyncio.sleep(1.1)  # last_sync_time has whole seconds
        world.person_saves(account_object_code="KH1", account_object_name="Một (sửa)", state=2)
        sent.clear()
        await world.capture.poll_all()
        since = [s for name, s in sent if name == "get_dictionary"]
        assert since and all(s is not None and len(s) == len("2025-01-01 00:00:00") for s in since)
        world.person_saves(account_object_code="KH2", state=3)
        await world.capture.poll_all()
        await world.capture.poll_all()  # nothing new
        events = world.events("customer")
    assert Counter((e["op"], e["after"]["code"] if e["after"] else e["before"]["code"]) for e in events) == {
        ("r", "KH1"): 1,
        ("r", "KH2"): 1,
        ("u", "KH1"): 1,
        ("d", "KH2"): 1,
    }
    update = next(e for e in events if e["op"] == "u")
    assert update["before"]["name"] == "Một" and update["after"]["name"] == "Một (sửa)" and update["origin"] == "user"
    deletion = next(e for e in events if e["op"] == "d")
    assert deletion["before"]["name"] == "Hai" and deletion["after"] is None


async def test_a_record_changed_while_a_long_scan_pages_through_does_not_hide_another(
    module_settings, tmp_path, tenant
):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        for n in range(150):
            world.person_saves(account_object_code=f"KH{n:03d}", account_object_name=f"Khách {n}", is_customer=True)
        original = world.client.dictionary_page
        first_page: list[dict[str, Any]] = []

        async def an_accountant_edits_between_pages(tenant_, name, data_type, skip, take, last_sync_time):
            page, server_time = await original(tenant_, name, data_type, skip, take, last_sync_time)
            if name == "get_dictionary" and skip == 0 and not first_page:
                first_page.extend(page)
                code = page[10]["account_object_code"]  # moves to the end: the row at 100 moves up to 99
                world.person_saves(account_object_code=code, account_object_name="Sửa giữa lúc đọc", state=2)
            return page, server_time

        world.client.dictionary_page = an_accountant_edits_between_pages  # type: ignore[method-assign]
        await world.capture.poll(tenant, "customer")
        events = world.events("customer")
    codes = Counter(e["after"]["code"] for e in events)
    assert len(codes) == 150  # every customer, the one skipped by the move too
    moved = first_page[10]["account_object_code"]
    # the moved one: as the first page showed it, then as it is now; every other one once
    assert [e["op"] for e in events if e["after"]["code"] == moved] == ["r", "u"]
    assert [e["after"]["name"] for e in events if e["after"]["code"] == moved][-1] == "Sửa giữa lúc đọc"
    assert all(n == 1 for code, n in codes.items() if code != moved)


def signed(data_type: int, items: list[dict[str, Any]], key: str = APP_ID) -> dict[str, Any]:
    data = orjson.dumps(items).decode()
    return {
        "success": True,
        "error_code": None,
        "error_message": None,
        "signature": callback_signature(data, key),
        "data_type": data_type,
        "data": data,
        "org_company_code": COMPANY,
        "app_id": APP_ID,
    }


async def test_a_callback_with_a_bad_signature_is_refused_and_produces_nothing(module_settings, tmp_path, tenant):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        awaited = world.ledger.expect_callback(tenant, "ref-x", 1, "cmd-1")
        receipt = {"refid": "PT-1", "refno": "PT0001", "voucher_type": 5, "total_amount": 1000}
        forged = [
            signed(22, [{**receipt, "custom_param": {"ModelState": 1}}], key="not-the-app-id"),
            {**signed(22, [{**receipt, "custom_param": {"ModelState": 1}}]), "data": orjson.dumps([receipt]).decode()},
            signed(1, [{"org_refid": "ref-x", "success": True}], key="not-the-app-id"),
            {**signed(1, [{"org_refid": "ref-x", "success": True}]), "signature": ""},
        ]
        for body in forged:
            async with world.session.post(world.receiver.make_url(CALLBACK_PATH), json=body) as answer:
                assert answer.status == 200  # ACT expects 200 always; the envelope says no
                assert await answer.json() == {
                    "Success": False,
                    "ErrorCode": "InvalidParam",
                    "ErrorMessage": "Signature invalid",
                    "Data": None,
                }
        async with world.session.post(world.receiver.make_url(CALLBACK_PATH), data=b"not json") as answer:
            assert (await answer.json())["ErrorCode"] == "InvalidParam"
        assert world.capture.refused_callbacks == 5  # the four forged, and the body that is no callback
        assert world.ledger.callback_outcome(awaited) is None  # nothing settled
        assert world.events("receipt") == []  # nothing produced
        # the same callback, signed as ACT signs it, is taken
        async with world.session.post(
            world.receiver.make_url(CALLBACK_PATH), json=signed(22, [{**receipt, "custom_param": {"ModelState": 1}}])
        ) as answer:
            assert (await answer.json())["Success"] is True
        (event,) = world.events("receipt")
        assert event["op"] == "c" and event["after"]["code"] == "PT0001"


async def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("nothing came in time")


async def test_callbacks_of_save_delete_generation_and_the_accountants_vouchers(module_settings, tmp_path, tenant):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        world.person_saves(account_object_code="KH001", account_object_name="A", is_customer=True)
        world.store.save_dictionary_item(
            tenant, {"dictionary_type": 3, "inventory_item_code": "SP01", "inventory_item_name": "Bút"}, "ui"
        )
        order = {
            "voucher_type": 20,
            "org_refid": "ref-1",
            "org_refno": "DH0001",
            "refno": "DH0001",
            "account_object_code": "KH001",
            "total_amount": 100000,
            "is_get_new_id": False,
            "detail": [{"ref_detail_id": "L1", "inventory_item_code": "SP01", "quantity": 1, "amount": 100000}],
        }
        # data_type 1: the result of save settles what the connector waits for
        saved = world.ledger.expect_callback(tenant, "ref-1", 1, "cmd-save")
        await world.client.save(tenant, [order])
        assert await wait_for(lambda: world.ledger.callback_outcome(saved)) == CallbackOutcome(True, None, None)
        # data_type 18: the accountant generates the voucher; reported as the accountant's (origin user)
        await world.ui("POST", f"/sandbox/ui/{tenant}/proposals/ref-1/generate")
        (generated,) = await wait_for(lambda: world.events("sale_order"))
        assert generated["origin"] == "user" and generated["after"]["code"] == "DH0001"
        assert generated["after"]["id"] == "ref-1"
        # data_type 1 again: saving a generated proposal fails with IsCreatedVoucher, the message kept
        refused = world.ledger.expect_callback(tenant, "ref-1", 1, "cmd-save-2")
        await world.client.save(tenant, [{**order, "total_amount": 1}])
        outcome = await wait_for(lambda: world.ledger.callback_outcome(refused))
        assert outcome.success is False and outcome.error_code == "IsCreatedVoucher"
        # data_type 2: the result of delete
        removed = world.ledger.expect_callback(tenant, "ref-unknown", 2, "cmd-delete")
        await world.client.delete(tenant, [{"voucher_type": 20, "org_refid": "ref-unknown"}])
        gone = await wait_for(lambda: world.ledger.callback_outcome(removed))
        assert gone.success is False and gone.error_code == "VoucherNotFound"
        # data_type 22: the accountant enters, edits and deletes a receipt
        entered = await world.ui(
            "POST",
            f"/sandbox/ui/{tenant}/vouchers",
            {"voucher_type": 5, "refno": "PT0001", "sa_order_refid": "ref-1", "total_amount": 20000},
        )
        refid = entered["data"]["refid"]
        await wait_for(lambda: world.events("receipt"))
        await world.ui(
            "POST", f"/sandbox/ui/{tenant}/vouchers", {"voucher_type": 5, "refid": refid, "total_amount": 25000}
        )
        await wait_for(lambda: len(world.events("receipt")) >= 2)
        await world.ui("DELETE", f"/sandbox/ui/{tenant}/vouchers/{refid}")
        receipts = await wait_for(lambda: (lambda found: found if len(found) >= 3 else None)(world.events("receipt")))
        assert world.events("sale_order") == [generated]  # save / delete results are no change events
    assert [e["op"] for e in receipts] == ["c", "u", "d"]
    assert receipts[1]["before"]["amount"] == receipts[0]["after"]["amount"] != receipts[1]["after"]["amount"]
    assert receipts[2]["before"] == receipts[1]["after"] and receipts[2]["after"] is None


def customer_command(tenant: str, code: str, fields: dict[str, Any]) -> Command:
    event_id = uuid.uuid4().hex
    return Command(
        command_id=command_id(
            tenant=tenant, event_id=event_id, rule="CUS-10", target="acct", entity="customer", op="upsert", key=code
        ),
        tenant=tenant,
        target=System.ACCT,
        entity="customer",
        op=Op.UPSERT,
        key=CommandKey(id=None, code=code),
        source=CommandSource(system=System.CRM, entity="customer", id=f"crm-{code}", event_id=event_id),
        fields=fields,
        rule="CUS-10",
        depends_on=[],
        ts_ms=int(time.time() * 1000),
    )


async def test_the_integrations_own_dictionary_writes_come_out_as_sync(module_settings, tmp_path, tenant):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        await world.capture.poll_all()  # an empty company: the snapshot is done
        writer = ActWriter(world.client, LocalWrites(world.ledger))
        await writer.apply(customer_command(tenant, "KH-CRM", {"name": "Từ CRM", "tax_code": "0101"}))
        await world.capture.poll_all()
        await asyncio.sleep(1.1)  # a later second: last_sync_time has whole seconds
        world.person_saves(account_object_code="KH-CRM", tel="0909", state=2)
        await world.capture.poll_all()
        events = world.events("customer")
    assert [(e["op"], e["origin"]) for e in events] == [("c", "sync"), ("u", "user")]
    assert events[1]["before"]["name"] == "Từ CRM" and events[1]["after"]["phone"] == "0909"


async def test_a_restart_in_the_middle_of_a_dictionary_scan_repeats_the_same_event_ids(
    module_settings, tmp_path, tenant
):
    async with acct_world(module_settings, tmp_path, tenant) as world:
        for n in range(5):
            world.person_saves(account_object_code=f"KH{n}", account_object_name=f"Khách {n}", is_customer=True)
        state_path = tmp_path / "restarted.sqlite"

        def capture(crash_after: int | None) -> ActCapture:
            reporter = ChangeReporter(
                System.ACCT,
                CaptureState(state_path),
                world.ledger,
                world.capture.reporter.producer,
                topic_prefix=module_settings.kafka.topic_prefix,
                crash_after=crash_after,
            )
            return ActCapture(world.client, reporter, world.ledger, {tenant: COMPANY}, entities=["customer"])

        crashing = capture(crash_after=3)
        with pytest.raises(CrashForTest):
            await crashing.poll(tenant, "customer")
        crashing.state.close()
        restarted = capture(crash_after=None)
        await restarted.poll(tenant, "customer")
        assert await restarted.poll(tenant, "customer") == 0
        restarted.state.close()
        events = world.events("customer")
    ids = Counter(e["event_id"] for e in events)
    assert len(ids) == 5 and sorted(ids.values()) == [1, 1, 1, 1, 2]  # the one in flight at the crash, again
    assert {e["after"]["code"] for e in events} == {f"KH{n}" for n in range(5)}


async def test_callbacks_refused_at_the_shared_url_are_pulled_with_the_tenants_token(module_settings, tmp_path, tenant):
    """The shared /callback names no company and takes nothing; ACT keeps what it could not deliver,
    and the capture service takes it from get_call_back_detail_error, once, with the tenant's token."""
    async with acct_world(module_settings, tmp_path, tenant) as world:
        world.sandbox.app[CONFIG]["callback_url"] = str(world.receiver.make_url("/callback"))  # no secret
        await world.client.token(tenant)  # connected: ACT's callbacks carry the company code given then
        entered = await world.ui(
            "POST", f"/sandbox/ui/{tenant}/vouchers", {"voucher_type": 5, "refno": "PT0009", "total_amount": 900}
        )
        await wait_for(lambda: world.capture.refused_callbacks >= 3)  # ACT tried, was refused each time
        # ... and gave up: it owes no callback any more (kept for get_call_back_detail_error), so none can come
        await wait_for(lambda: not world.store.queued_callbacks())
        assert world.events("receipt") == []
        await world.capture.poll_all()
        await world.capture.poll_all()  # pulled again: taken once
        (event,) = world.events("receipt")
    assert event["op"] == "c" and event["after"]["id"] == entered["data"]["refid"]
