"""The connector's ledger wherever it is: the SQLite files on its host (``LocalLedger``) or the capture
service's ledger API (``amis.ledger_http``). One suite runs against both: what a connector notes, awaits
and records reads the same, and capture (which reads the files itself) sees the connector's writes the same.
Then what only the HTTP ledger has: its token, waiting out an outage, a repeated insert inserted once."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from amis.acct_client import Callback
from amis.ledger import CallbackOutcome, CommandLedger, ConnectorLedger, LocalLedger, WriteLedger
from amis.ledger_http import PREFIX, HttpLedger, LedgerRefused, LedgerUnavailable, ledger_app
from common.listeners import app_runner, guard_requests
from common.names import System
from common.settings import InvalidSettings, read_settings
from connectors.command_ledger import Dependencies
from connectors.settings import ConnectorServiceSettings
from streams.core.contract import Command, CommandKey, CommandSource, Op

TOKEN = SecretStr("ledger-token-" + uuid.uuid4().hex)
T = "cty-a"


@dataclass
class Ledgers:
    connector: ConnectorLedger  # what the connector uses
    files: WriteLedger  # what capture reads, on its own host
    commands: CommandLedger  # the command ids, as another replica records them


@pytest.fixture(params=["local", "http"])
async def ledgers(request, tmp_path: Path) -> AsyncIterator[Ledgers]:
    files, commands = WriteLedger(tmp_path / "crm-shared.sqlite"), CommandLedger(tmp_path / "crm-ledger.sqlite")
    if request.param == "local":
        yield Ledgers(LocalLedger(files, commands), files, commands)
        files.close()
        commands.close()
        return
    server = TestServer(guard_requests(ledger_app(files, commands, token=TOKEN, system=System.CRM)))
    await server.start_server()
    client = HttpLedger(str(server.make_url("")), TOKEN, backoff_base=0.01, backoff_cap=0.05)
    try:
        yield Ledgers(client, files, commands)
    finally:
        await client.close()
        await server.close()
        files.close()
        commands.close()


def command(depends_on: list[str]) -> Command:
    return Command(
        command_id=uuid.uuid4().hex,
        tenant=T,
        target=System.ACCT,
        entity="sale_voucher",
        op=Op.UPSERT,
        key=CommandKey(code="BH01"),
        source=CommandSource(system=System.CRM, entity="sale_order", id="1", event_id="e-1"),
        fields={},
        rule="SO-1",
        depends_on=depends_on,
        ts_ms=0,
    )


async def test_a_noted_write_is_how_capture_tells_the_integrations_own_change(ledgers: Ledgers):
    ledger, now_ms = ledgers.connector, int(time.time() * 1000)
    note = await ledger.note_write(System.CRM, T, "customer", record_id=None, code=None, fields={"name": "ABC"})
    await ledger.identify(note, "101")  # found by the id the create was given, alone
    seen = {"id": "101", "name": "ABC"}
    echo = ledgers.files.explaining(System.CRM, T, "customer", None, seen, since_ms=now_ms)
    assert echo is not None and echo.notes == (note,)
    persons = {"id": "101", "name": "Someone else"}
    assert ledgers.files.explaining(System.CRM, T, "customer", seen, persons, since_ms=now_ms) is None


async def test_an_awaited_callback_is_settled_by_its_tenants_result_only(ledgers: Ledgers):
    ledger = ledgers.connector
    awaited = await ledger.expect_callback(T, "ref-1", 1, "cmd-1")
    assert await ledger.callback_outcome(awaited) is None
    assert await ledger.file_callback_result("cty-other", "ref-1", 1, True, None, None) == 0
    assert await ledger.callback_outcome(awaited) is None
    assert await ledger.file_callback_result(T, "ref-1", 1, False, "InvalidParam", "thiếu mã") == 1
    assert await ledger.callback_outcome(awaited) == CallbackOutcome(False, "InvalidParam", "thiếu mã")


async def test_a_pulled_callback_files_the_results_of_saves_and_deletes(ledgers: Ledgers):
    ledger = ledgers.connector
    saved, deleted = (
        await ledger.expect_callback(T, "ref-s", 1, "c-1"),
        await ledger.expect_callback(T, "ref-d", 2, None),
    )

    def callback(data_type: int, items: list[dict]) -> Callback:
        return Callback(True, None, None, "sig", data_type, "[]", items, "0101", "app")

    await ledger.file_results(callback(3, [{"org_refid": "ref-s", "success": False}]), T)  # carries no result
    assert await ledger.callback_outcome(saved) is None
    await ledger.file_results(callback(1, [{"org_refid": "ref-s", "success": True}, {"success": True}]), T)
    await ledger.file_results(callback(2, [{"org_refid": "ref-d", "success": False, "error_code": "X"}]), T)
    assert await ledger.callback_outcome(saved) == CallbackOutcome(True, None, None)
    assert await ledger.callback_outcome(deleted) == CallbackOutcome(False, "X", None)


async def test_a_command_recorded_reads_back_with_how_it_ended(ledgers: Ledgers):
    ledger = ledgers.connector
    assert await ledger.command_state("cmd-1") is None
    await ledger.record_command("cmd-1", "failed", None)
    assert await ledger.command_state("cmd-1") == ("failed", None)
    await ledger.record_command("cmd-1", "applied", "acc-9")  # replayed from dlq.commands, applied this time
    assert await ledger.command_state("cmd-1") == ("applied", "acc-9")
    assert ledgers.commands.get("cmd-1") == ("applied", "acc-9")  # where capture keeps them, for every replica


async def test_a_dependency_applied_by_another_replica_is_seen_well_before_the_timeout(ledgers: Ledgers):
    ledger, reads = ledgers.connector, []
    state_of = ledger.command_state

    async def read(command_id: str) -> tuple[str, str | None] | None:
        state = await state_of(command_id)
        reads.append(state)
        return state

    ledger.command_state = read  # type: ignore[method-assign]
    dependencies = Dependencies(ledger, timeout=30, stopping=asyncio.Event())
    waiting = asyncio.create_task(dependencies.problem(command(["cmd-other"])))
    await wait_for(lambda: reads == [None])  # the waiter has read the state: not applied yet
    assert not waiting.done()
    started = time.monotonic()
    ledgers.commands.record("cmd-other", "applied", "x")  # another replica: no ``recorded()`` wakes this one
    assert await asyncio.wait_for(waiting, 5) is None
    assert time.monotonic() - started < 2


async def test_a_dependency_another_replica_failed_fails_the_command(ledgers: Ledgers):
    ledgers.commands.record("cmd-other", "rejected", None)
    problem = await Dependencies(ledgers.connector, timeout=30, stopping=asyncio.Event()).problem(
        command(["cmd-other"])
    )
    assert problem is not None and "was rejected" in problem


# --- the HTTP ledger alone -----------------------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[TestServer, WriteLedger, CommandLedger]]:
    files, commands = WriteLedger(tmp_path / "acct-shared.sqlite"), CommandLedger(tmp_path / "acct-ledger.sqlite")
    server = TestServer(guard_requests(ledger_app(files, commands, token=TOKEN, system=System.ACCT)))
    await server.start_server()
    yield server, files, commands
    await server.close()
    files.close()
    commands.close()


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def test_a_wrong_token_is_refused_and_the_connector_waits_saying_why(served):
    server, _files, commands = served
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.make_url(f"{PREFIX}/commands"),
            json={"command_id": "c", "status": "applied"},
            headers={"Authorization": "Bearer wrong"},
        ) as response,
    ):
        assert response.status == 401
        assert "LIENTHONG_LEDGER_TOKEN" in (await response.json())["error"]
    assert commands.get("c") is None
    stopping = asyncio.Event()
    client = HttpLedger(str(server.make_url("")), SecretStr("wrong"), stopping=stopping, backoff_base=0.01)
    try:
        problem = await client.problem()
        assert problem is not None and "LIENTHONG_LEDGER_URL" in problem and "401" in problem
        assert "\n" not in problem
        recording = asyncio.create_task(client.record_command("c", "applied", None))
        await wait_for(lambda: client.last_problem is not None)
        assert not recording.done()  # waits, does not fail the command
        stopping.set()  # a stopping connector gives up: the command is left for the next run
        with pytest.raises(LedgerUnavailable):
            await asyncio.wait_for(recording, 5)
    finally:
        await client.close()
    assert commands.get("c") is None


async def test_a_capture_service_without_a_token_serves_nothing(tmp_path: Path):
    files, commands = WriteLedger(tmp_path / "s.sqlite"), CommandLedger(tmp_path / "c.sqlite")
    server = TestServer(guard_requests(ledger_app(files, commands, token=None, system=System.CRM)))
    await server.start_server()
    try:
        headers = {"Authorization": "Bearer "}
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url(f"{PREFIX}/ping"), headers=headers) as r,
        ):
            assert r.status == 401 and "set LIENTHONG_LEDGER_TOKEN" in (await r.json())["error"]
    finally:
        await server.close()
        files.close()
        commands.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_while_capture_is_down_the_connector_waits_and_goes_on_when_it_is_back(tmp_path: Path):
    port = free_port()
    client = HttpLedger(f"http://127.0.0.1:{port}", TOKEN, backoff_base=0.01, backoff_cap=0.05)
    files, commands = WriteLedger(tmp_path / "s.sqlite"), CommandLedger(tmp_path / "c.sqlite")
    runner: web.AppRunner | None = None
    try:
        assert "cannot be used" in (await client.problem() or "")
        recording = asyncio.create_task(client.record_command("cmd-1", "applied", "id-1"))
        await wait_for(lambda: client.last_problem is not None)
        assert not recording.done()
        runner = app_runner(ledger_app(files, commands, token=TOKEN, system=System.CRM))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.wait_for(recording, 10)
        assert commands.get("cmd-1") == ("applied", "id-1")
        assert client.last_problem is None and await client.problem() is None
    finally:
        await client.close()
        if runner is not None:
            await runner.cleanup()
        files.close()
        commands.close()


async def test_an_insert_repeated_after_its_answer_was_lost_is_inserted_once(served):
    server, files, _commands = served
    body = {"system": "acct", "tenant": T, "entity": "customer", "record_id": "r-1", "code": "KH1", "fields": {"a": 1}}
    headers = {"Authorization": f"Bearer {TOKEN.get_secret_value()}", "Idempotency-Key": "k-1"}
    async with aiohttp.ClientSession() as session:
        notes = []
        for _ in range(2):
            async with session.post(server.make_url(f"{PREFIX}/writes"), json=body, headers=headers) as response:
                notes.append((await response.json())["note"])
    assert notes[0] == notes[1]
    assert [seq for seq, _ in files.writes_since(System.ACCT, T, "customer", "r-1", "KH1", 0)] == [notes[0]]


async def test_a_malformed_request_is_refused_not_retried(served):
    server, _files, _commands = served
    client = HttpLedger(str(server.make_url("")), TOKEN)
    try:
        with pytest.raises(LedgerRefused, match="LIENTHONG_LEDGER_URL"):
            await client.record_command("cmd-1", "half-done", None)
    finally:
        await client.close()


def test_a_ledger_url_without_its_token_is_one_line_naming_both(monkeypatch):
    monkeypatch.setenv("LIENTHONG_LEDGER_URL", "http://capture-crm:8097")
    monkeypatch.delenv("LIENTHONG_LEDGER_TOKEN", raising=False)
    with pytest.raises(InvalidSettings) as raised:
        read_settings(ConnectorServiceSettings)
    assert "LIENTHONG_LEDGER_URL" in str(raised.value) and "LIENTHONG_LEDGER_TOKEN" in str(raised.value)
    monkeypatch.setenv("LIENTHONG_LEDGER_TOKEN", TOKEN.get_secret_value())
    assert read_settings(ConnectorServiceSettings).ledger_url == "http://capture-crm:8097"


async def test_the_token_is_in_no_log_line(served, caplog):
    server, _files, _commands = served
    caplog.set_level(logging.DEBUG)
    wrong, stopping = SecretStr("wrong-" + uuid.uuid4().hex), asyncio.Event()
    client, refused = (HttpLedger(str(server.make_url("")), t, stopping=stopping) for t in (TOKEN, wrong))
    try:
        await client.record_command("c", "applied", None)
        assert "401" in (await refused.problem() or "")
    finally:
        await client.close()
        await refused.close()
    stopping.set()
    gone = HttpLedger(f"http://127.0.0.1:{free_port()}", TOKEN, stopping=stopping)
    with pytest.raises(LedgerUnavailable) as raised:
        await gone.command_state("c")
    await gone.close()
    said = caplog.text + str(raised.value)
    assert "cannot be used" in said  # the outage was logged ...
    assert TOKEN.get_secret_value() not in said and wrong.get_secret_value() not in said  # ... not the tokens


async def test_a_connector_pointed_at_the_other_systems_ledger_waits_saying_so(served):
    server, _files, commands = served  # the accounting capture's ledger
    stopping = asyncio.Event()
    client = HttpLedger(str(server.make_url("")), TOKEN, system=System.CRM, stopping=stopping, backoff_base=0.01)
    try:
        problem = await client.problem()
        assert problem is not None and "acct ledger, not the crm one" in problem and "LIENTHONG_LEDGER_URL" in problem
        stopping.set()
        with pytest.raises(LedgerUnavailable):
            await client.record_command("c", "applied", None)
    finally:
        await client.close()
    assert commands.get("c") is None
