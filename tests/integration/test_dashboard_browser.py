"""The operator's page in a real headless browser (Debian's chromium driven by playwright), against a
running worker with traffic on the real broker: what it shows matches the services' /metrics.

The screenshots are saved in the test's tmp dir (or $LIENTHONG_TEST_ARTIFACTS when set), their path
printed (``pytest -s``) and attached to the test's report (``record_property``: ``--junitxml`` lists it).
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

from common.topic_wait import end_offsets
from streams.settings import WorkerSettings
from tests.integration.conftest import REPO_ROOT, Kafka, change_event, in_data_dir, stop_process

pytestmark = pytest.mark.broker

PAGE_URL = re.compile(r"the operator's page: (http://[0-9.]+:[0-9]+)/")
CHROMIUM = os.environ.get("LIENTHONG_CHROMIUM", "/usr/bin/chromium")
CHARTS = ("chart-lag", "chart-throughput", "chart-latency")
# skipped without chromium on a developer's machine; in CI (CI=true) a missing browser fails instead
NEEDS_CHROMIUM = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not os.environ.get("CI"),
    reason=f"no chromium at {CHROMIUM} (bash deploy/system-packages.sh installs it)",
)


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
        stop_process(self.process)
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


def summed_end(settings: WorkerSettings, topic: str) -> int:
    """The sum of the partitions' end offsets, as the broker reports them: what a group committed at
    0 lags by, as ``kafka-consumer-groups.sh --describe`` counts it. The worker publishes commands in
    transactions, so the commit markers take offsets too and this is more than the commands."""
    probe = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "lienthong-test-probe"})
    try:
        return sum(end_offsets(probe, [topic], 10).values())
    finally:
        probe.close()


def screenshots_dir(tmp_path: Path) -> Path:
    """Where the screenshots go: $LIENTHONG_TEST_ARTIFACTS when set (CI may keep it), else the test's tmp dir."""
    artifacts = Path(os.environ.get("LIENTHONG_TEST_ARTIFACTS") or tmp_path / "screenshots")
    artifacts.mkdir(parents=True, exist_ok=True)
    return artifacts


def rows(page, testid: str) -> list[dict]:
    """Every row of a table on the page: its data-* attributes and its cells' text."""
    return page.eval_on_selector_all(
        f'[data-testid="{testid}"]',
        "els => els.map(e => ({...e.dataset, cells: [...e.children].map(c => c.innerText.trim())}))",
    )


@NEEDS_CHROMIUM
def test_the_page_shows_what_the_services_measure(module_settings, kafka, tenant, tmp_path, record_property):
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
        connector_behind = summed_end(settings, kafka.name("commands.crm"))
        assert connector_behind >= 5
        wait_for("the worker and the page settled", settled, logs=logs)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto(base + "/?refresh=0")
            # the picture first, so that a failing check below leaves it to look at
            artifacts = screenshots_dir(tmp_path)
            artifacts.mkdir(parents=True, exist_ok=True)
            shot = artifacts / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\ndashboard screenshot: {shot}")
            record_property("screenshot", str(shot))
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
            assert any("http_422: CRM refused: Phone is invalid" in r["cells"][5] for r in failing), records
            assert any("schema_version" in r["cells"][5] for r in failing), records  # A9, dead-lettered
            assert [r["recordId"] for r in records if r["status"] == "pending"] == ["A5"]

            # latency of the applied commands, decided -> applied, three of them
            latency = [r for r in rows(page, "latency-row") if r["source"] == "topics"]
            assert [(r["target"], r["cells"][5]) for r in latency] == [("crm", "3")]

            # the charts are drawn
            for chart in CHARTS:
                assert page.locator(f'[data-testid="{chart}"] polyline').count() >= 1, chart

            # the overall status opens the page: four records failing, named first
            status = page.locator('[data-testid="overall-status"]')
            assert status.get_attribute("data-state") == "failing", status.inner_text()
            assert page.inner_text('[data-testid="status-headline"]').startswith("4 records failing")
            items = [t.strip() for t in page.locator('[data-testid="status-item"]').all_inner_texts()]
            assert any(t.startswith("4 records failing") for t in items), items
            assert any(t.startswith("1 record waiting for a result") for t in items), items
            box = status.bounding_box()
            first_chart = page.locator('[data-testid="chart-lag"]').bounding_box()
            assert box is not None and first_chart is not None and box["y"] < first_chart["y"]

            # a zero is not shown as a problem: only counts above zero are coloured as failing
            for cell in page.locator('[data-testid="health-row"] td[data-status="failing"]').all():
                bold = cell.evaluate("e => getComputedStyle(e).fontWeight") in ("700", "bold")
                assert bold == (cell.inner_text() != "0"), cell.inner_text()

            # the charts use the page's width, their legends are whole, their axes in human units
            width = page.evaluate("document.documentElement.clientWidth")
            charts = [page.locator(f'[data-testid="{c}"]').bounding_box() for c in CHARTS]
            assert sum(c["width"] for c in charts if c) > 0.85 * width, (charts, width)
            assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing runs off the page
            for chart in CHARTS:
                legend = page.locator(f'[data-testid="{chart}"] [data-testid="legend-item"]').all()
                assert legend, chart
                for item in legend:  # nothing cut: every item is as wide as its text needs
                    assert item.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), item.inner_text()
                ticks = page.locator(f'[data-testid="{chart}"] [data-testid="y-tick"]').all_text_contents()
                assert ticks[0] == "0" and not any(re.search(r"\de-\d", t) for t in ticks), (chart, ticks)
            latency_ticks = page.locator('[data-testid="chart-latency"] [data-testid="y-tick"]').all_text_contents()
            assert all(t == "0" or t.endswith((" ms", " s")) for t in latency_ticks), latency_ticks

            # two counts that may differ say why, next to them
            assert len(page.locator('[data-testid="why-differ"]').all()) == 2

            # a failing record is named by its business code, with the commands to explain and replay it
            refused = page.locator('[data-testid="record-row"][data-record-id="A4"]')
            assert refused.locator("a").inner_text() == "KH0004"
            assert refused.locator('[data-testid="explain-command"]').inner_text() == (
                f"lienthong explain {tenant} customer KH0004"
            )
            assert refused.locator('[data-testid="replay-command"]').inner_text() == (
                f"lienthong dlq replay --topic dlq.commands --tenant {tenant} --kind http_422"
            )
            unreadable = page.locator('[data-testid="record-row"][data-record-id="BAD1"]')
            assert unreadable.locator('[data-testid="replay-command"]').inner_text() == (
                f"lienthong dlq replay --topic dlq.cdc --tenant {tenant} --kind decode"
            )

            # the refused record's link leads to its audit trail, with what became of the command
            page.click('[data-testid="record-row"][data-status="failing"] a:text-is("KH0004")')
            page.wait_for_selector('[data-testid="trail-row"]')
            shot = artifacts / "dashboard-record.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"record page screenshot: {shot}")
            record_property("screenshot_record", str(shot))
            assert page.inner_text('[data-testid="record-title"]') == f"customer KH0004 of {tenant}"
            assert page.inner_text('[data-testid="record-id"]') == "A4"
            assert page.inner_text('[data-testid="record-status"]') == "failing"
            assert page.inner_text('[data-testid="command-status"]') == "rejected"
            assert "CUS-6" in page.inner_text('[data-testid="audit-trail"]')
            assert page.inner_text('[data-testid="replay-command"]').startswith(
                "lienthong dlq replay --topic dlq.commands"
            )
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


def call(url: str, body: object, headers: dict[str, str] | None = None) -> dict:
    """POST JSON, the answer's JSON."""
    request = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return orjson.loads(answer.read())


def start_sandbox(system: str, tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path, str, str | None]:
    """``lienthong sandbox SYSTEM --port 0`` as a user starts it: its address and the page link it prints."""
    log_path = tmp_path / f"{system}-sandbox.log"
    environment = {**os.environ, "LIENTHONG_DATA_DIR": str(tmp_path / system), **env}
    environment.pop("LIENTHONG_SANDBOX_ADMIN_TOKEN", None)  # made for the run, printed with its link
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "sandbox", system, "--port", "0"],
            cwd=REPO_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    printed = wait_for(
        f"the {system} sandbox's address",
        lambda: re.search(r"sandbox on (http://[0-9.]+:[0-9]+)/", log_path.read_text()),
        timeout=60,
        logs=[log_path],
    )
    link = re.search(r"the page with its buttons: (\S+)", log_path.read_text())
    return process, log_path, printed.group(1), link.group(1) if link else None


@NEEDS_CHROMIUM
def test_the_sandbox_pages_are_tables_and_the_accounting_buttons_act(tmp_path, record_property):
    from playwright.sync_api import sync_playwright

    tenant = "cty-sandbox"
    acct, acct_log, acct_url, link = start_sandbox(
        "acct",
        tmp_path,
        LIENTHONG_ACCT_APP_ID="app-test",
        LIENTHONG_SANDBOX_CREDENTIALS=orjson.dumps({"app-test:code-1": tenant}).decode(),
    )
    crm, _crm_log, crm_url, _ = start_sandbox(
        "crm",
        tmp_path,
        LIENTHONG_SANDBOX_CREDENTIALS=orjson.dumps({"client-1": tenant, "client-1:secret": "s3cret"}).decode(),
    )
    try:
        assert link is not None and link.startswith(acct_url + "/?token="), acct_log.read_text()
        # a connector's calls: a customer, a product and an order proposed for revenue
        answer = call(
            acct_url + "/api/oauth/actopen/connect",
            {"app_id": "app-test", "access_code": "code-1", "org_company_code": "CTY"},
        )
        act = {"X-MISA-AccessToken": orjson.loads(answer["Data"])["access_token"]}
        data = acct_url + "/apir/sync/actopen"
        long_name = "Công ty trách nhiệm hữu hạn thương mại và dịch vụ kỹ thuật số Sao Mai Phương Nam " * 2
        dictionary = [
            {"dictionary_type": 1, "account_object_code": "KH0001", "account_object_name": long_name.strip()},
            {"dictionary_type": 3, "inventory_item_code": "SP01", "inventory_item_name": "Bàn làm việc"},
        ]
        assert call(data + "/save_dictionary", {"app_id": "app-test", "dictionary": dictionary}, act)["Success"]
        proposal = {
            "org_refid": "order-1",
            "org_refno": "DH0001",
            "voucher_type": 3,
            "account_object_code": "KH0001",
            "detail": [{"inventory_item_code": "SP01", "quantity": 2, "unit_price": "1500000"}],
        }
        assert call(data + "/save", {"app_id": "app-test", "voucher": [proposal]}, act)["Success"]
        token = {"Authorization": f"Bearer {login_crm(crm_url)}", "Clientid": "client-1"}
        crm_customer = {"account_name": long_name.strip(), "account_number": "KH0001", "office_tel": "0901234567"}
        call(crm_url + "/api/v2/Customers", [crm_customer], token)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            artifacts = screenshots_dir(tmp_path)

            # without the token: the records, no button, and what to open instead
            page.goto(acct_url + "/")
            page.wait_for_selector('[data-testid="proposal"]')
            assert page.locator('[data-testid="generate"]').count() == 0
            assert "/?token=" in page.inner_text('[data-testid="needs-token"]')

            # the link the sandbox printed: the buttons appear, and act
            page.goto(link)
            assert "token" not in page.url  # exchanged for a cookie
            assert page.locator('[data-testid="needs-token"]').count() == 0
            shot = artifacts / "sandbox-acct.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\naccounting sandbox screenshot: {shot}")
            record_property("screenshot_acct_sandbox", str(shot))
            customers = rows(page, "dictionary-1")
            assert any("KH0001" in cells for cells in (r["cells"] for r in customers)), customers
            head = page.locator("h3:has-text('customers') + div th").all_inner_texts()
            assert "account_object_code" in head and "account_object_name" in head, head
            assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
            page.click('[data-testid="generate"][data-org-refid="order-1"]')
            page.wait_for_selector('[data-testid="voucher"]')
            assert page.url.rstrip("/") == acct_url
            assert rows(page, "proposal")[0]["cells"][0] == "generated"
            assert page.locator('[data-testid="generate"]').count() == 0
            voucher = page.inner_text('[data-testid="voucher"]')
            assert "SP01" in voucher and "KH0001" in voucher
            page.screenshot(path=str(artifacts / "sandbox-acct-generated.png"), full_page=True)
            # and the accountant deletes the voucher: gone from the page (ACT reports it by callback 22)
            page.click('[data-testid="delete-voucher"]')
            page.wait_for_selector('[data-testid="voucher"]', state="detached")
            assert page.url.rstrip("/") == acct_url

            # the CRM page: the customer as a row of fields, its long name wrapped inside the page
            page.goto(crm_url + "/")
            page.wait_for_selector('[data-testid="crm-Customers"]')
            shot = artifacts / "sandbox-crm.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"CRM sandbox screenshot: {shot}")
            record_property("screenshot_crm_sandbox", str(shot))
            head = page.locator("h3:has-text('Customers') + div th").all_inner_texts()
            assert head[:3] == ["id", "account_number", "modified_date"] and "account_name" in head, head
            cells = rows(page, "crm-Customers")[0]["cells"]
            assert cells[head.index("account_name")] == long_name.strip()
            assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
            browser.close()
    finally:
        for process in (acct, crm):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def login_crm(crm_url: str) -> str:
    return str(call(crm_url + "/api/v2/Account", {"client_id": "client-1", "client_secret": "s3cret"})["data"])
