"""The image's promise (deploy/Dockerfile; docs/deploy.md, "The image"): every service runs on a
read-only root filesystem, writing only to its data directory (/data: its volume and the working
directory) and /tmp. Each `lienthong` command the manifests run is started here in a mount namespace
of its own where the whole filesystem is read-only but a fresh /tmp (tmpfs, as the pods' emptyDir),
with the data directory and the working directory inside it, and must do its work there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.settings import WorkerSettings
from tests.integration.conftest import REPO_ROOT, change_event, stop_process
from tests.integration.test_health import free_port, http_get, value

pytestmark = pytest.mark.broker

# the filesystem as the pod sees it: / read-only, /tmp in memory, the data directory the working directory
# (a checkout under /tmp, as CI's clean clone may be, is bound back into the fresh /tmp: $KEEP)
READ_ONLY_ROOT = (
    "mount --make-rprivate / && mount --bind /tmp /mnt && mount -o remount,bind,ro /"
    " && mount -t tmpfs -o size=256m tmpfs /tmp"
    ' && for kept in $KEEP; do mkdir -p "$kept" && mount --bind "/mnt${kept#/tmp}" "$kept"; done'
    ' && mkdir /tmp/data && cd /tmp/data && exec "$0" -m cli "$@"'
)
# what must stay visible under /tmp: this checkout (its code and its .venv), when it lives there
KEEP = " ".join(str(p) for p in {REPO_ROOT, Path(sys.executable).parent.parent} if str(p).startswith("/tmp/"))


def read_only_root_available() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount --make-rprivate / && mount -o remount,bind,ro /"],
            capture_output=True,
            timeout=10,
        )
    except FileNotFoundError:
        return False
    return probe.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def mount_namespaces() -> None:
    if not read_only_root_available():
        if os.environ.get("CI") == "true":
            pytest.fail("unshare -m cannot remount / read-only here (needs root): CI runs as root")
        pytest.skip("unshare -m cannot remount / read-only here (needs root)")


class ReadOnlyService:
    """``lienthong <argv>`` with a read-only root filesystem; its log in ``log`` (opened outside)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = open(log, "wb")  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", READ_ONLY_ROOT, sys.executable, *argv],
            env={
                **os.environ,
                "PYTHONPATH": str(REPO_ROOT),  # this checkout's code, as the image's installed wheel
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": "/tmp",
                "LIENTHONG_DATA_DIR": "/tmp/data",
                "KEEP": KEEP,
                "LIENTHONG_LOG_FORMAT": "json",
                **env,
            },
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def get_until(self, url: str, done: Callable[[int, str], bool], timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.tail()}")
            answer = http_get(url)
            if answer is not None and done(answer.status_code, answer.text):
                return answer.text
            time.sleep(0.2)
        raise AssertionError(f"{url} never answered as the test waits for:\n{self.tail()}")

    def stop(self) -> int:
        stop_process(self.process)
        self.log.close()
        assert "Read-only file system" not in self.log_path.read_text(errors="replace"), self.tail()
        return self.process.returncode


@pytest.fixture()
def kafka_env(module_settings: WorkerSettings) -> dict[str, str]:
    return {
        "LIENTHONG_BOOTSTRAP_SERVERS": module_settings.kafka.bootstrap_servers,
        "LIENTHONG_TOPIC_PREFIX": module_settings.kafka.topic_prefix,
    }


@pytest.fixture()
def services(tmp_path) -> Iterator[list[ReadOnlyService]]:
    started: list[ReadOnlyService] = []
    yield started
    for service in reversed(started):
        service.stop()


def test_the_worker_decides_on_a_read_only_root(module_settings, kafka, kafka_env, services, tmp_path, tenant):
    port = free_port()
    env = {
        **kafka_env,
        "LIENTHONG_APP_ID": module_settings.app_id,
        "LIENTHONG_TOPIC_PARTITIONS": str(module_settings.topic_partitions),
        "LIENTHONG_STORE": "rocksdb://",
        "LIENTHONG_WEB_ENABLED": "true",
        "LIENTHONG_WEB_PORT": str(port),
    }
    worker = ReadOnlyService(["worker"], env, tmp_path / "worker.log")
    services.append(worker)
    worker.get_until(f"http://127.0.0.1:{port}/readyz", lambda status, _: status == 200)
    event = change_event(tenant, "acct", "customer", {"id": "A1", "code": "KH0001", "name": "Công ty ABC"})
    kafka.produce("cdc.acct.customer", event, key=f"{tenant}:A1")
    # decided, its state in RocksDB under the data directory, its transaction committed
    worker.get_until(
        f"http://127.0.0.1:{port}/metrics",
        lambda _, text: value(text, "lienthong_commands_emitted_total", target="crm", rule="CUS-6") >= 1,
    )
    assert worker.stop() == 0


def test_the_other_services_start_and_serve_on_a_read_only_root(kafka_env, services, tmp_path, tenant):
    ports = {name: free_port() for name in ("connector", "capture", "webhooks", "dashboard")}
    crm = {
        **kafka_env,
        "LIENTHONG_CRM_URL": f"http://127.0.0.1:{free_port()}",  # nothing there: alive, not ready
        "LIENTHONG_CRM_CREDENTIALS": json.dumps({tenant: {"client_id": "c", "client_secret": "s"}}),
    }
    commands = {
        "connector": (["connector", "crm"], {**crm, "LIENTHONG_CRM_CONNECTOR_PORT": str(ports["connector"])}),
        "capture": (["capture", "crm"], {**crm, "LIENTHONG_CRM_CAPTURE_PORT": str(ports["capture"])}),
        "webhooks": (
            ["webhooks", "--port", str(free_port())],
            {
                **kafka_env,
                "LIENTHONG_WEBHOOK_METRICS_PORT": str(ports["webhooks"]),
                "LIENTHONG_WEBHOOK_SECRETS": json.dumps({f"crm:{tenant}": "a-webhook-secret-of-the-test"}),
            },
        ),
        "dashboard": (
            ["dashboard", "--port", str(ports["dashboard"])],
            {**kafka_env, "LIENTHONG_DASHBOARD_TOKEN": "a-token-of-at-least-16-characters"},
        ),
    }
    for name, (argv, env) in commands.items():
        services.append(ReadOnlyService(argv, env, tmp_path / f"{name}.log"))
    for service, port in zip(services, ports.values(), strict=True):
        # each has opened what it keeps (ledgers, watermarks, the webhooks' versions) and serves
        service.get_until(f"http://127.0.0.1:{port}/healthz", lambda status, _: status == 200)
    topics = subprocess.run(
        ["unshare", "-m", "sh", "-c", READ_ONLY_ROOT, sys.executable, "topics", "create"],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": "/tmp",
            "KEEP": KEEP,
            **kafka_env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert topics.returncode == 0, topics.stdout + topics.stderr
    for service in services:
        assert service.stop() == 0, service.tail()
