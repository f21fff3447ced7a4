"""Connectors scaled out (docs/deploy.md, "Connectors scale out"): two ``lienthong connector <system>``
processes in one consumer group, whose ledger is the ``lienthong capture <system>`` service's (its
ledger API, ``LIENTHONG_LEDGER_URL``), against the sandboxes, on the real broker.

CRM: commands of several tenants are split between the replicas by partition; each is applied once
and none is lost; a repeat is answered ``duplicate``; a command whose ``depends_on`` is on a partition
of the other replica goes once that one is applied; and capture, polling CRM, tells every write of
either replica for the integration's own (X-1: ``origin = sync``). Accounting: a proposal saved by one
replica is applied when ACT's callback, received by capture, is in capture's ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from common.kafka_config import confluent_config
from common.names import System
from connectors.runner import group_id
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from streams.core.contract import Command, dumps
from tests.integration.conftest import REPO_ROOT, stop_process
from tests.integration.test_connector import command
from tests.integration.test_health import free_port

pytestmark = pytest.mark.broker

TENANTS = 3
CUSTOMERS = 12  # per tenant
RETRIED = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.GROUP_ID_NOT_FOUND)


class Sandbox:
    """A sandbox served from a thread of its own (the services are other processes)."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.port = free_port()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10), "the sandbox did not start"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Service:
    """A ``lienthong`` service subprocess running this checkout's code, its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - open as long as the service runs; closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        code = stop_process(self.process)
        self.log.close()
        return code


def wait(condition, what: str, services: list[Service], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for service in services:
            assert service.process.poll() is None, f"{service.log_path.name} exited:\n{service.tail()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout}s:\n" + "\n\n".join(s.tail() for s in services)
        time.sleep(0.1)


def ledger_answers(url: str, token: str) -> bool:
    request = urllib.request.Request(url + "/ledger/v1/ping", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ready(port: int) -> dict[str, str] | None:
    """What a connector's /readyz says is not ready ({} when ready); None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return {} if response.status == 200 else None
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read()).get("not_ready", {})
    except (urllib.error.URLError, OSError):
        return None


def assignments(admin: AdminClient, group: str) -> list[set[int]]:
    """The partitions each member of ``group`` owns, once the group is stable (else [])."""
    (described,) = admin.describe_consumer_groups([group]).values()
    try:
        result = described.result(10)
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() in RETRIED:
            return []  # the group's coordinator is not there yet: asked again
        raise
    if result.state != ConsumerGroupState.STABLE:
        return []
    return [{tp.partition for tp in member.assignment.topic_partitions} for member in result.members]


def start_replicas(system: str, env: dict[str, str], tmp_path: Path) -> tuple[list[Service], list[int]]:
    """Two ``lienthong connector <system>`` of one group on the capture service's ledger API (in ``env``),
    and the ports of their probes."""
    probes = [free_port() for _ in range(2)]
    replicas = [
        Service(
            ["connector", system],
            {
                **env,
                "LIENTHONG_DATA_DIR": str(tmp_path / f"{system}-connector-{n}"),
                f"LIENTHONG_{system.upper()}_CONNECTOR_PORT": str(probes[n]),
            },
            tmp_path / f"{system}-connector-{n}.log",
        )
        for n in range(2)
    ]
    return replicas, probes


def partitions_of_each(kafka_settings, group: str, services: list[Service]) -> tuple[set[int], set[int]]:
    """The partitions each of the two replicas owns, once both own some."""
    admin = AdminClient(confluent_config(kafka_settings))
    wait(lambda: len([p for p in assignments(admin, group) if p]) == 2, "both replicas owning partitions", services)
    first, second = assignments(admin, group)
    return first, second


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[tuple[CrmStore, Sandbox, dict[str, dict[str, str]]]]:
    store = CrmStore(tmp_path / "crm.sqlite")
    logins = {
        f"cty-{uuid.uuid4().hex[:6]}": {"client_id": f"app-{n}", "client_secret": f"s-{n}"} for n in range(TENANTS)
    }
    credentials: dict[str, str] = {}
    for tenant, login in logins.items():
        credentials.update({login["client_id"]: tenant, f"{login['client_id']}:secret": login["client_secret"]})
    sandbox = Sandbox(create_crm_sandbox(store, credentials=credentials))
    yield store, sandbox, logins
    sandbox.close()
    store.close()


def test_two_replicas_share_the_commands_apply_each_once_and_capture_knows_every_write(
    kafka, module_settings, tmp_path, crm
):
    store, sandbox, logins = crm
    started = time.monotonic()
    token, ledger_port = secrets.token_urlsafe(24), free_port()
    ledger_url = f"http://127.0.0.1:{ledger_port}"
    prefix = module_settings.kafka.topic_prefix
    common = {
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": prefix,
        "LIENTHONG_CRM_URL": f"http://127.0.0.1:{sandbox.port}",
        "LIENTHONG_CRM_CREDENTIALS": json.dumps(logins),
        "LIENTHONG_LEDGER_TOKEN": token,
        "LIENTHONG_LOG_LEVEL": "info",
    }
    # the replicas first: without their ledger they wait, not ready, and say why
    replicas, probes = start_replicas("crm", {**common, "LIENTHONG_LEDGER_URL": ledger_url}, tmp_path)
    services = list(replicas)
    try:
        for port in probes:
            wait(
                lambda port=port: "LIENTHONG_LEDGER_URL" in (ready(port) or {}).get("ledger", ""), "a ledger", services
            )
        capture = Service(
            ["capture", "crm"],
            {
                **common,
                "LIENTHONG_DATA_DIR": str(tmp_path / "capture"),
                "LIENTHONG_CRM_CAPTURE_PORT": "0",
                "LIENTHONG_CRM_LEDGER_PORT": str(ledger_port),
                "LIENTHONG_CAPTURE_POLL_INTERVAL": "0.5",
            },
            tmp_path / "capture.log",
        )
        services.append(capture)
        for port in probes:  # ready once the ledger answers (the broker, the topics and CRM's tokens too)
            wait(lambda port=port: ready(port) == {}, "the replicas ready", services)
        group = group_id(prefix, System.CRM)
        first, second = partitions_of_each(module_settings.kafka, group, services)

        # Each tenant's customers, keyed as the worker keys them (spread over the partitions), and a
        # dependent pair placed on partitions of different replicas, the dependent one first.
        commands: list[Command] = [
            command(tenant, "customer", f"KH{n:03d}", {"name": f"Khách {n}"}, target=System.CRM, rule="CUS-6")
            for tenant in logins
            for n in range(CUSTOMERS)
        ]
        tenant = next(iter(logins))
        needed = command(tenant, "customer", "DEP-A", {"name": "Trước"}, target=System.CRM, rule="CUS-6")
        needing = command(
            tenant,
            "customer",
            "DEP-B",
            {"name": "Sau"},
            target=System.CRM,
            rule="CUS-6",
            depends_on=[needed.command_id],
        )
        producer = Producer(confluent_config(module_settings.kafka, {"linger.ms": 5}))
        topic = kafka.name("commands.crm")
        producer.produce(topic, dumps(needing), key=needing.message_key, partition=min(first))
        producer.flush(10)
        for c in commands:
            producer.produce(topic, dumps(c), key=c.message_key)
        producer.produce(topic, dumps(needed), key=needed.message_key, partition=min(second))
        repeated = commands[::7]  # delivered again, on their own partitions after the first delivery
        for c in repeated:
            producer.produce(topic, dumps(c), key=c.message_key)
        producer.flush(10)

        everything = [*commands, needed, needing]
        expected = len(everything) + len(repeated)
        results = [
            m["value"]
            for m in kafka.read(["results.crm"], until=lambda ms: len(ms) >= expected, timeout=45)
            if m["value"]["tenant"] in logins
        ]
        assert list(partitions_of_each(module_settings.kafka, group, services)) == [first, second], "rebalanced"
        statuses = Counter((r["command_id"], r["status"]) for r in results)
        for c in everything:
            twice = c in repeated
            assert statuses[(c.command_id, "applied")] == 1, (c.key.code, statuses)
            assert statuses[(c.command_id, "duplicate")] == (1 if twice else 0), (c.key.code, statuses)
        assert len(results) == expected
        # applied once: one create per record in CRM, and nothing written again
        for name in logins:
            journal = store.journal(name)
            assert Counter(e["op"] for e in journal) == {"create": len(journal)}
            assert len({e["code"] for e in journal}) == len(journal) == CUSTOMERS + (2 if name == tenant else 0)
        dependency, dependent = (store.by_code(tenant, "Customers", code) for code in ("DEP-A", "DEP-B"))
        assert dependency is not None and dependent is not None
        assert int(dependency["id"]) < int(dependent["id"])  # created in the order depends_on says

        # capture reads every record the replicas wrote and knows each write for the integration's
        codes = {(c.tenant, c.key.code) for c in everything}
        events = kafka.read(
            ["cdc.crm.customer"],
            until=lambda ms: {(m["value"]["tenant"], m["value"]["after"]["code"]) for m in ms} >= codes,
            timeout=30,
        )
        seen = [m["value"] for m in events if (m["value"]["tenant"], m["value"]["after"]["code"]) in codes]
        assert {e["origin"] for e in seen} == {"sync"}, [e["after"]["code"] for e in seen if e["origin"] != "sync"]

        # the replicas keep no ledger of their own: it is the capture service's
        for n in range(2):
            assert not (tmp_path / f"crm-connector-{n}" / "connectors").exists()
        assert (tmp_path / "capture" / "connectors" / "crm-ledger.sqlite").exists()
    finally:
        codes = [s.stop() for s in reversed(services)]
    assert codes == [0] * len(services), "\n\n".join(s.tail() for s in services)
    assert time.monotonic() - started < 60


APP_ID = "app-lienthong"


def test_accounting_replicas_learn_acts_callbacks_from_the_capture_service_that_received_them(
    kafka, module_settings, tmp_path
):
    """ACT answers a proposal by calling back one URL, the capture service's; the replica that saved the
    proposal, wherever it runs, learns the result from capture's ledger. An order waits for its customer
    and product, applied by the other replica."""
    started = time.monotonic()
    tenants = {f"cty-{uuid.uuid4().hex[:6]}": (f"acc3ss-{n}", f"010{n}") for n in range(2)}
    callback_port, ledger_port = free_port(), free_port()
    secrets_of = {tenant: secrets.token_urlsafe(24) for tenant in tenants}
    store = ActStore(tmp_path / "acct.sqlite")
    sandbox = Sandbox(
        create_acct_sandbox(
            store,
            app_id=APP_ID,
            credentials={f"{APP_ID}:{access}": tenant for tenant, (access, _) in tenants.items()},
            callback_urls={t: f"http://127.0.0.1:{callback_port}/callback/{secrets_of[t]}" for t in tenants},
        )
    )
    token = secrets.token_urlsafe(24)
    common = {
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
        "LIENTHONG_ACCT_URL": f"http://127.0.0.1:{sandbox.port}",
        "LIENTHONG_ACCT_APP_ID": APP_ID,
        "LIENTHONG_ACCT_CREDENTIALS": json.dumps(
            {
                tenant: {"access_code": access, "org_company_code": company, "callback_secret": secrets_of[tenant]}
                for tenant, (access, company) in tenants.items()
            }
        ),
        "LIENTHONG_LEDGER_TOKEN": token,
    }
    capture = Service(
        ["capture", "acct"],
        {
            **common,
            "LIENTHONG_DATA_DIR": str(tmp_path / "capture"),
            "LIENTHONG_CAPTURE_PORT": "0",
            "LIENTHONG_CALLBACK_PORT": str(callback_port),
            "LIENTHONG_ACCT_LEDGER_PORT": str(ledger_port),
            "LIENTHONG_CAPTURE_POLL_INTERVAL": "0.5",
        },
        tmp_path / "capture.log",
    )
    services = [capture]
    try:
        ledger_url = f"http://127.0.0.1:{ledger_port}"
        wait(lambda: ledger_answers(ledger_url, token), "the capture service's ledger API", services)
        replicas, _ = start_replicas("acct", {**common, "LIENTHONG_LEDGER_URL": ledger_url}, tmp_path)
        services += replicas
        group = group_id(module_settings.kafka.topic_prefix, System.ACCT)
        first, second = partitions_of_each(module_settings.kafka, group, services)

        producer = Producer(confluent_config(module_settings.kafka, {"linger.ms": 5}))
        topic = kafka.name("commands.acct")
        commands: list[Command] = []
        for tenant in tenants:
            setup = [
                command(tenant, "customer", "KH1", {"name": "Khách"}),
                command(tenant, "product", "SP1", {"name": "Bút", "unit": "cái"}, rule="PRD-1"),
            ]
            lines = [{"line_id": "L1", "product_code": "SP1", "quantity": 2, "unit_price": "50", "amount": "100"}]
            order = command(
                tenant,
                "sale_order",
                "DH1",
                {"customer_code": "KH1", "total_amount": "100", "revenue_status": "proposed", "lines": lines},
                rule="SO-4",
                depends_on=[c.command_id for c in setup],
            )
            # the order on a partition of one replica, first; what it names on the other's
            producer.produce(topic, dumps(order), key=order.message_key, partition=min(first))
            producer.flush(10)
            for c in setup:
                producer.produce(topic, dumps(c), key=c.message_key, partition=min(second))
            commands += [order, *setup]
        producer.flush(10)
        results = [
            m["value"]
            for m in kafka.read(["results.acct"], until=lambda ms: len(ms) >= len(commands), timeout=45)
            if m["value"]["tenant"] in tenants
        ]
        assert sorted((r["command_id"], r["status"]) for r in results) == sorted(
            (c.command_id, "applied") for c in commands
        ), results
        assert list(partitions_of_each(module_settings.kafka, group, services)) == [first, second], "rebalanced"
        for tenant in tenants:  # one proposal each, saved once: applied because ACT's callback said so
            ((proposal, _state),) = store.proposals(tenant)
            assert proposal["org_refno"] == "DH1"
            assert [e["op"] for e in store.journal(tenant) if e["kind"].startswith("proposal")] == ["create"]
        # the results came by callback to capture and were filed in its ledger, where the replicas waited
        with contextlib.closing(sqlite3.connect(tmp_path / "capture" / "connectors" / "acct-shared.sqlite")) as db:
            filed = db.execute("SELECT tenant, success FROM callbacks WHERE resolved_ms IS NOT NULL").fetchall()
        assert sorted(filed) == sorted((tenant, 1) for tenant in tenants)
        # capture tells the customers and products the replicas wrote for the integration's
        codes = {(t, code) for t in tenants for code in ("KH1", "SP1")}
        events = kafka.read(
            ["cdc.acct.customer", "cdc.acct.product"],
            until=lambda ms: {(m["value"]["tenant"], m["value"]["after"]["code"]) for m in ms} >= codes,
            timeout=30,
        )
        seen = [m["value"] for m in events if (m["value"]["tenant"], m["value"]["after"]["code"]) in codes]
        assert {e["origin"] for e in seen} == {"sync"}
    finally:
        codes_ = [s.stop() for s in reversed(services)]
        sandbox.close()
        store.close()
    assert codes_ == [0] * len(services), "\n\n".join(s.tail() for s in services)
    assert time.monotonic() - started < 60
