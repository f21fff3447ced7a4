"""Rough edges a new user met (issue 12, item 7): one broker port for everything, the demo on any broker
that answers, one credentials layout for a sandbox and its connector, ``sandbox --port 0``, and the
demo's summary counting only its own tenant's commands of this run."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import aiohttp
import pytest
from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmClient, CrmCredentials
from cli.main import main
from common.settings import KafkaSettings
from demo.run import DemoFailed, _ensure_broker_and_topics, end_offsets, tenant_counts
from demo.settings import DemoSettings
from ops.admin import delete_topics_with_prefix
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.broker


def test_the_local_broker_port_alone_drives_every_service_and_a_mismatch_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("LIENTHONG_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("LIENTHONG_KAFKA_PORT", "19993")
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:19993"
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:19993")
    assert KafkaSettings().bootstrap_servers == "127.0.0.1:19993"  # saying both, the same: fine
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    assert main(["lag"]) == 2
    said = capsys.readouterr().err
    assert "LIENTHONG_KAFKA_PORT=19993 but LIENTHONG_BOOTSTRAP_SERVERS=127.0.0.1:9092" in said
    assert "Set only LIENTHONG_KAFKA_PORT" in said and "Traceback" not in said
    monkeypatch.setenv("LIENTHONG_BOOTSTRAP_SERVERS", "kafka.example.com:9092")  # a remote cluster: no local port
    assert KafkaSettings().bootstrap_servers == "kafka.example.com:9092"


def test_the_demo_uses_a_broker_that_answers_whoever_started_it(bootstrap, monkeypatch, tmp_path, capsys):
    # a cache dir of its own: kafka.sh knows no broker there, and would refuse the taken port
    monkeypatch.setenv("LIENTHONG_CACHE_DIR", str(tmp_path / "other-cache"))
    prefix = f"demo-{uuid.uuid4().hex[:8]}."
    settings = DemoSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix), topic_partitions=1)
    try:
        _ensure_broker_and_topics(settings)
        said = capsys.readouterr().out
        assert f"using the Kafka broker at {bootstrap}" in said and "created" in said
    finally:
        delete_topics_with_prefix(settings.kafka, prefix)
    with pytest.raises(DemoFailed, match=r"no Kafka broker answers at nowhere\.invalid:9092.*loopback"):
        _ensure_broker_and_topics(DemoSettings(kafka=KafkaSettings(bootstrap_servers="nowhere.invalid:9092")))


class Sandbox:
    """``lienthong sandbox SYSTEM --port 0`` as a user starts it: the URL is the first line it prints."""

    def __init__(self, system: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "sandbox", system, "--port", "0"],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        lines = [self.process.stdout.readline()]
        while lines[-1] and not lines[-1].startswith(f"{system} sandbox on") and len(lines) < 50:
            lines.append(self.process.stdout.readline())  # log lines, when logs go to stdout
        line = lines[-1]
        assert line.startswith(f"{system} sandbox on http://127.0.0.1:"), line
        self.url = line.split(" on ", 1)[1].strip().rstrip("/")
        assert not self.url.endswith(":0") and not self.url.endswith(":8081") and not self.url.endswith(":8082")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


async def test_a_sandbox_on_a_free_port_accepts_the_connectors_credentials_layout(tmp_path):
    env = {
        "LIENTHONG_DATA_DIR": str(tmp_path),
        "LIENTHONG_CRM_CREDENTIALS": '{"cty-abc": {"client_id": "app-abc", "client_secret": "s3cret"}}',
        "LIENTHONG_ACCT_APP_ID": "lienthong-app",
        "LIENTHONG_ACCT_CREDENTIALS": '{"cty-abc": {"access_code": "acc3ss", "org_company_code": "0101"}}',
        "LIENTHONG_SANDBOX_CREDENTIALS": "{}",
    }
    crm_sandbox, acct_sandbox = Sandbox("crm", env), Sandbox("acct", env)
    try:
        async with aiohttp.ClientSession() as session:
            crm = CrmClient(
                crm_sandbox.url + "/api/v2", session, {"cty-abc": CrmCredentials("app-abc", SecretStr("s3cret"))}
            )
            assert await crm.list_page("cty-abc", "Customers", 1) == []
            act = ActClient(
                acct_sandbox.url, session, "lienthong-app", {"cty-abc": ActCredentials(SecretStr("acc3ss"), "0101")}
            )
            assert await act.get_dictionary("cty-abc", 1) == []
    finally:
        crm_sandbox.stop()
        acct_sandbox.stop()


def test_the_demo_summary_counts_only_its_tenants_messages_of_this_run(kafka, module_settings):
    mine, other = f"mine-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    kafka.produce("commands.crm", b"{}", key=f"{mine}:customer:OLD")  # an earlier run
    marks = end_offsets(module_settings.kafka)
    for n in range(2):
        kafka.produce("commands.crm", b"{}", key=f"{mine}:customer:KH{n}")
    for n in range(3):
        kafka.produce("commands.crm", b"{}", key=f"{other}:customer:KH{n}")
    kafka.produce("commands.acct", b"{}", key=f"{other}:sale_order:DH1")
    kafka.produce("dlq.cdc", b"not json", key=f"{mine}:x")
    assert tenant_counts(module_settings.kafka, mine, marks) == {
        "commands.crm": 2,
        "commands.acct": 0,
        "dlq.cdc": 1,
        "dlq.commands": 0,
    }
