"""Connectors on the real broker against the sandboxes speaking the public AMIS APIs.

Applied once, retried through faults, ordered per key, refused with the system's message; an
accounting proposal is applied only when ACT's signed callback says so (received by the accounting
capture service and filed in the shared ledger), a lost callback is pulled back from
get_call_back_detail_error, and a proposal the accountant has generated refuses updates
(IsCreatedVoucher -> rejected).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmCredentials
from amis.errors import Transient
from amis.ledger import WriteLedger
from capture.acct import ActCapture
from capture.state import CaptureState, ChangeReporter, new_producer
from common.kafka_config import confluent_config
from common.names import System, commands_topic
from common.topic_wait import watermarks
from connectors.runner import Connector, ConnectorSettings
from connectors.writers import NAMESPACE
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.admin import ADMIN_TOKEN
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from sandboxes.faults import FaultConfig
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id, dumps

pytestmark = pytest.mark.broker

APP_ID = "app-lienthong"


def command(
    tenant: str,
    entity: str,
    code: str,
    fields: dict,
    *,
    op: Op = Op.UPSERT,
    rule: str = "CUS-10",
    depends_on: list[str] | None = None,
    target: System = System.ACCT,
    key_id: str | None = None,
) -> Command:
    event_id = uuid.uuid4().hex
    return Command(
        command_id=command_id(
            tenant=tenant, event_id=event_id, rule=rule, target=target.value, entity=entity, op=op.value, key=code
        ),
        tenant=tenant,
        target=target,
        entity=entity,
        op=op,
        key=CommandKey(id=key_id, code=code),
        source=CommandSource(system=System.CRM, entity=entity, id=f"crm-{code}", event_id=event_id),
        fields=fields,
        rule=rule,
        depends_on=depends_on or [],
        ts_ms=int(time.time() * 1000),
    )


@contextlib.asynccontextmanager
async def accounting(module_settings, tmp_path, tenant, *, faults=None, processing_delay_s=0.02):
    """The accounting sandbox, the capture service's callback receiver (filing results in the shared
    ledger), and the settings of a connector that shares that ledger."""
    shared = tmp_path / f"shared-{uuid.uuid4().hex[:6]}.sqlite"
    ledger = WriteLedger(shared)
    state = CaptureState(tmp_path / f"capture-{uuid.uuid4().hex[:6]}.sqlite")
    creds = {tenant: ActCredentials(SecretStr("acc3ss"), "0101")}
    receiver_capture = ActCapture(
        ActClient("http://unused", None, APP_ID, creds),  # type: ignore[arg-type]  # the receiver makes no calls
        ChangeReporter(
            System.ACCT,
            state,
            ledger,
            new_producer(confluent_config(module_settings.kafka)),
            topic_prefix=module_settings.kafka.topic_prefix,
        ),
        ledger,
        {tenant: "0101"},
        callback_secrets={tenant: SecretStr(uuid.uuid4().hex)},
    )
    receiver = TestServer(receiver_capture.callback_app())
    await receiver.start_server()
    store = ActStore(tmp_path / f"acct-{uuid.uuid4().hex[:6]}.sqlite")
    server = TestServer(
        create_acct_sandbox(
            store,
            app_id=APP_ID,
            credentials={f"{APP_ID}:acc3ss": tenant},
            callback_url=str(receiver.make_url(str(receiver_capture.callback_path(tenant)))),
            faults=faults,
            processing_delay_s=processing_delay_s,
        )
    )
    await server.start_server()
    settings = {
        "system": System.ACCT,
        "base_url": str(server.make_url("")).rstrip("/"),
        "acct_app_id": APP_ID,
        "acct_credentials": creds,
        "shared_ledger_path": shared,
        "kafka": confluent_config(module_settings.kafka),
        "topic_prefix": module_settings.kafka.topic_prefix,
        "group_id": f"{module_settings.kafka.topic_prefix}conn-{uuid.uuid4().hex[:6]}",
        "ledger_path": tmp_path / f"ledger-{uuid.uuid4().hex[:6]}.sqlite",
        "backoff_base": 0.02,
        "backoff_cap": 0.3,
        "request_timeout": 2.0,
    }
    try:
        yield store, server, settings
    finally:
        await server.close()
        await receiver.close()
        store.close()
        state.close()
        ledger.close()


async def run_connector(settings: dict, *, until=None, timeout=60.0, **overrides) -> Connector:
    """Run a connector until ``until()`` holds (when given) and it has then committed every command
    already on its topic (it commits a command's offset once its result is on the broker), then stop it."""
    connector = Connector(ConnectorSettings(**{**settings, **overrides}))
    task = asyncio.create_task(connector.run())
    try:
        deadline = time.monotonic() + timeout
        while until is not None and not until():
            assert time.monotonic() < deadline, f"the connector did not get there within {timeout}s"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(wait_until_committed, settings, deadline)
    finally:
        connector.stop()
        await asyncio.wait_for(task, 30)
    return connector


def wait_until_committed(settings: dict, deadline: float) -> None:
    """Until the connector's group has committed offsets up to the end its commands topic has now."""
    consumer = Consumer({**settings["kafka"], "group.id": settings["group_id"], "enable.auto.commit": False})
    try:
        topic = settings["topic_prefix"] + commands_topic(settings["system"])
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = [TopicPartition(topic, p) for p in metadata.partitions]
        ends = {tp.partition: watermarks(consumer, tp, 10)[1] for tp in partitions}
        while True:
            committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
            behind = {p: (committed[p], end) for p, end in ends.items() if end > 0 and committed[p] < end}
            if not behind:
                return
            assert time.monotonic() < deadline, f"the connector has not committed {topic} to its end: {behind}"
            time.sleep(0.1)
    finally:
        consumer.close()


def results_for(kafka, tenant, count, topic="results.acct"):
    return [
        m["value"]
        for m in kafka.read(
            [topic], until=lambda ms: len([m for m in ms if m["key"] and m["key"].startswith(tenant)]) >= count
        )
        if m["key"] and m["key"].startswith(tenant)
    ]


def created(store: ActStore, tenant: str) -> list[str]:
    return [e["code"] for e in store.journal(tenant) if e["op"] == "create"]


def customer(store: ActStore, tenant: str, code: str) -> dict | None:
    return store.dictionary_record(tenant, 1, code=code)


async def test_commands_are_applied_once_and_repeats_are_duplicates(kafka, module_settings, tmp_path, tenant):
    first = command(tenant, "customer", "KH0001", {"name": "Công ty ABC", "tax_code": "0101"})
    second = command(tenant, "product", "SP01", {"name": "Bút", "unit": "cái"}, rule="PRD-1")
    for c in (first, second, first):  # the first one delivered twice
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    async with accounting(module_settings, tmp_path, tenant) as (store, _server, settings):
        await run_connector(settings, until=lambda: store.dictionary_record(tenant, 2, code="SP01") is not None)
        results = results_for(kafka, tenant, 3)
        assert sorted(r["status"] for r in results) == ["applied", "applied", "duplicate"]
        applied = {r["command_id"]: r for r in results if r["status"] == "applied"}
        record = customer(store, tenant, "KH0001")
        assert applied[first.command_id]["target_id"] == record["account_object_id"]
        assert record["account_object_name"] == "Công ty ABC" and record["company_tax_code"] == "0101"
        assert record["is_customer"] is True
        assert sorted(created(store, tenant)) == ["KH0001", "SP01"]  # each written once


async def test_faults_are_retried_until_every_record_is_written_exactly_once(kafka, module_settings, tmp_path, tenant):
    commands = [command(tenant, "customer", f"KH{n:03d}", {"name": f"Khách {n}"}) for n in range(30)]
    for c in commands:
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    faults = FaultConfig(
        error_rate=0.2, throttle_rate=0.1, retry_after_s=0.05, timeout_rate=0.03, timeout_s=3.0, seed=7
    )
    async with accounting(module_settings, tmp_path, tenant, faults=faults) as (store, _server, settings):
        connector = await run_connector(settings, until=lambda: len(created(store, tenant)) >= 30)
        results = results_for(kafka, tenant, 30)
        not_applied = [(r["status"], r["attempts"], r["error"]) for r in results if r["status"] != "applied"]
        assert not_applied == [] and len(results) == 30, (not_applied, dict(connector.stats), faults.counts)
        assert faults.counts.get("error", 0) + faults.counts.get("throttle", 0) > 0
        assert max(r["attempts"] for r in results) > 1
        assert sorted(created(store, tenant)) == [f"KH{n:03d}" for n in range(30)]  # each written once


async def test_a_refused_command_is_rejected_with_the_systems_message_and_dead_lettered(
    kafka, module_settings, tmp_path, tenant
):
    refused = command(tenant, "customer", "KH404", {"name": "x"}, op=Op.UPDATE, rule="CUS-3")  # nothing to update
    kafka.produce("commands.acct", dumps(refused), key=refused.message_key)
    async with accounting(module_settings, tmp_path, tenant) as (_store, _server, settings):
        await run_connector(settings)
    (result,) = results_for(kafka, tenant, 1)
    assert result["status"] == "rejected" and result["error"]["kind"] == "http_400"
    assert "InvalidParam" in result["error"]["message"] and "không tồn tại" in result["error"]["message"]
    letters = kafka.read(["dlq.commands"], until=lambda ms: any(m["key"] == refused.message_key for m in ms))
    (letter,) = [m for m in letters if m["key"] == refused.message_key]
    assert letter["value"]["command_id"] == refused.command_id
    assert letter["headers"]["error.kind"] == "http_400"
    assert letter["headers"]["origin.topic"] == kafka.name("commands.acct")


async def test_a_proposal_is_applied_when_its_callback_says_so_and_refused_once_generated(
    kafka, module_settings, tmp_path, tenant
):
    setup = [
        command(tenant, "customer", "KH777", {"name": "Khách"}),
        command(tenant, "product", "SP7", {"name": "Bút"}, rule="PRD-1"),
    ]
    lines = [{"line_id": "L1", "product_code": "SP7", "quantity": 2, "unit_price": "50", "amount": "100"}]
    order = command(
        tenant,
        "sale_order",
        "DH777",
        {"customer_code": "KH777", "total_amount": "100", "revenue_status": "proposed", "crm_id": "42", "lines": lines},
        rule="SO-4",
        depends_on=[c.command_id for c in setup],
    )
    kafka.produce("commands.acct", dumps(order), key=order.message_key)  # the order first ...
    for c in setup:  # ... what it names later: it waits for them
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    org_refid = str(uuid.uuid5(NAMESPACE, f"{tenant}:sale_order:DH777"))
    async with accounting(module_settings, tmp_path, tenant, processing_delay_s=1.0) as (store, server, settings):
        connector = Connector(ConnectorSettings(**settings))
        task = asyncio.create_task(connector.run())
        try:
            deadline = time.monotonic() + 30
            while store.proposal(tenant, org_refid) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert store.proposal(tenant, org_refid) is not None
            (result,) = [
                r for r in await asyncio.to_thread(results_for, kafka, tenant, 3) if r["command_id"] == order.command_id
            ]
            assert result["status"] == "applied" and result["target_id"] == org_refid and result["code"] == "DH777"
            proposal = store.proposal(tenant, org_refid)[0]
            assert proposal["voucher_type"] == 20 and proposal["crm_id"] == "42" and proposal["is_get_new_id"] is False
            assert proposal["detail"][0]["ref_detail_id"] == "L1" and proposal["total_amount"] == 100

            # an update of the same order (the processor now knows the link): the same proposal, updated
            update = command(
                tenant, "sale_order", "DH777", {"total_amount": "120"}, op=Op.UPDATE, rule="SO-2", key_id=org_refid
            )
            kafka.produce("commands.acct", dumps(update), key=update.message_key)
            (updated,) = [
                r
                for r in await asyncio.to_thread(results_for, kafka, tenant, 4)
                if r["command_id"] == update.command_id
            ]
            assert updated["status"] == "applied" and len(store.proposals(tenant)) == 1
            assert store.proposal(tenant, org_refid)[0]["total_amount"] == 120

            # the accountant generates the voucher: the proposal can no longer change
            async with aiohttp.ClientSession() as session:
                generated = await session.post(
                    server.make_url(f"/sandbox/ui/{tenant}/proposals/{org_refid}/generate"),
                    headers={"Authorization": f"Bearer {server.app[ADMIN_TOKEN]}"},  # the sandbox's own, random
                )
                assert generated.status == 200
            late = command(
                tenant, "sale_order", "DH777", {"total_amount": "999"}, op=Op.UPDATE, rule="SO-2", key_id=org_refid
            )
            kafka.produce("commands.acct", dumps(late), key=late.message_key)
            (refused,) = [
                r for r in await asyncio.to_thread(results_for, kafka, tenant, 5) if r["command_id"] == late.command_id
            ]
            assert refused["status"] == "rejected" and refused["error"]["kind"] == "http_409"
            assert "IsCreatedVoucher" in refused["error"]["message"]
            assert "Đã sinh chứng từ kế toán" in refused["error"]["message"]
        finally:
            connector.stop()
            await asyncio.wait_for(task, 30)


def order_after_its_customer(kafka, tenant: str, n: str, *, rule: str) -> Command:
    """Customer ``KH<n>`` and order ``DH<n>`` (which depends on it) on ``commands.acct``; returns the order."""
    setup = command(tenant, "customer", f"KH{n}", {"name": "Khách"})
    order = command(
        tenant,
        "sale_order",
        f"DH{n}",
        {"customer_code": f"KH{n}", "total_amount": "5"},
        rule=rule,
        depends_on=[setup.command_id],
    )
    for c in (setup, order):
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    return order


async def test_a_proposal_stays_pending_until_its_result_is_known_and_a_lost_callback_is_pulled_back(
    kafka, module_settings, tmp_path, tenant
):
    order = order_after_its_customer(kafka, tenant, "1", rule="SO-4")
    faults = FaultConfig(callback_drop_rate=1.0, seed=3)  # ACT never reaches the callback URL
    async with accounting(module_settings, tmp_path, tenant, faults=faults) as (store, _server, settings):
        connector = Connector(ConnectorSettings(**settings, callback_timeout=2.0))
        task = asyncio.create_task(connector.run())
        try:
            deadline = time.monotonic() + 20
            while not store.proposals(tenant) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            saved_at = time.monotonic()
            (result,) = [
                r for r in await asyncio.to_thread(results_for, kafka, tenant, 2) if r["command_id"] == order.command_id
            ]
            waited = time.monotonic() - saved_at
        finally:
            connector.stop()
            await asyncio.wait_for(task, 30)
        # saved at once, reported only once the result was found among the undelivered callbacks
        assert result["status"] == "applied" and waited >= 1.5, waited
        assert connector.stats["callbacks_recovered"] == 1 and faults.counts["callback_drop"] >= 1


async def test_a_proposal_generated_while_its_lost_result_could_not_be_pulled_is_applied_not_saved_again(
    kafka, module_settings, tmp_path, tenant
):
    """ACT takes the order's proposal; its callback is lost; the first pull of undelivered callbacks
    fails (503), and meanwhile the accountant generates the voucher. Saved again, the proposal would
    be refused (IsCreatedVoucher) and the order dead-lettered: the connector looks for the result
    again instead, finds it, and reports the order applied."""
    order = order_after_its_customer(kafka, tenant, "2", rule="SO-1")
    org_refid = str(uuid.uuid5(NAMESPACE, f"{tenant}:sale_order:DH2"))
    faults = FaultConfig(callback_drop_rate=1.0, seed=3)  # ACT does not reach the callback URL at first
    async with accounting(module_settings, tmp_path, tenant, faults=faults) as (store, server, settings):
        connector = Connector(ConnectorSettings(**settings, callback_timeout=1.0))
        task = asyncio.create_task(connector.run())
        try:
            while connector.writer is None:
                await asyncio.sleep(0.01)
            client = connector.writer.client
            pull = client.undelivered
            pulls = 0

            async def accountant_generates_during_a_failed_first_pull(*args, **kwargs):
                nonlocal pulls
                pulls += 1
                if pulls == 1:
                    faults.callback_drop_rate = 0.0  # ACT reaches the callback URL again from now on
                    async with aiohttp.ClientSession() as session:
                        generated = await session.post(
                            server.make_url(f"/sandbox/ui/{tenant}/proposals/{org_refid}/generate"),
                            headers={"Authorization": f"Bearer {server.app[ADMIN_TOKEN]}"},
                        )
                        assert generated.status == 200
                    raise Transient("ACT get_call_back_detail_error: HTTP 503")
                return await pull(*args, **kwargs)

            client.undelivered = accountant_generates_during_a_failed_first_pull
            (result,) = [
                r for r in await asyncio.to_thread(results_for, kafka, tenant, 2) if r["command_id"] == order.command_id
            ]
        finally:
            connector.stop()
            await asyncio.wait_for(task, 30)
        journal = [e["op"] for e in store.journal(tenant) if e["code"] == "DH2"]
    assert result["status"] == "applied" and result["target_id"] == org_refid, result
    assert pulls == 2 and connector.stats["callbacks_recovered"] == 1
    assert journal == ["create", "generate"]  # saved once


async def test_sigterm_finishes_in_flight_commands_and_loses_none(kafka, module_settings, tmp_path, tenant):
    """A connector process stopped with SIGTERM while writes are in flight reports them and commits;
    a new process takes the rest. Every record is written once and every command has one result."""
    import os
    import signal
    import sys

    # more than one call's worth (save_dictionary takes 200): the stop lands between calls
    commands = [command(tenant, "customer", f"KH{n:03d}", {"name": f"Khách {n}"}) for n in range(800)]
    for c in commands:
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    async with accounting(module_settings, tmp_path, tenant, faults=FaultConfig(latency_ms=150)) as (
        store,
        _s,
        settings,
    ):
        env = {
            **os.environ,
            "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
            "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
            "LIENTHONG_DATA_DIR": str(tmp_path / "conn"),
            "LIENTHONG_ACCT_URL": settings["base_url"],
            "LIENTHONG_ACCT_APP_ID": APP_ID,
            "LIENTHONG_CONNECTOR_CONCURRENCY": "4",
            "LIENTHONG_ACCT_CREDENTIALS": orjson.dumps(
                {tenant: {"access_code": "acc3ss", "org_company_code": "0101"}}
            ).decode(),
        }

        async def start():
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "cli",
                "connector",
                "acct",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

        def written():
            return len(created(store, tenant))

        first = await start()
        deadline = time.monotonic() + 60
        while written() < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 60) == 0
        at_stop = written()
        assert 5 <= at_stop < len(commands), "stopped before or after the work: nothing was tested"
        second = await start()
        deadline = time.monotonic() + 60
        while written() < len(commands) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # every command has its result (a connector reports one only once it is done with it): nothing is
        # left that could still write; the sandbox serves from this loop, hence the thread
        wanted = {c.command_id for c in commands}

        def answered(ms: list[dict]) -> bool:
            return wanted <= {m["value"]["command_id"] for m in ms if m["key"] and m["key"].startswith(tenant)}

        await asyncio.to_thread(kafka.read, ["results.acct"], until=answered, timeout=60)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 60) == 0
        assert sorted(created(store, tenant)) == [f"KH{n:03d}" for n in range(800)]  # each once
    messages = kafka.read(
        ["results.acct"],
        until=lambda ms: wanted <= {m["value"]["command_id"] for m in ms if m["key"] and m["key"].startswith(tenant)},
    )
    by_command: dict[str, list[str]] = {}
    for m in messages:
        if m["key"] and m["key"].startswith(tenant):
            by_command.setdefault(m["value"]["command_id"], []).append(m["value"]["status"])
    assert set(by_command) == wanted
    # applied once each; a command the second run took again (its offset was not yet committed)
    # is reported as a duplicate, never applied twice
    assert all(statuses[0] == "applied" and set(statuses[1:]) <= {"duplicate"} for statuses in by_command.values()), (
        by_command
    )


async def test_one_key_in_order_many_keys_in_parallel_under_the_tenant_cap(kafka, module_settings, tmp_path, tenant):
    """Three edits of one customer land in order; ten customers go four at a time (concurrency 4)."""
    edits = [command(tenant, "customer", "KH-ONE", {"name": f"version {n}"}) for n in range(3)]
    others = [command(tenant, "customer", f"KH-P{n}", {"name": "x"}) for n in range(10)]
    for c in [*edits, *others]:
        kafka.produce("commands.acct", dumps(c), key=c.message_key)
    # dropped connections, but no timeouts here: a request the client gave up on still counts as in
    # flight on the server, which would blur the cap this test measures
    faults = FaultConfig(latency_ms=100, drop_rate=0.05, seed=3)
    started = time.monotonic()
    async with accounting(module_settings, tmp_path, tenant, faults=faults) as (store, _server, settings):
        await run_connector(
            settings,
            concurrency=4,
            batch_linger=0,  # one command a call: the cap is what this measures (batches: the next test)
            until=lambda: (
                len(created(store, tenant)) >= 11
                and (customer(store, tenant, "KH-ONE") or {}).get("account_object_name") == "version 2"
            ),
        )
        assert customer(store, tenant, "KH-ONE")["account_object_name"] == "version 2"
        one = [e["op"] for e in store.journal(tenant) if e["code"] == "KH-ONE"]
        assert one == ["create", "update", "update"]  # in the order of the commands, the first one creating
    assert faults.max_in_flight <= 4  # never more than the tenant's cap at once
    assert faults.max_in_flight > 1  # but different keys did run side by side
    assert time.monotonic() - started < 60


async def test_the_crm_connector_upserts_by_code_and_reports_crms_refusals(kafka, module_settings, tmp_path, tenant):
    store = CrmStore(tmp_path / "crm.sqlite")
    server = TestServer(create_crm_sandbox(store, credentials={"app-crm": tenant, "app-crm:secret": "s3"}))
    await server.start_server()
    create = command(
        tenant, "customer", "KH1", {"name": "Công ty A", "tax_code": "01"}, target=System.CRM, rule="CUS-6"
    )
    again = command(tenant, "customer", "KH1", {"name": "Công ty A mới"}, target=System.CRM, rule="CUS-8")
    missing = command(tenant, "customer", "KH9", {"name": "x"}, op=Op.UPDATE, target=System.CRM, rule="CUS-8")
    unsayable = command(
        tenant,
        "sale_order",
        "DH1",
        {"revenue_status": "approved"},
        op=Op.UPDATE,
        target=System.CRM,
        rule="SO-8",
        key_id="1",
    )
    for c in (create, again, missing, unsayable):
        kafka.produce("commands.crm", dumps(c), key=c.message_key)
    settings = {
        "system": System.CRM,
        "base_url": str(server.make_url("/api/v2")),
        "crm_credentials": {tenant: CrmCredentials("app-crm", SecretStr("s3"))},
        "shared_ledger_path": tmp_path / "crm-shared.sqlite",
        "kafka": confluent_config(module_settings.kafka),
        "topic_prefix": module_settings.kafka.topic_prefix,
        "group_id": f"{module_settings.kafka.topic_prefix}conn-{uuid.uuid4().hex[:6]}",
        "ledger_path": tmp_path / "crm-ledger.sqlite",
    }
    try:
        await run_connector(settings, until=lambda: len(store.journal(tenant)) >= 2, timeout=20)
        results = {r["command_id"]: r for r in results_for(kafka, tenant, 4, topic="results.crm")}
    finally:
        await server.close()
    record = store.by_code(tenant, "Customers", "KH1")
    assert results[create.command_id]["status"] == "applied" and results[create.command_id]["target_id"] == str(
        record["id"]
    )
    assert results[again.command_id]["target_id"] == str(record["id"])
    assert record["account_name"] == "Công ty A mới" and record["tax_code"] == "01"  # PUT changed only the name
    assert [e["op"] for e in store.journal(tenant)] == ["create", "update"]
    assert (
        results[missing.command_id]["status"] == "rejected"
        and results[missing.command_id]["error"]["kind"] == "http_404"
    )
    bad = results[unsayable.command_id]
    assert (
        bad["status"] == "rejected"
        and "not sent" in bad["error"]["message"]
        and "'approved'" in bad["error"]["message"]
    )
    ledger = WriteLedger(tmp_path / "crm-shared.sqlite")
    try:  # what capture will read to tell these writes from a person's
        _note, fields = ledger.writes_since("crm", tenant, "customer", str(record["id"]), "KH1", 0)[-1]
        assert fields["name"] == "Công ty A mới"
    finally:
        ledger.close()
    store.close()
