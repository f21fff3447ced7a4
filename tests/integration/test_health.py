"""/metrics, /healthz and /readyz of the services, on the real broker, as an operator's probes see them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings
from tests.integration.conftest import REPO_ROOT, change_event

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

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            {
                "LIENTHONG_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
                "LIENTHONG_APP_ID": settings.app_id,
                "LIENTHONG_TOPIC_PREFIX": settings.topic_prefix,
                "LIENTHONG_TOPIC_PARTITIONS": str(settings.topic_partitions),
                "LIENTHONG_DATA_DIR": str(settings.data_dir),
                "LIENTHONG_WEB_ENABLED": "true",
                "LIENTHONG_WEB_PORT": str(self.port),
                "LIENTHONG_COMMIT_INTERVAL": "0.5",
            }
        )
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
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
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


@pytest.fixture()
def probed_worker(module_settings: Settings, tmp_path):
    worker = WorkerWithProbes(module_settings.model_copy(update={"data_dir": tmp_path / "data"}), tmp_path / "w.log")
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

    def counted(answer: Answer) -> bool:
        text = answer.text
        return (
            value(text, "lienthong_events_processed_total", outcome="dead_letter") >= 1
            and value(text, "lienthong_events_processed_total", outcome="duplicate") >= 1
            and value(text, "lienthong_batch_size_count") >= 1
        )

    worker.probe_until("/metrics", counted, timeout=60)
    time.sleep(1)  # nothing more should come
    text = worker.get("/metrics").text
    command = {"system": "acct", "entity": "customer", "rule": "CUS-6", "outcome": "command"}
    assert value(text, "lienthong_events_processed_total", **command) == 1
    assert value(text, "lienthong_events_processed_total", system="acct", entity="customer", outcome="duplicate") == 1
    assert value(text, "lienthong_events_processed_total", system="acct", entity="customer", outcome="dead_letter") == 1
    assert value(text, "lienthong_commands_emitted_total", target="crm", rule="CUS-6") == 1
    assert value(text, "lienthong_dead_letters_total", topic="dlq.cdc", reason="decode") == 1
    assert value(text, "lienthong_batch_size_count") >= 1
    assert value(text, "lienthong_batch_size_sum") == 3
    assert value(text, "lienthong_rebalances_total", service="worker") >= 1
    # the worker's own group lag, as kafka_exporter names it: all read, once its offsets are committed
    lag = worker.probe_until(
        "/metrics",
        lambda answer: (
            value(
                answer.text,
                "kafka_consumergroup_lag",
                consumergroup=module_settings.app_id,
                topic=kafka.name("cdc.acct.customer"),
            )
            == 0
            and samples(answer.text, "kafka_consumergroup_lag_sum")
        ),
        timeout=30,
    )[-1].text
    assert value(lag, "kafka_consumergroup_lag_sum", consumergroup=module_settings.app_id) == 0
