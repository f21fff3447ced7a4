"""The operator's page in a real headless browser (Debian's chromium driven by playwright), against a
running worker with traffic on the real broker: what it shows matches the services' /metrics.

The screenshots are saved under $LIENTHONG_TEST_ARTIFACTS (default: var/test-artifacts/ in the
repository, which git ignores; pytest's own tmp dirs are pruned by later runs) and their path
printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import WorkerSettings
from tests.integration.conftest import REPO_ROOT, Kafka, change_event, in_data_dir

pytestmark = pytest.mark.broker

PAGE_URL = re.compile(r"the operator's page: (http://[0-9.]+:[0-9]+)/")
CHROMIUM = os.environ.get("LIENTHONG_CHROMIUM", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None


def metric(text: str, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(what: str, check, timeout: float = 180.0, logs: list[Path] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-30:]) for p in logs)
    raise AssertionError(f"not within {timeout}s: {what}\n{tails}")


class Service:
    """A ``lienthong`` subprocess with the test's settings."""

    def __init__(self, args: list[str], settings: WorkerSettings, log_path: Path, **extra_env: str) -> None:
        env = dict(os.environ)
        env.update(
            {
                "LIENTHONG_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "LIENTHONG_APP_ID": settings.app_id,
                "LIENTHONG_TOPIC_PREFIX": settings.kafka.topic_prefix,
                "LIENTHONG_DATA_DIR": str(settings.tables.data_dir),
                "LIENTHONG_COMMIT_INTERVAL": "0.5",
                **extra_env,
            }
        )
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def act_as_connector(kafka: Kafka, settings: WorkerSettings, commands: list[dict], statuses: list[str | None]) -> None:
    """Answer the commands as a CRM connector would (``None``: no answer yet), and leave the
    connector's group behind at offset 0 of every partition: a connector that fell behind."""
    for message, status in zip(commands, statuses, strict=True):
        if status is None:
            continue
        command = message["value"]
        result = {
            "command_id": command["command_id"],
            "tenant": command["tenant"],
            "target": "crm",
            "entity": command["entity"],
            "status": status,
            "target_id": f"C-{command['key']['code']}" if status == "applied" else None,
            "code": command["key"]["code"],
            "error": {"kind": "http_422", "message": "CRM refused: Phone is invalid"} if status == "rejected" else None,
            "attempts": 1,
            "ts_ms": int(time.time() * 1000),
        }
        kafka.produce("results.crm", result, key=message["key"])
    group = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"{settings.kafka.topic_prefix}lienthong-connector-crm",
            "enable.auto.commit": False,
        }
    )
    try:
        topic = kafka.name("commands.crm")
        partitions = group.list_topics(topic, timeout=10).topics[topic].partitions
        group.commit(offsets=[TopicPartition(topic, p, 0) for p in partitions], asynchronous=False)
    finally:
        group.close()


def end_offsets(settings: WorkerSettings, topic: str) -> int:
    """The sum of the partitions' end offsets, as the broker reports them: what a group committed at
    0 lags by, as ``kafka-consumer-groups.sh --describe`` counts it. The worker publishes commands in
    transactions, so the commit markers take offsets too and this is more than the commands."""
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "lienthong-test-probe"})
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        probe.close()


def rows(page, testid: str) -> list[dict]:
    """Every row of a table on the page: its data-* attributes and its cells' text."""
    return page.eval_on_selector_all(
        f'[data-testid="{testid}"]',
        "els => els.map(e => ({...e.dataset, cells: [...e.children].map(c => c.innerText.trim())}))",
    )


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")
def test_the_page_shows_what_the_services_measure(module_settings, kafka, tenant, tmp_path):
    from playwright.sync_api import sync_playwright

    settings = in_data_dir(module_settings, tmp_path / "data")
    worker_port = free_port()
    worker = Service(
        ["worker"], settings, tmp_path / "worker.log", LIENTHONG_WEB_ENABLED="true", LIENTHONG_WEB_PORT=str(worker_port)
    )
    worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
    dashboard = Service(
        ["dashboard", "--port", "0", "--interval", "1", "--scrape", worker_metrics],
        settings,
        tmp_path / "dashboard.log",
    )
    logs = [worker.log_path, dashboard.log_path]
    try:
        # the dashboard says where it listens
        printed = wait_for(
            "the dashboard's address", lambda: PAGE_URL.search(dashboard.log_path.read_text()), logs=logs
        )
        base = printed.group(1)
        wait_for(
            "the worker ready",
            lambda: "200" if _status(f"http://127.0.0.1:{worker_port}/readyz") == 200 else None,
            logs=logs,
        )

        # traffic: five accounting customers (CUS-6 sends each to CRM), three unreadable messages
        for n in range(1, 6):
            after = {"id": f"A{n}", "code": f"KH000{n}", "name": f"Công ty {n}"}
            kafka.produce("cdc.acct.customer", change_event(tenant, "acct", "customer", after), key=f"{tenant}:A{n}")
        kafka.produce("cdc.acct.customer", b"not json", key=f"{tenant}:BAD1")
        kafka.produce("cdc.acct.customer", b"{also not json", key=f"{tenant}:BAD2")
        wrong = change_event(tenant, "acct", "customer", {"id": "A9", "code": "KH0009", "name": "x"})
        kafka.produce("cdc.acct.customer", {**wrong, "schema_version": 2}, key=f"{tenant}:A9")
        commands = kafka.read(["commands.crm"], until=lambda got: len(got) >= 5, timeout=180)
        commands.sort(key=lambda m: m["value"]["key"]["code"])
        # the connector applies three, CRM refuses one, one waits
        act_as_connector(kafka, settings, commands, ["applied", "applied", "applied", "rejected", None])

        def settled() -> str | None:
            text = get(worker_metrics)
            if text is None or metric(text, "lienthong_events_processed_total", outcome="result") < 4:
                return None
            if metric(text, "kafka_consumergroup_lag_sum", consumergroup=settings.app_id) != 0:
                return None
            summary = orjson.loads(get(base + "/api/summary.json") or b"{}")
            health = summary.get("sync_health", {}).get(f"{tenant}/customer")
            connector_group = f"{settings.kafka.topic_prefix}lienthong-connector-crm"
            connector_lag = summary.get("lag", {}).get(f"{connector_group}/commands.crm")
            ready = health == {"in sync": 3, "pending": 1, "failing": 4} and connector_lag == connector_behind
            return text if ready and summary["lag_by_group"].get(settings.app_id) == 0 else None

        # five commands and the markers of the transactions that published them
        connector_behind = end_offsets(settings, kafka.name("commands.crm"))
        assert connector_behind >= 5
        wait_for("the worker and the page settled", settled, logs=logs)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(base + "/?refresh=0")
            # the picture first, so that a failing check below leaves it to look at
            artifacts = Path(os.environ.get("LIENTHONG_TEST_ARTIFACTS", REPO_ROOT / "var" / "test-artifacts"))
            artifacts.mkdir(parents=True, exist_ok=True)
            shot = artifacts / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\ndashboard screenshot: {shot}")
            worker_text = get(worker_metrics) or ""
            dashboard_text = get(base + "/metrics") or ""

            # lag per group and topic, as each service's /metrics says (topics there carry the prefix)
            lag = {(r["group"], r["topic"]): int(r["cells"][2]) for r in rows(page, "lag-row")}
            assert lag[(f"{settings.kafka.topic_prefix}lienthong-connector-crm", "commands.crm")] == connector_behind
            for (group, topic), shown in lag.items():
                name = settings.kafka.topic_prefix + topic
                assert shown == metric(dashboard_text, "kafka_consumergroup_lag_sum", consumergroup=group, topic=name)
                if group == settings.app_id:
                    assert shown == metric(worker_text, "kafka_consumergroup_lag_sum", consumergroup=group, topic=name)
            assert any(group == settings.app_id for group, _ in lag), lag

            # dead letters by reason: on the topic, and the worker's counter, with their messages
            letters = {(r["topic"], r["reason"]): r["cells"] for r in rows(page, "dlq-row")}
            assert int(letters[("dlq.cdc", "decode")][2]) == 2
            assert int(letters[("dlq.cdc", "schema_version")][2]) == 1
            for (topic, reason), cells in letters.items():
                counted = metric(worker_text, "lienthong_dead_letters_total", topic=topic, reason=reason)
                assert int(cells[2]) == counted and float(cells[3]) == counted
            messages = " ".join(" ".join(r["cells"]) for r in rows(page, "dlq-message"))
            assert f"{tenant}:BAD1" in messages and "schema_version" in messages

            # throughput: events processed by outcome, as the worker counts them
            processed = {r["outcome"]: float(r["cells"][1]) for r in rows(page, "processed-row")}
            assert processed["command"] == metric(worker_text, "lienthong_events_processed_total", outcome="command")
            assert processed["dead_letter"] == 3
            for outcome, shown in processed.items():
                assert shown == metric(worker_text, "lienthong_events_processed_total", outcome=outcome)

            # sync health of the tenant's customers; the refused one failing with CRM's words
            health = {(r["tenant"], r["entity"]): r["cells"][2:] for r in rows(page, "health-row")}
            assert health[(tenant, "customer")] == ["3", "1", "4"]  # in sync, pending, failing (A4, A9, BAD1, BAD2)
            records = rows(page, "record-row")
            failing = [r for r in records if r["status"] == "failing"]
            assert any("http_422: CRM refused: Phone is invalid" in r["cells"][4] for r in failing), records
            assert any("schema_version" in r["cells"][4] for r in failing), records  # A9, dead-lettered
            assert [r["cells"][2] for r in records if r["status"] == "pending"] == ["A5"]

            # latency of the applied commands, decided -> applied, three of them
            latency = [r for r in rows(page, "latency-row") if r["source"] == "topics"]
            assert [(r["target"], r["cells"][5]) for r in latency] == [("crm", "3")]

            # the charts are drawn
            for chart in ("chart-lag", "chart-throughput", "chart-latency"):
                assert page.locator(f'[data-testid="{chart}"] polyline').count() >= 1, chart

            # the refused record's link leads to its audit trail, with what became of the command
            page.click('[data-testid="record-row"][data-status="failing"] a:text-is("A4")')
            page.wait_for_selector('[data-testid="trail-row"]')
            assert page.inner_text('[data-testid="record-status"]') == "failing"
            assert page.inner_text('[data-testid="command-status"]') == "rejected"
            assert "CUS-6" in page.inner_text('[data-testid="audit-trail"]')
            page.screenshot(path=str(artifacts / "dashboard-record.png"), full_page=True)
            browser.close()
    finally:
        dashboard.stop()
        worker.stop()


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError):
        return None
