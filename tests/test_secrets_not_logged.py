"""Secrets set in the environment appear in no log line, no output and no repr of the settings.

Every secret setting gets a recognizable value; the services run with debug logging; what they wrote
is searched for those values. (The SASL password is checked the same way on the SASL_SSL broker, in
tests/integration/test_security.py, whose worker logs in with it.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from capture.settings import WebhookSettings
from cli.settings_doc import services
from common.kafka_config import describe_connection
from common.names import System
from common.settings import KafkaSettings, read_settings
from connectors.settings import ConnectorServiceSettings
from ops.settings import OpsSettings
from sandboxes.settings import SandboxSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SENTINELS = {
    "crm": "crm-secret-7f3a91",
    "access": "acct-access-code-52be0c",
    "webhook": "webhook-hmac-9d41aa",
    "sasl": "sasl-password-c0ffee",
    "key": "tls-key-password-beef42",
    "legacy-crm": "legacy-crm-secret-31d7e0",
    "legacy-acct": "legacy-connection-code-a8c4d2",
    "sandbox-crm": "sandbox-crm-secret-6b0f19",
    "sandbox-access": "sandbox-access-code-e27d55",
    "admin": "sandbox-admin-token-4c9e7b",
    "app-id": "partner-app-id-1e9d0f",  # sent in clear by ACT, yet the key of its callback signature
    "callback": "callback-path-secret-of-cty-a-77ab20",
}


def secret_env(tmp_path: Path) -> dict[str, str]:
    return {
        "LIENTHONG_CRM_CREDENTIALS": json.dumps({"cty-a": {"client_id": "app-1", "client_secret": SENTINELS["crm"]}}),
        "LIENTHONG_ACCT_APP_ID": SENTINELS["app-id"],
        "LIENTHONG_ACCT_CREDENTIALS": json.dumps(
            {
                "cty-a": {
                    "access_code": SENTINELS["access"],
                    "org_company_code": "0101",
                    "callback_secret": SENTINELS["callback"],
                }
            }
        ),
        "LIENTHONG_WEBHOOK_SECRETS": json.dumps({"crm:cty-a": SENTINELS["webhook"]}),
        # the older layout, for tenants the two variables above do not name
        "LIENTHONG_CONNECTOR_CREDENTIALS": json.dumps(
            {
                "cty-b": {"client_id": "app-2", "client_secret": SENTINELS["legacy-crm"]},
                "cty-c": {"app_id": SENTINELS["app-id"], "connection_code": SENTINELS["legacy-acct"]},
            }
        ),
        "LIENTHONG_SANDBOX_ADMIN_TOKEN": SENTINELS["admin"],
        "LIENTHONG_DATA_DIR": str(tmp_path / "data"),
        "LIENTHONG_LOG_LEVEL": "debug",
        "LIENTHONG_CRM_URL": "http://127.0.0.1:9",  # nothing listens: the services log their failures
        "LIENTHONG_ACCT_URL": "http://127.0.0.1:9",
    }


def assert_no_secret(text: str) -> None:
    leaked = [name for name, value in SENTINELS.items() if value in text]
    assert not leaked, f"secrets {leaked} appear in: ...{text[-3000:]}"


def test_the_settings_never_show_a_secret(tmp_path, monkeypatch):
    for name, value in secret_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    kafka = KafkaSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="lienthong",
        kafka_sasl_password=SecretStr(SENTINELS["sasl"]),
        kafka_ssl_key_password=SecretStr(SENTINELS["key"]),
    )
    webhooks = read_settings(WebhookSettings, kafka=kafka)
    assert webhooks.webhook_secrets["crm:cty-a"].get_secret_value() == SENTINELS["webhook"]  # read, but hidden:
    for service in services():  # every service's settings, the Kafka block with its secrets held by those with one
        settings = read_settings(service, **({"kafka": kafka} if "kafka" in service.model_fields else {}))
        assert_no_secret(repr(settings) + str(settings) + settings.model_dump_json() + describe_connection(kafka))


def sandbox_logins(system: str) -> str:
    """LIENTHONG_SANDBOX_CREDENTIALS in a sandbox's own layout (the access code is part of a key)."""
    if system == "crm":
        return json.dumps({"app-9": "cty-a", "app-9:secret": SENTINELS["sandbox-crm"]})
    return json.dumps({f"{SENTINELS['app-id']}:{SENTINELS['sandbox-access']}": "cty-a"})


@pytest.mark.parametrize("system", list(System))
def test_the_older_and_the_sandbox_credentials_are_read_but_never_shown(tmp_path, monkeypatch, system):
    from amis.credentials import acct_credentials, crm_credentials
    from cli.main import sandbox_credentials

    for name, value in secret_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LIENTHONG_SANDBOX_CREDENTIALS", sandbox_logins(system))
    connector, sandbox = read_settings(ConnectorServiceSettings), read_settings(SandboxSettings)
    for settings in (connector, sandbox):
        assert_no_secret(
            repr(settings) + str(settings) + settings.model_dump_json() + describe_connection(connector.kafka)
        )
    # read where they are used, in their documented layouts:
    assert crm_credentials(connector.amis)["cty-b"].client_secret.get_secret_value() == SENTINELS["legacy-crm"]
    assert acct_credentials(connector.amis)["cty-c"].access_code.get_secret_value() == SENTINELS["legacy-acct"]
    assert sandbox_credentials(sandbox, system) == json.loads(sandbox_logins(system))
    assert sandbox.sandbox_admin_token is not None
    assert sandbox.sandbox_admin_token.get_secret_value() == SENTINELS["admin"]


def test_a_malformed_sandbox_credentials_is_reported_without_its_value(monkeypatch):
    monkeypatch.setenv("LIENTHONG_SANDBOX_CREDENTIALS", '{"app-9:secret": ["' + SENTINELS["sandbox-crm"] + '"]}')
    with pytest.raises(ValueError) as raised:
        SandboxSettings()
    assert "LIENTHONG_SANDBOX_CREDENTIALS must be a JSON object of strings" in str(raised.value)
    assert_no_secret(str(raised.value))


def test_an_invalid_setting_is_reported_without_the_secrets_beside_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LIENTHONG_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LIENTHONG_KAFKA_SASL_PASSWORD", SENTINELS["sasl"])
    monkeypatch.setenv("LIENTHONG_WEBHOOK_SECRETS", json.dumps({"crm:cty-a": SENTINELS["webhook"]}))
    with pytest.raises(ValueError) as raised:
        WebhookSettings()
    assert "LIENTHONG_KAFKA_SASL_USERNAME" in str(raised.value)
    assert_no_secret(str(raised.value))


def run_for(args: list[str], env: dict[str, str], seconds: float, ready: bytes | None = None) -> str:
    """Run ``lienthong ARGS`` for ``seconds`` (or until ``ready`` appears, then 3 s more); its output."""
    log = Path(env["LIENTHONG_DATA_DIR"]).parent / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and process.poll() is None:
            if ready is not None and ready in log.read_bytes():
                deadline = min(deadline, time.monotonic() + 3)
                ready = None
            time.sleep(0.2)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    return log.read_text(errors="replace")


@pytest.mark.broker
def test_services_running_with_secrets_log_none_of_them(tmp_path):
    prefix = f"secrets-{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        **secret_env(tmp_path),
        "LIENTHONG_TOPIC_PREFIX": prefix,
        "LIENTHONG_APP_ID": f"{prefix}lienthong",
        "LIENTHONG_STORE": "memory://",
        "LIENTHONG_WEB_ENABLED": "false",
        "LIENTHONG_CAPTURE_POLL_INTERVAL": "0.5",
    }
    from ops.admin import create_topics, delete_topics_with_prefix

    settings = OpsSettings(kafka=KafkaSettings(topic_prefix=prefix))
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    try:
        worker = run_for(["worker"], env, 60, ready=b"Worker ready")
        assert "Worker ready" in worker
        capture = run_for(["capture", "crm"], {**env, "LIENTHONG_CRM_CAPTURE_PORT": "0"}, 8)
        connector = run_for(["connector", "acct"], {**env, "LIENTHONG_ACCT_CONNECTOR_PORT": "0"}, 6)
        webhooks = run_for(["webhooks", "--port", "0"], env, 5)
        sandboxes = [
            run_for(
                ["sandbox", system, "--port", "0"],
                {**env, "LIENTHONG_SANDBOX_CREDENTIALS": sandbox_logins(system)},
                20,
                ready=b"sandbox on http",
            )
            for system in ("crm", "acct")
        ]
    finally:
        delete_topics_with_prefix(settings.kafka, prefix)
    assert all("sandbox on http" in output for output in sandboxes)
    for output in (worker, capture, connector, webhooks, *sandboxes):
        assert output.strip()  # each said something (debug logging), and none of it a secret
        assert_no_secret(output)
