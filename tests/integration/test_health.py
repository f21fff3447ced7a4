"""/metrics, /healthz and /readyz of the services, on the real broker, as an operator's probes see them."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from amis.crm_client import CrmCredentials
from amis.settings import AmisSettings
from capture.service import serve_capture
from capture.settings import CaptureSettings
from capture.webhooks import create_webhooks
from common import metrics
from common.names import SOURCE_TS_MS, System, changes_topic
from common.settings import AcctTenant, CrmTenant
from connectors.runner import Connector, ConnectorSettings
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.app import instrument
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import RESOURCES as CRM_RESOURCES
from sandboxes.crm_store import CrmStore
from streams.core.contract import Command, CommandKey, CommandSource, Op, command_id, dumps
from streams.settings import WorkerSettings
from tests.integration.conftest import REPO_ROOT, change_event, in_data_dir, stop_process

pytestmark = pytest.mark.broker


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self):
        return orjson.loads(self.text)


def http_get(url: str) -> Answer | None:
    """The answer (whatever its status), or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return Answer(response.status, response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric in a /metrics answer: (labels, value)."""
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found.append((dict(sample.labels), sample.value))
    return found


def value(text: str, name: str, **labels: str) -> float:
    return sum(v for found, v in samples(text, name) if all(found.get(k) == want for k, want in labels.items()))


class WorkerWithProbes:
    """A ``lienthong worker`` subprocess serving its probes on a free port."""

    def __init__(self, settings: WorkerSettings, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "LIENTHONG_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "LIENTHONG_APP_ID": settings.app_id,
                "LIENTHONG_TOPIC_PREFIX": settings.kafka.topic_prefix,
                "LIENTHONG_TOPIC_PARTITIONS": str(settings.topic_partitions),
                "LIENTHONG_DATA_DIR": str(settings.tables.data_dir),
                "LIENTHONG_WEB_ENABLED": "true",
                "LIENTHONG_WEB_PORT": str(self.port),
                "LIENTHONG_COMMIT_INTERVAL": "0.5",
            }
        )
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> Answer | None:
        return http_get(self.base + path)

    def probe_until(self, path: str, done, timeout: float = 60.0) -> list[Answer]:
        """Every answer of ``path`` (once the port answers) until ``done(answer)``."""
        answers: list[Answer] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            answer = self.get(path)
            if answer is not None:
                answers.append(answer)
                if done(answer):
                    return answers
            time.sleep(0.05)
        raise AssertionError(f"{path} never satisfied the test; last {answers[-1:]}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@pytest.fixture()
def probed_worker(module_settings: WorkerSettings, tmp_path):
    worker = WorkerWithProbes(in_data_dir(module_settings, tmp_path / "data"), tmp_path / "w.log")
    try:
        yield worker
    finally:
        worker.stop()


def test_worker_is_alive_at_once_ready_after_recovery_and_counts_what_it_processes(
    probed_worker, kafka, module_settings, tenant
):
    worker = probed_worker
    answers = worker.probe_until("/readyz", lambda answer: answer.status_code == 200)
    first = answers[0]
    # served from before the group assigned partitions and the tables were recovered: not ready then
    assert first.status_code == 503, first.text
    assert first.json()["ready"] is False
    assert set(first.json()["not_ready"]) & {"partitions", "tables"}, first.json()
    assert answers[-1].json() == {
        "ready": True,
        "checks": {"broker": "ok", "partitions": "ok", "tables": "ok"},
        "not_ready": {},
    }
    health = worker.get("/healthz")
    assert health is not None and health.status_code == 200 and health.json() == {"alive": True}

    good = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC"})
    kafka.produce("cdc.acct.customer", good, key=f"{tenant}:A1")
    kafka.produce("cdc.acct.customer", good, key=f"{tenant}:A1")  # the same event again: a duplicate
    kafka.produce("cdc.acct.customer", b"not json", key=f"{tenant}:BAD")

    command = {"system": "acct", "entity": "customer", "rule": "CUS-6", "outcome": "command"}

    def counted(answer: Answer) -> bool:
        # every message produced above taken (the batches' sizes add up to the three) and every count below
        # reached: they are final then, and a message counted twice shows as a 2, with no pause to wait it out
        text = answer.text
        return (
            value(text, "lienthong_batch_size_sum") >= 3
            and value(text, "lienthong_events_processed_total", **command) >= 1
            and value(text, "lienthong_events_processed_total", outcome="duplicate") >= 1
            and value(text, "lienthong_events_processed_total", outcome="dead_letter") >= 1
            and value(text, "lienthong_commands_emitted_total", target="crm", rule="CUS-6") >= 1
            and value(text, "lienthong_dead_letters_total", topic="dlq.cdc", reason="decode") >= 1
        )

    text = worker.probe_until("/metrics", counted, timeout=60)[-1].text
    assert value(text, "lienthong_events_processed_total", **command) == 1
    assert value(text, "lienthong_events_processed_total", system="acct", entity="customer", outcome="duplicate") == 1
    assert value(text, "lienthong_events_processed_total", system="acct", entity="customer", outcome="dead_letter") == 1
    assert value(text, "lienthong_commands_emitted_total", target="crm", rule="CUS-6") == 1
    assert value(text, "lienthong_dead_letters_total", topic="dlq.cdc", reason="decode") == 1
    assert value(text, "lienthong_batch_size_count") >= 1
    assert value(text, "lienthong_batch_size_sum") == 3
    assert value(text, "lienthong_rebalances_total", service="worker") >= 1
    # the worker's own group lag, as kafka_exporter names it: all read, once its offsets are committed —
    # the input topic and the changes topic its events were routed through (a gauge measured between
    # the two hops shows the input read and the routed changes not yet: wait for both)
    lag = worker.probe_until(
        "/metrics",
        lambda answer: (
            bool(samples(answer.text, "kafka_consumergroup_lag_sum"))
            and value(answer.text, "kafka_consumergroup_lag_sum", consumergroup=module_settings.app_id) == 0
        ),
        timeout=30,
    )[-1].text
    read = {
        labels["topic"]
        for labels, _ in samples(lag, "kafka_consumergroup_lag_sum")
        if labels.get("consumergroup") == module_settings.app_id
    }
    assert {kafka.name("cdc.acct.customer"), changes_topic(module_settings.app_id)} <= read, read


# --- connectors ---------------------------------------------------------------------------------


def connector_settings(
    module_settings: WorkerSettings, tmp_path: Path, tenant: str, base_url: str
) -> ConnectorSettings:
    fields = ConnectorSettings.__dataclass_fields__
    kafka = (
        {"kafka": {"bootstrap.servers": module_settings.kafka.bootstrap_servers}}
        if "kafka" in fields
        else {"bootstrap_servers": module_settings.kafka.bootstrap_servers}
    )
    return ConnectorSettings(
        system=System.CRM,
        base_url=base_url,
        crm_credentials={tenant: CrmCredentials("app-crm", SecretStr("s3"))},
        shared_ledger_path=tmp_path / "crm-shared.sqlite",
        topic_prefix=module_settings.kafka.topic_prefix,
        group_id=f"{module_settings.kafka.topic_prefix}conn-{uuid.uuid4().hex[:6]}",
        ledger_path=tmp_path / "crm-ledger.sqlite",
        request_timeout=1.0,
        health_port=0,
        **kafka,  # type: ignore[arg-type]
    )


async def fetch(session: aiohttp.ClientSession, connector: Connector, path: str) -> tuple[int, str]:
    deadline = time.monotonic() + 20
    while connector.health_port() is None:
        assert time.monotonic() < deadline, "the connector never served its probes"
        await asyncio.sleep(0.05)
    async with session.get(f"http://127.0.0.1:{connector.health_port()}{path}") as response:
        return response.status, await response.text()


async def test_a_connector_whose_api_is_down_is_alive_but_not_ready(module_settings, tmp_path, tenant):
    down = f"http://127.0.0.1:{free_port()}/api/v2"  # nothing listens there
    connector = Connector(connector_settings(module_settings, tmp_path, tenant, down))
    task = asyncio.create_task(connector.run())
    try:
        async with aiohttp.ClientSession() as session:
            assert await fetch(session, connector, "/healthz") == (200, '{"alive": true}')
            status, body = await fetch(session, connector, "/readyz")
    finally:
        connector.stop()
        await task
    assert status == 503
    answer = orjson.loads(body)
    assert answer["ready"] is False and answer["checks"]["broker"] == "ok"
    assert set(answer["not_ready"]) == {"api"}
    assert f"no token from CRM at {down}" in answer["not_ready"]["api"] and tenant in answer["not_ready"]["api"]


async def test_a_connector_is_ready_with_its_api_up_and_counts_results_and_api_calls(
    kafka, module_settings, tmp_path, tenant
):
    store = CrmStore(tmp_path / "crm.sqlite")
    server = TestServer(create_crm_sandbox(store, credentials={"app-crm": tenant, "app-crm:secret": "s3"}))
    await server.start_server()
    event_id = uuid.uuid4().hex
    latency_before = tuple(
        REGISTRY.get_sample_value(f"lienthong_sync_latency_seconds_{part}", {"target": "crm"}) or 0.0
        for part in ("count", "sum")
    )
    changed_ms = int(time.time() * 1000) - 5000  # the change happened 5 s ago in accounting
    create = Command(
        command_id=command_id(
            tenant=tenant, event_id=event_id, rule="CUS-6", target="crm", entity="customer", op="upsert", key="KH1"
        ),
        tenant=tenant,
        target=System.CRM,
        entity="customer",
        op=Op.UPSERT,
        key=CommandKey(code="KH1"),
        source=CommandSource(system=System.ACCT, entity="customer", id="A1", event_id=event_id),
        fields={"name": "Công ty A"},
        rule="CUS-6",
        ts_ms=int(time.time() * 1000),
    )
    kafka.producer.produce(
        kafka.name("commands.crm"),
        key=create.message_key.encode(),
        value=dumps(create),
        headers=[(SOURCE_TS_MS, str(changed_ms).encode())],
    )
    kafka.producer.flush(10)
    connector = Connector(connector_settings(module_settings, tmp_path, tenant, str(server.make_url("/api/v2"))))
    task = asyncio.create_task(connector.run())
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await fetch(session, connector, "/readyz")
            assert status == 200, body
            assert orjson.loads(body) == {"ready": True, "checks": {"broker": "ok", "api": "ok"}, "not_ready": {}}
            # "applied" is counted before the result is produced, its latency observed after that:
            # read /metrics until this command's latency shows there
            deadline = time.monotonic() + 30
            while True:
                _, text = await fetch(session, connector, "/metrics")
                read_ms = int(time.time() * 1000)
                if value(text, "lienthong_sync_latency_seconds_count", target="crm") > latency_before[0]:
                    break
                assert time.monotonic() < deadline, f"the command was never applied: {dict(connector.stats)}"
                await asyncio.sleep(0.1)
    finally:
        connector.stop()
        await task
        await server.close()
        store.close()
    assert value(text, "lienthong_connector_results_total", target="crm", status="applied") >= 1
    assert value(text, "lienthong_api_calls_total", system="crm", endpoint="/Account", status="200") >= 1
    assert value(text, "lienthong_api_calls_total", system="crm", endpoint="/Customers", status="200") >= 1
    assert value(text, "lienthong_api_call_duration_seconds_count", system="crm", endpoint="/Customers") >= 1
    assert value(text, "lienthong_token_renewals_total", system="crm", outcome="ok") >= 1
    # from the change in accounting (5 s before the command was sent) to applied in CRM: at least 5 s,
    # at most the time from that change until the metrics were read (a loaded machine is slow to start)
    # (the registry is the process's: other connectors of the same test run count there too)
    count = value(text, "lienthong_sync_latency_seconds_count", target="crm") - latency_before[0]
    measured = value(text, "lienthong_sync_latency_seconds_sum", target="crm") - latency_before[1]
    assert count == 1 and 5.0 <= measured <= (read_ms - changed_ms) / 1000, (count, measured, read_ms - changed_ms)
    assert value(text, "lienthong_rebalances_total", service="connector-crm") >= 1
    group_lag = samples(text, "kafka_consumergroup_lag")  # the lag of its group, once committed
    assert all(labels["consumergroup"] == connector.group_id for labels, _ in group_lag)


# --- services that are ready once they serve -----------------------------------------------------


async def test_a_sandbox_serves_probes_and_counts_the_api_calls_it_served(tmp_path, tenant):
    store = CrmStore(tmp_path / "crm.sqlite")
    server = TestServer(instrument(create_crm_sandbox(store, credentials={"app-crm": tenant}), System.CRM))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            for path, status in (("/healthz", 200), ("/readyz", 200), ("/api/v2/Customers", 401)):
                async with session.get(server.make_url(path)) as response:
                    assert response.status == status, (path, await response.text())
            async with session.get(server.make_url("/metrics")) as response:
                text = await response.text()
    finally:
        await server.close()
        store.close()
    assert (
        value(text, "lienthong_sandbox_requests_total", system="crm", endpoint="/api/v2/{resource}", status="401") >= 1
    )


async def test_the_webhook_receiver_serves_probes_and_counts_webhooks_on_another_port(module_settings, tmp_path):
    app = create_webhooks(
        secrets={("crm", "t1"): "s"},
        data_dir=tmp_path,
        kafka={"bootstrap.servers": module_settings.kafka.bootstrap_servers},
        topic_prefix="x.",
    )
    server = TestServer(app)
    await server.start_server()
    internal = await metrics.serve_health("127.0.0.1", 0)  # as lienthong webhooks serves them
    probes = f"http://127.0.0.1:{metrics.bound_port(internal)}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{probes}/readyz") as response:
                assert response.status == 200
                assert await response.json() == {"ready": True, "checks": {"serving": "ok"}, "not_ready": {}}
            async with session.post(server.make_url("/webhooks/crm/t1"), data=b"{}") as response:
                assert response.status == 401  # unsigned
            for path in ("/metrics", "/healthz", "/readyz"):  # the public port serves none of them
                async with session.get(server.make_url(path)) as response:
                    assert response.status == 404, path
            async with session.get(f"{probes}/metrics") as response:
                text = await response.text()
    finally:
        await server.close()
        await internal.cleanup()
    assert value(text, "lienthong_webhooks_total", system="crm", status="401") >= 1


# --- capture services ----------------------------------------------------------------------------

CAPTURE_APP_ID = "app-lienthong-health"


def capture_settings(module_settings: WorkerSettings, tmp_path: Path, tenant: str, api_port: int) -> CaptureSettings:
    """Settings of ``lienthong capture crm|acct`` against a system API on ``api_port`` (up or not)."""
    return CaptureSettings(
        kafka=module_settings.kafka,
        amis=AmisSettings(
            crm_url=f"http://127.0.0.1:{api_port}",
            acct_url=f"http://127.0.0.1:{api_port}",
            crm_credentials={tenant: CrmTenant(client_id="app-crm", client_secret=SecretStr("s3"))},
            acct_app_id=CAPTURE_APP_ID,
            acct_credentials={tenant: AcctTenant(access_code=SecretStr("acc3ss"), org_company_code="0101234567")},
        ),
        data_dir=tmp_path / "data",
        crm_capture_port=free_port(),
        capture_port=free_port(),
        callback_port=free_port(),
        capture_poll_interval=0.3,
        capture_overlap=0.0,
    )


async def until(session: aiohttp.ClientSession, url: str, done, service: asyncio.Task, timeout: float = 30.0):
    """GET ``url`` (once something listens there) until ``done(status, text)``; returns (status, text)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, str] | None = None
    while time.monotonic() < deadline:
        if service.done():
            raise AssertionError(f"the capture service stopped: {service.exception() or 'without an error'}")
        try:
            async with session.get(url) as response:
                last = (response.status, await response.text())
            if done(*last):
                return last
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the test; last answer {last}")


@pytest.mark.parametrize("system", list(System))
async def test_a_capture_service_is_not_ready_while_its_api_is_down_then_ready_and_counts_what_it_captures(
    system, kafka, module_settings, tmp_path, tenant
):
    api_port = free_port()
    settings = capture_settings(module_settings, tmp_path, tenant, api_port)
    base = f"http://127.0.0.1:{settings.crm_capture_port if system == System.CRM else settings.capture_port}"
    stop = asyncio.Event()
    service = asyncio.create_task(serve_capture(system, settings, stop))
    sandbox: TestServer | None = None
    store: CrmStore | ActStore | None = None
    try:
        async with aiohttp.ClientSession() as session:
            # nothing answers on the API's port: alive, not ready, and the answer says what and where
            assert await until(session, base + "/healthz", lambda s, t: True, service) == (200, '{"alive": true}')
            status, body = await until(session, base + "/readyz", lambda s, t: True, service)
            assert status == 503, body
            answer = orjson.loads(body)
            assert answer["ready"] is False and answer["checks"]["broker"] == "ok"
            assert set(answer["not_ready"]) == {"api"}
            name = "CRM" if system == "crm" else "the accounting API"
            assert f"no token from {name} at http://127.0.0.1:{api_port}" in answer["not_ready"]["api"]
            assert tenant in answer["not_ready"]["api"]
            if system == System.ACCT:  # the public port (ACT's callbacks) serves neither metrics nor probes
                public = f"http://127.0.0.1:{settings.callback_port}"
                for path in ("/metrics", "/healthz", "/readyz"):
                    async with session.get(public + path) as response:
                        assert response.status == 404, path
                async with session.post(base + "/callback", data=b"not json") as response:
                    assert response.status == 404  # and the internal port serves no callback

            # the system comes up on that port: ready, without a restart
            if system == "crm":
                store = CrmStore(tmp_path / "crm.sqlite")
                app = create_crm_sandbox(store, credentials={"app-crm": tenant, "app-crm:secret": "s3"})
            else:
                store = ActStore(tmp_path / "acct.sqlite")
                app = create_acct_sandbox(
                    store, app_id=CAPTURE_APP_ID, credentials={f"{CAPTURE_APP_ID}:acc3ss": tenant}
                )
            sandbox = TestServer(app, port=api_port)
            await sandbox.start_server()
            status, body = await until(session, base + "/readyz", lambda s, t: s == 200, service)
            assert orjson.loads(body) == {"ready": True, "checks": {"broker": "ok", "api": "ok"}, "not_ready": {}}

            # a poll of customers has finished since the API came up: the gauge says when
            ready_at = time.time()
            _, text = await until(
                session,
                base + "/metrics",
                lambda s, t: (
                    value(t, "lienthong_capture_last_poll_timestamp_seconds", system=system, entity="customer")
                    >= ready_at
                ),
                service,
            )
            created = value(text, "lienthong_capture_events_total", system=system, entity="customer", op="c")

            # a person creates a customer in the system: the next poll produces its change event
            if isinstance(store, CrmStore):
                store.create(
                    tenant, CRM_RESOURCES["Customers"], {"account_number": "KH1", "account_name": "Công ty A"}, "nv-kd"
                )
            else:
                store.save_dictionary_item(
                    tenant,
                    {
                        "dictionary_type": 1,
                        "account_object_code": "KH1",
                        "account_object_name": "A",
                        "is_customer": True,
                    },
                    "ui",
                )
            _, text = await until(
                session,
                base + "/metrics",
                lambda s, t: (
                    value(t, "lienthong_capture_events_total", system=system, entity="customer", op="c") > created
                ),
                service,
            )
            assert (
                value(text, "lienthong_capture_events_total", system=system, entity="customer", op="c") == created + 1
            )
            polled = value(text, "lienthong_capture_last_poll_timestamp_seconds", system=system, entity="customer")
            assert ready_at <= polled <= time.time()
            assert value(text, "lienthong_token_renewals_total", system=system, outcome="ok") >= 1
    finally:
        stop.set()
        await asyncio.wait_for(service, 30)
        if sandbox is not None:
            await sandbox.close()
        if store is not None:
            store.close()

    def created_here(messages: list[dict]) -> list[dict]:
        values = [m["value"] for m in messages if isinstance(m["value"], dict)]
        return [v for v in values if v.get("tenant") == tenant and v.get("op") == "c"]

    events = created_here(kafka.read([f"cdc.{system}.customer"], lambda messages: bool(created_here(messages))))
    assert [(e["after"]["code"], e["origin"]) for e in events] == [("KH1", "user")]
