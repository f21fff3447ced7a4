"""What the reference leaves open about AMIS CRM (amis-apis.md §1.4, §1.5, Part 5), each answer it allows.

The CRM sandbox is switched to each answer (``LIENTHONG_SANDBOX_CRM_ANSWERS``, ``CrmAnswers``) and
the connector's side runs against it: a listing read from page 0 or page 1 gives every record once
(none of the newest skipped, none twice); a POST answered 200 or 201 is applied with the new id; a
deleted record that stays listed with ``is_deleted`` is no record to update (nor to reconcile), and
an upsert of its code creates a new one. ``tests/capture/test_crm_unknowns.py`` runs the capture service's side.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from amis.crm_client import CrmClient, CrmCredentials
from amis.ledger import LocalWrites, WriteLedger
from common.names import System
from connectors.writers import Applied, CrmWriter
from ops.reconcile import read_crm
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import RESOURCES, CrmStore
from sandboxes.settings import CrmAnswers, SandboxSettings
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id

TENANT = "cty-abc"
CUSTOMERS = RESOURCES["Customers"]

# every first-page answer: 0-based; 1-based with page 0 answered as page 1 (the sandbox's default), with
# nothing, or refused
FIRST_PAGES = [
    pytest.param(CrmAnswers(first_page=0), id="first-page-0"),
    pytest.param(CrmAnswers(first_page=1, page_zero="page_one"), id="first-page-1-page-0-is-page-1"),
    pytest.param(CrmAnswers(first_page=1, page_zero="empty"), id="first-page-1-page-0-empty"),
    pytest.param(CrmAnswers(first_page=1, page_zero="refused"), id="first-page-1-page-0-refused"),
]


class Clock:
    def __init__(self) -> None:
        self.now = time.time() - 3600

    def __call__(self) -> float:
        return self.now


@dataclass
class Crm:
    store: CrmStore
    clock: Clock
    client: CrmClient
    writer: CrmWriter
    pages: list[str]  # the page parameter of every listing request, in order
    statuses: list[tuple[str, int]]  # (method, HTTP status) of every answer

    def person_creates(self, n: int) -> int:
        self.clock.now += 1  # one record a second: newest first is a strict order
        return self.store.create(TENANT, CUSTOMERS, {"account_number": f"KH{n:02d}", "account_name": f"K {n}"}, "u")


@pytest.fixture()
async def crm(tmp_path: Path) -> AsyncIterator[Callable]:
    opened: list[tuple[TestServer, CrmStore, WriteLedger]] = []
    session = aiohttp.ClientSession()

    async def start(answers: CrmAnswers) -> Crm:
        clock = Clock()
        store = CrmStore(tmp_path / f"crm-{len(opened)}.sqlite", clock=clock)
        pages: list[str] = []
        statuses: list[tuple[str, int]] = []

        @web.middleware
        async def watch(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.method == "GET" and "page" in request.query:
                pages.append(request.query["page"])
            response = await handler(request)
            statuses.append((request.method, response.status))
            return response

        app = create_crm_sandbox(store, credentials={"app-1": TENANT, "app-1:secret": "s3cret"}, answers=answers)
        app.middlewares.insert(0, watch)
        server = TestServer(app)
        await server.start_server()
        ledger = WriteLedger(tmp_path / f"shared-{len(opened)}.sqlite")
        opened.append((server, store, ledger))
        client = CrmClient(
            str(server.make_url("/api/v2")), session, {TENANT: CrmCredentials("app-1", SecretStr("s3cret"))}
        )
        return Crm(store, clock, client, CrmWriter(client, LocalWrites(ledger)), pages, statuses)

    yield start
    await session.close()
    for server, store, ledger in opened:
        await server.close()
        store.close()
        ledger.close()


def test_the_answers_are_one_setting_whose_default_is_the_sandboxs_old_behaviour(monkeypatch) -> None:
    monkeypatch.delenv("LIENTHONG_SANDBOX_CRM_ANSWERS", raising=False)
    assert SandboxSettings().sandbox_crm_answers == CrmAnswers(
        first_page=1, page_zero="page_one", post_status=200, deleted_rows="dropped"
    )
    monkeypatch.setenv(
        "LIENTHONG_SANDBOX_CRM_ANSWERS", '{"first_page": 0, "post_status": 201, "deleted_rows": "listed"}'
    )
    assert SandboxSettings().sandbox_crm_answers == CrmAnswers(first_page=0, post_status=201, deleted_rows="listed")
    monkeypatch.setenv("LIENTHONG_SANDBOX_CRM_ANSWERS", '{"first_page": 2}')
    with pytest.raises(ValueError, match="first_page"):
        SandboxSettings()


@pytest.mark.parametrize("answers", FIRST_PAGES)
async def test_a_listing_gives_every_record_once_whatever_the_first_page(crm, answers: CrmAnswers) -> None:
    world = await crm(answers)
    ids = [world.person_creates(n) for n in range(7)]
    newest_first = [str(i) for i in reversed(ids)]
    for _listing in range(2):  # the first listing learns the first page, the second uses it
        rows = [r async for r in world.client.every_row(TENANT, "Customers", 3)]
        assert [str(r["id"]) for r in rows] == newest_first
    # once learnt, a listing reads no page twice and no page it does not need: 3 + 3 + 1 records
    second = world.pages[-3:]
    assert second == (["0", "1", "2"] if answers.first_page == 0 else ["1", "2", "3"])


@pytest.mark.parametrize("answers", FIRST_PAGES)
async def test_an_empty_resource_is_an_empty_listing_whatever_the_first_page(crm, answers: CrmAnswers) -> None:
    world = await crm(answers)
    assert [r async for r in world.client.every_row(TENANT, "Customers", 3)] == []


@pytest.mark.parametrize("status", [200, 201])
async def test_a_creation_answered_200_or_201_is_applied_with_the_new_id(crm, status: int) -> None:
    world = await crm(CrmAnswers(post_status=status))
    applied = await world.writer.apply(customer("KH01", {"name": "Công ty A"}))
    (record,) = world.store.by_codes(TENANT, "Customers", ["KH01"])
    assert applied == Applied(str(record["id"]), "KH01")
    assert ("POST", status) in world.statuses  # the answer really was that status


@pytest.mark.parametrize("deleted_rows", ["dropped", "listed"])
async def test_a_deleted_customer_is_created_again_by_an_upsert_of_its_code(crm, deleted_rows: str) -> None:
    world = await crm(CrmAnswers(deleted_rows=deleted_rows))
    first = await world.writer.apply(customer("KH01", {"name": "Công ty A"}))
    assert await world.writer.apply(customer("KH01", {}, Op.DELETE)) == first
    listed = [r async for r in world.client.every_row(TENANT, "Customers")]
    assert [(str(r["id"]), r.get("is_deleted")) for r in listed] == (
        [(first.target_id, True)] if deleted_rows == "listed" else []
    )
    assert await world.writer.apply(customer("KH01", {}, Op.DELETE)) == Applied(None, "KH01")  # already gone
    again = await world.writer.apply(customer("KH01", {"name": "Công ty A lại"}))
    assert again.target_id not in (None, first.target_id)
    live = [r for r in world.store.by_codes(TENANT, "Customers", ["KH01"]) if not r.get("is_deleted")]
    assert [(str(r["id"]), r["account_name"]) for r in live] == [(again.target_id, "Công ty A lại")]
    # what `lienthong reconcile` compares: the live record only, not its deleted namesake
    assert [(s.record["id"], s.record["name"]) for s in await read_crm(world.client, TENANT, "customer")] == [
        (again.target_id, "Công ty A lại")
    ]


def customer(code: str, fields: dict, op: Op = Op.UPSERT) -> Command:
    event_id = uuid.uuid4().hex
    return Command(
        command_id=command_id(
            tenant=TENANT, event_id=event_id, rule="CUS-6", target="crm", entity="customer", op=op.value, key=code
        ),
        tenant=TENANT,
        target=System.CRM,
        entity="customer",
        op=op,
        key=CommandKey(id=None, code=code),
        source=CommandSource(system=System.ACCT, entity="customer", id=f"acct-{code}", event_id=event_id),
        fields=fields,
        rule="CUS-6",
        ts_ms=int(time.time() * 1000),
    )
