"""The monitoring files against what the services really export: a worker, a CRM connector, a CRM
capture service (against a CRM sandbox) and the webhook receiver run as `lienthong` commands on the real
broker, do some work, and their /metrics are scraped. Every metric the alert rules, their promtool unit
tests (deploy/monitoring/alerts.test.yml) and the Grafana dashboard read must be in those scrapes, and
the labels the unit tests give a series must be those the service exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import WorkerSettings
from tests.integration.conftest import REPO_ROOT, change_event, stop_process
from tests.integration.test_health import WorkerWithProbes, free_port, http_get
from tests.test_deploy import MONITORING, promql_metric_names

pytestmark = pytest.mark.broker

# Prometheus makes `up` itself, for every target: no service exports it
MADE_BY_PROMETHEUS = {"up"}
# the labels Prometheus gives every series of a target (prometheus.yml, the PodMonitor)
TARGET_LABELS = {"job", "instance", "namespace", "service"}


class Service:
    """A `lienthong` command in a subprocess, its /metrics on ``port``."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port, self.log_path = port, log
        self.log = open(log, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", *argv],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def scrape_until(self, done: Callable[[str], bool], timeout: float = 90.0) -> str:
        deadline, text = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            answer = http_get(f"http://127.0.0.1:{self.port}/metrics")
            if answer is not None and answer.status_code == 200:
                text = answer.text
                if done(text):
                    return text
            time.sleep(0.2)
        raise AssertionError(
            f"/metrics never had what the test waits for:\n{text[-2000:]}\n{self.log_path.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def series(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets of its samples; a family declared without samples (a labelled
    metric nothing has moved yet) under the names Prometheus would give its samples, with none."""
    found: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        names = {
            "counter": [f"{family.name}_total"],
            "histogram": [f"{family.name}_{part}" for part in ("bucket", "sum", "count")],
        }.get(family.type, [family.name])
        for name in names:
            found.setdefault(name, [])
        for sample in family.samples:
            found.setdefault(sample.name, []).append(dict(sample.labels))
    return found


def has(text: str, name: str, **labels: str) -> bool:
    return any(all(s.get(k) == v for k, v in labels.items()) for s in series(text).get(name, []))


@pytest.fixture(scope="module")
def scrapes(module_settings: WorkerSettings, kafka, tmp_path_factory) -> Iterator[dict[str, str]]:
    """job (as prometheus.yml names it) -> a /metrics of that service after it did its work."""
    tmp = tmp_path_factory.mktemp("deploy-metrics")
    tenant = f"tenant-{os.getpid()}-{int(time.time())}"
    credentials = json.dumps({tenant: {"client_id": "app-crm", "client_secret": "s3"}})
    kafka_env = {
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
        "LIENTHONG_LOG_FORMAT": "json",
    }
    sandbox_port = free_port()
    services: list[Service | WorkerWithProbes] = []
    try:
        sandbox = Service(
            ["sandbox", "crm", "--port", str(sandbox_port)],
            {"LIENTHONG_CRM_CREDENTIALS": credentials, "LIENTHONG_DATA_DIR": str(tmp / "sandbox")},
            sandbox_port,
            tmp / "sandbox.log",
        )
        services.append(sandbox)
        sandbox.scrape_until(lambda text: True)  # it answers
        crm = {
            **kafka_env,
            "LIENTHONG_CRM_URL": f"http://127.0.0.1:{sandbox_port}",
            "LIENTHONG_CRM_CREDENTIALS": credentials,
            "LIENTHONG_DATA_DIR": str(tmp / "crm"),
            "LIENTHONG_CAPTURE_POLL_INTERVAL": "1",
        }
        worker = WorkerWithProbes(module_settings, tmp / "worker.log")
        services.append(worker)
        connector_port, capture_port, webhooks_port = free_port(), free_port(), free_port()
        connector = Service(
            ["connector", "crm"],
            {**crm, "LIENTHONG_CRM_CONNECTOR_PORT": str(connector_port)},
            connector_port,
            tmp / "connector.log",
        )
        capture = Service(
            ["capture", "crm"],
            {**crm, "LIENTHONG_CRM_CAPTURE_PORT": str(capture_port)},
            capture_port,
            tmp / "capture.log",
        )
        webhooks = Service(
            ["webhooks", "--port", str(free_port())],
            {
                **kafka_env,
                "LIENTHONG_DATA_DIR": str(tmp / "webhooks"),
                "LIENTHONG_WEBHOOK_METRICS_PORT": str(webhooks_port),
            },
            webhooks_port,
            tmp / "webhooks.log",
        )
        services += [connector, capture, webhooks]
        # work for each: a customer from accounting (a command to CRM, applied by the connector), a
        # message that is no change event (a dead letter)
        good = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC"})
        kafka.produce("cdc.acct.customer", good, key=f"{tenant}:A1")
        kafka.produce("cdc.acct.customer", b"not json", key=f"{tenant}:BAD")
        worker_text = worker.probe_until(
            "/metrics",
            lambda answer: (
                has(answer.text, "lienthong_events_processed_total", outcome="command")
                and has(answer.text, "lienthong_dead_letters_total", topic="dlq.cdc")
                and has(answer.text, "kafka_consumergroup_lag_sum", consumergroup=module_settings.app_id)
            ),
            timeout=90,
        )[-1].text
        yield {
            "lienthong-worker": worker_text,
            "lienthong-connector": connector.scrape_until(
                lambda t: (
                    has(t, "lienthong_connector_results_total", target="crm", status="applied")
                    and has(t, "lienthong_token_renewals_total", system="crm", outcome="ok")
                )
            ),
            "lienthong-capture": capture.scrape_until(
                lambda t: has(t, "lienthong_capture_last_poll_timestamp_seconds", system="crm")
            ),
            "lienthong-webhooks": webhooks.scrape_until(lambda t: True),
        }
    finally:
        for service in reversed(services):
            service.stop()


def alert_metric_names() -> set[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return {name for group in groups for rule in group["rules"] for name in promql_metric_names(rule["expr"])}


def unit_test_series() -> list[tuple[str, dict[str, str]]]:
    """(metric name, labels) of every input series of alerts.test.yml."""
    found = []
    for test in yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]:
        for item in test["input_series"]:
            name, _, rest = item["series"].partition("{")
            labels = dict(pair.split("=", 1) for pair in (p.strip() for p in rest.rstrip("}").split(",")) if pair)
            found.append((name, {key: value.strip('"') for key, value in labels.items()}))
    return found


def test_the_alert_rules_and_their_unit_tests_read_what_the_services_export(scrapes):
    exported = {name: samples for text in scrapes.values() for name, samples in series(text).items()}
    used = alert_metric_names() | {name for name, _ in unit_test_series()}
    assert used - MADE_BY_PROMETHEUS, "the rules read metrics"
    missing = sorted(used - MADE_BY_PROMETHEUS - exported.keys())
    assert not missing, f"read by alerts.yml or alerts.test.yml, exported by no service: {missing}"
    worker = series(scrapes["lienthong-worker"])
    assert "kafka_consumergroup_lag_sum" in worker and "lienthong_dead_letters_total" in worker
    # a unit test's series has the labels the service of its job gives that metric
    for name, labels in unit_test_series():
        if name in MADE_BY_PROMETHEUS:
            continue
        scraped = series(scrapes[labels["job"]])
        assert scraped.get(name), f"{labels['job']} exports no sample of {name} (alerts.test.yml says it does)"
        label_names = {key for sample in scraped[name] for key in sample}
        given = set(labels) - TARGET_LABELS
        assert given <= label_names, (
            f"alerts.test.yml gives {name} the labels {sorted(given)}; {labels['job']} exports {sorted(label_names)}"
        )


def test_every_metric_the_grafana_dashboard_reads_is_exported(scrapes):
    exported = {name for text in scrapes.values() for name in series(text)}
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "lienthong.json").read_text())
    read = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in promql_metric_names(target["expr"].replace("$__range", "1h"))
    }
    assert len(read) > 10
    missing = sorted(read - MADE_BY_PROMETHEUS - exported)
    assert not missing, f"the dashboard reads metrics no service exports: {missing}"
