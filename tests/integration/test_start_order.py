"""Services started in any order around `lienthong topics create`, on a fresh topic prefix.

A service started before its topics exist says, in one line, which are missing and what to run, and
starts by itself once they exist: the first change flows through within seconds of `topics create`,
not at the clients' next metadata refresh (librdkafka's and aiokafka's are 5 minutes). The chain:
an accounting customer on ``cdc.acct.customer`` -> the worker -> ``commands.crm`` -> the CRM
connector -> the CRM sandbox -> ``results.crm``; the CRM capture service reports that customer on
``cdc.crm.customer``; the worker's tenant-settings reader (aiokafka) reads ``config.tenants``;
the operator's page reads ``results.crm``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from amis.settings import AmisSettings
from capture.service import serve_capture
from capture.settings import CaptureSettings
from common.kafka_config import confluent_config
from common.names import System
from common.settings import CrmTenant, KafkaSettings
from common.topic_wait import TopicWait
from connectors.service import build_connector
from connectors.settings import ConnectorServiceSettings
from ops.admin import create_topics, delete_topics_with_prefix
from ops.dashboard.collect import DashboardData
from ops.operations import set_tenant
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from streams.settings import TableSettings, WorkerSettings
from streams.topics import contract_topics
from tests.integration.conftest import REPO_ROOT, Kafka, Worker, change_event
from tests.integration.test_health import WorkerWithProbes

pytestmark = pytest.mark.broker

# Far below any metadata refresh (5 minutes), far above what a loaded machine needs.
PROMPTLY_S = 30.0
WAITING = "waits for topic(s) that do not exist"


@pytest.fixture()
def namespace(bootstrap: str, tmp_path: Path) -> Iterator[WorkerSettings]:
    """A fresh topic prefix on the test broker, no topic created."""
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / "worker-data"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )
    yield settings
    delete_topics_with_prefix(settings.kafka, prefix)


def topics_create(kafka: KafkaSettings) -> None:
    """`lienthong topics create`, as an operator runs it."""
    env = dict(
        os.environ, LIENTHONG_BOOTSTRAP_SERVERS=kafka.bootstrap_servers, LIENTHONG_TOPIC_PREFIX=kafka.topic_prefix
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli", "topics", "create"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


class Services:
    """The CRM side of a deployment in this process (connector, capture, operator's page) beside a
    worker subprocess, each started when the test says."""

    def __init__(self, settings: WorkerSettings, tmp_path: Path, tenant: str, sandbox_url: str) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.amis = AmisSettings(
            crm_url=sandbox_url,
            crm_credentials={tenant: CrmTenant(client_id="app-crm", client_secret=SecretStr("s3"))},
        )
        self.stop = asyncio.Event()
        self.tasks: dict[str, asyncio.Task] = {}
        self.worker: Worker | None = None
        self.dashboard: DashboardData | None = None
        self.connector_port: int | None = None

    def start(self, name: str) -> None:
        kafka, data = self.settings.kafka, self.tmp_path / "data"
        if name == "worker":
            self.worker = Worker(self.settings, self.tmp_path / "worker.log")
        elif name == "connector":
            settings = ConnectorServiceSettings(kafka=kafka, amis=self.amis, data_dir=data)
            connector = build_connector(settings, System.CRM, health_port=0)
            self.connector = connector
            self.tasks[name] = asyncio.create_task(connector.run())
            self.stop_connector = connector.stop
        elif name == "capture":
            settings = CaptureSettings(
                kafka=kafka,
                amis=self.amis,
                data_dir=data,
                crm_capture_port=0,
                capture_poll_interval=0.3,
                capture_overlap=0.0,
            )
            self.tasks[name] = asyncio.create_task(serve_capture(System.CRM, settings, self.stop))
        elif name == "dashboard":
            self.dashboard = DashboardData(kafka, interval=60.0)
            self.dashboard.start()

    def worker_log(self) -> str:
        return self.worker.log_path.read_text(errors="replace") if self.worker is not None else ""

    async def close(self) -> None:
        self.stop.set()
        if "connector" in self.tasks:
            self.stop_connector()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        if self.dashboard is not None:
            await asyncio.to_thread(self.dashboard.stop)
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)


def said_waiting(caplog: pytest.LogCaptureFixture, services: Services, name: str) -> str | None:
    """The waiting line a service logged, if any."""
    if name == "worker":
        lines = [line for line in services.worker_log().splitlines() if WAITING in line]
    else:
        who = {"connector": "connector crm", "capture": "capture crm", "dashboard": "the dashboard"}[name]
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{who} {WAITING}")]
    return lines[0] if lines else None


async def eventually(what: str, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}"
        await asyncio.sleep(0.2)


# A topic each service waits for (its line names every one missing).
NEEDS = {"worker": "results.crm", "connector": "commands.crm", "capture": "cdc.crm.customer", "dashboard": "audit.sync"}

ORDERS = {
    "all before the topics": (["worker", "connector", "capture", "dashboard"], []),
    "worker before, the others after": (["worker"], ["connector", "capture", "dashboard"]),
    "the others before, worker after": (["connector", "capture", "dashboard"], ["worker"]),
}


@pytest.mark.parametrize("order", list(ORDERS))
async def test_services_started_before_or_after_topics_create_sync_at_once(order, namespace, tmp_path, caplog, tenant):
    caplog.set_level(logging.INFO)
    before, after = ORDERS[order]
    store = CrmStore(tmp_path / "crm.sqlite")
    sandbox = TestServer(create_crm_sandbox(store, credentials={"app-crm": tenant, "app-crm:secret": "s3"}))
    await sandbox.start_server()
    services = Services(namespace, tmp_path, tenant, str(sandbox.make_url("")).rstrip("/"))
    kafka = Kafka(namespace.kafka)
    try:
        for name in before:
            services.start(name)
        for name in before:
            await eventually(f"{name} says it waits", lambda n=name: said_waiting(caplog, services, n), 60)
            line = said_waiting(caplog, services, name)
            assert "run `lienthong topics create`" in line.lower(), line
            assert namespace.kafka.topic_prefix + NEEDS[name] in line, line
        if "connector" in before:  # its probes answer meanwhile, and say why it is not ready
            async with aiohttp.ClientSession() as session:
                await eventually("the connector serves its probes", lambda: services.connector.health_port(), 20)
                async with session.get(f"http://127.0.0.1:{services.connector.health_port()}/readyz") as answer:
                    assert answer.status == 503
                    assert f"{namespace.kafka.topic_prefix}commands.crm" in (await answer.json())["not_ready"]["topics"]

        await asyncio.to_thread(topics_create, namespace.kafka)
        created = time.monotonic()
        for name in after:
            services.start(name)
        # tenant settings (read by the worker's aiokafka reader) and a change in accounting
        await asyncio.to_thread(set_tenant, namespace.kafka, tenant, "contract")
        event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC"})
        await asyncio.to_thread(kafka.produce, "cdc.acct.customer", event, f"{tenant}:A1")

        def applied(ms: list[dict]) -> bool:
            return any(m["value"]["status"] == "applied" and m["value"]["tenant"] == tenant for m in ms)

        def captured(ms: list[dict]) -> bool:
            return any(m["value"]["tenant"] == tenant and m["value"]["after"]["code"] == "KH0001" for m in ms)

        await asyncio.to_thread(kafka.read, ["results.crm"], applied, PROMPTLY_S)
        await asyncio.to_thread(kafka.read, ["cdc.crm.customer"], captured, PROMPTLY_S)
        await eventually(
            "the worker read the tenant's settings",
            lambda: f"tenant {tenant} settings: " in services.worker_log(),
            PROMPTLY_S,
        )
        dashboard = services.dashboard
        assert dashboard is not None
        await eventually(
            "the operator's page read results.crm", lambda: dashboard.tail_position.get("results.crm", 0) >= 1, 10
        )
        took = time.monotonic() - created
        assert took < PROMPTLY_S, took
        # the worker's log names the topics it waited for, in one line and without a traceback
        log = services.worker_log()
        assert "Traceback" not in log, log[-3000:]
        for name in after:
            assert said_waiting(caplog, services, name) is None, name
    except BaseException:
        print(services.worker_log()[-5000:])
        raise
    finally:
        await services.close()
        await sandbox.close()
        store.close()


def test_a_waiting_worker_is_alive_not_ready_says_why_and_stops_cleanly_on_sigterm(namespace, tmp_path):
    worker = WorkerWithProbes(namespace, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while WAITING not in worker.log_path.read_text(errors="replace"):
            assert worker.process.poll() is None, worker.tail()
            assert time.monotonic() < deadline, worker.tail()
            time.sleep(0.2)
        assert worker.get("/healthz").status_code == 200  # a liveness probe does not restart it
        ready = worker.get("/readyz")
        assert ready.status_code == 503 and "lienthong topics create" in ready.json()["not_ready"]["topics"]
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert worker.process.returncode == 0, log[-3000:]
    assert "Traceback" not in log and "Worker ready" not in log, log[-3000:]
    (line,) = [line for line in log.splitlines() if WAITING in line]
    # one line naming every topic it needs, the internal ones aside (it creates those itself)
    for name in ("cdc.acct.customer", "results.crm", "config.tenants", "commands.crm", "audit.sync", "dlq.cdc"):
        assert namespace.kafka.topic_prefix + name in line, line
    assert "-changes" not in line and "run `lienthong topics create`" in line.lower(), line


def test_the_waiting_line_comes_again_at_its_interval_until_the_topics_exist(namespace, caplog):
    kafka = namespace.kafka
    names = [kafka.topic_prefix + "commands.crm"]
    waiting = TopicWait(confluent_config(kafka), names, service="a service", check_every=0.1, say_every=0.5)
    stop_at = time.monotonic() + 1.8
    assert waiting.wait(stopped=lambda: time.monotonic() > stop_at) is False
    lines = [r.getMessage() for r in caplog.records if "a service waits for topic(s)" in r.getMessage()]
    assert 3 <= len(lines) <= 5, lines  # at 0, 0.5, 1.0, 1.5 s: not at every check
    assert waiting.readiness() == f"waiting for topic(s) {names[0]}: run `lienthong topics create`"
    topics_create(kafka)
    assert waiting.wait() is True and waiting.readiness() is None


def test_a_worker_waits_for_the_last_of_its_topics_then_reads_them_all_at_once(namespace, tmp_path, tenant):
    """Topics that appear one after another (a partial `topics create`, a slow controller): the worker
    subscribes only once the last exists. Subscribed earlier, librdkafka would see the late ones at its
    next metadata refresh, 5 minutes on."""
    kafka = namespace.kafka
    late = {spec.name for spec in contract_topics() if spec.name.startswith("cdc.acct.")}
    create_topics(
        kafka,
        partitions=namespace.topic_partitions,
        replication_factor=namespace.topic_replication_factor,
        specs=[spec for spec in contract_topics() if spec.name not in late],
    )
    worker = WorkerWithProbes(namespace, tmp_path / "worker.log")
    try:
        # the topics made before it started are seen once the broker's metadata has them (on a busy broker
        # a moment after create_topics returned): then only the late ones are missing
        created_early = kafka.topic_prefix + "cdc.crm.customer"
        ready = worker.probe_until(
            "/readyz",
            lambda answer: created_early not in answer.json()["not_ready"].get("topics", created_early),
            timeout=60,
        )[-1]
        missing = ready.json()["not_ready"]["topics"]
        assert all(kafka.topic_prefix + name in missing for name in late), missing

        topics_create(kafka)
        created = time.monotonic()
        event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC"})
        Kafka(kafka).produce("cdc.acct.customer", event, key=f"{tenant}:A1")
        Kafka(kafka).read(
            ["commands.crm"], until=lambda ms: any(m["key"].startswith(tenant + ":") for m in ms), timeout=PROMPTLY_S
        )
        assert time.monotonic() - created < PROMPTLY_S
    finally:
        worker.stop()
