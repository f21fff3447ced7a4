"""Secrets set in the environment appear in no log line, no output and no repr of the settings.

Every secret setting gets a recognizable value; the services run with debug logging and are called
the way users and attackers call them (a page opened with ``/?token=<admin token>``, a POST carrying
``?token=``, a bearer token, ACT's callbacks and webhooks with secrets in the query or the path);
what they wrote, access logs included, is searched for those values. (The SASL password is checked
the same way on the SASL_SSL broker, in tests/integration/test_security.py, whose worker logs in with
it.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
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
    "dashboard": "dashboard-token-canary-5a0e61",
    "ledger": "ledger-token-canary-3b7d90",
}


def secret_env(tmp_path: Path) -> dict[str, str]:
    return {
        "LIENTHONG_CRM_CREDENTIALS": json.dumps({"cty-a": {"client_id": "app-1", "client_secret": SENTINELS["crm"]}}),
        "LIENTHONG_ACCT_APP_ID": SENTINELS["app-id"],  # also the key ACT signs its callbacks with
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
        "LIENTHONG_DASHBOARD_TOKEN": SENTINELS["dashboard"],
        "LIENTHONG_LEDGER_TOKEN": SENTINELS["ledger"],
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    """One request as a browser or a script sends it (redirects not followed); its status."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except (urllib.error.URLError, OSError) as failed:
        raise AssertionError(f"{method} {url.split('?')[0]}: {failed}") from None


def run_for(
    args: list[str],
    env: dict[str, str],
    seconds: float,
    ready: bytes | None = None,
    exercise: Callable[[], None] | None = None,
) -> str:
    """Run ``lienthong ARGS`` for ``seconds`` (or until ``ready`` appears, then ``exercise()`` and 3 s
    more); its output."""
    log = Path(env["LIENTHONG_DATA_DIR"]).parent / f"{args[0]}-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and process.poll() is None:
                if ready is not None and ready in log.read_bytes():
                    ready = None
                    if exercise is not None:
                        exercise()
                    deadline = min(deadline, time.monotonic() + 3)
                time.sleep(0.2)
            assert ready is None or exercise is None, f"lienthong {' '.join(args)} never said {ready!r}: {log}"
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
    return log.read_text(errors="replace")


def with_secrets(url: str) -> list[str]:
    """``url`` carrying every secret in its query, as a careless (or hostile) caller sends them."""
    return [f"{url}?token={value}" for value in SENTINELS.values()] + [f"{url}?app_id={SENTINELS['app-id']}"]


def exercise_sandbox(system: str, port: int) -> Callable[[], None]:
    base, admin = f"http://127.0.0.1:{port}", SENTINELS["admin"]

    def run() -> None:
        assert call(f"{base}/?token={admin}") == 303  # the page's link: exchanged for a cookie
        assert call(f"{base}/?token=the-wrong-token-{SENTINELS['dashboard']}") == 200
        bearer = {"Authorization": f"Bearer {admin}"}
        control = "/sandbox/expire-tokens" if system == "acct" else "/sandbox/revoke-tokens"
        assert call(f"{base}{control}?token={admin}", method="POST", headers=bearer) == 200
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        assert (
            call(f"{base}{control}?token={admin}", method="POST", headers=form, data=f"token={admin}".encode()) == 200
        )
        for url in with_secrets(f"{base}/metrics"):
            call(url)
        if system == "acct":  # a connect with the app id and access code, right and wrong
            for code in (SENTINELS["sandbox-access"], SENTINELS["access"]):
                body = {"app_id": SENTINELS["app-id"], "access_code": code, "org_company_code": "0101"}
                call(
                    f"{base}/api/oauth/actopen/connect",
                    method="POST",
                    headers={"Content-Type": "application/json"},
                    data=json.dumps(body).encode(),
                )
        else:
            body = {"client_id": "app-9", "client_secret": SENTINELS["sandbox-crm"]}
            call(
                f"{base}/api/v2/Account?client_secret={SENTINELS['crm']}",
                method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps(body).encode(),
            )

    return run


def exercise_public_and_internal(public: int, internal: int, paths: list[str]) -> Callable[[], None]:
    """A public listener called with secrets in its query and its path; the internal one's probes too."""

    def run() -> None:
        for path in paths:
            for url in with_secrets(f"http://127.0.0.1:{public}{path}"):
                call(url, method="POST", data=b'{"not": "signed"}')  # refused (ACT's callbacks: 200 with an error)
            call(f"http://127.0.0.1:{public}{path}/{SENTINELS['webhook']}", method="POST", data=b"{}")
        for url in with_secrets(f"http://127.0.0.1:{internal}/readyz"):
            call(url)
        assert call(f"http://127.0.0.1:{public}/metrics") == 404  # the public port serves no metrics

    return run


def exercise_dashboard(port: int) -> Callable[[], None]:
    base, token = f"http://127.0.0.1:{port}", SENTINELS["dashboard"]

    def run() -> None:
        assert call(f"{base}/?token={token}") == 303
        assert call(f"{base}/api/summary.json?token={token}") == 303
        assert call(f"{base}/api/summary.json", headers={"Authorization": f"Bearer {token}"}) == 200
        assert call(f"{base}/?token={SENTINELS['admin']}") == 401
        assert call(f"{base}/api/summary.json", headers={"Host": f"{token}.example:{port}"}) == 421

    return run


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
    ports = {name: free_port() for name in ("callback", "capture", "webhooks", "webhook-probes", "dashboard")}
    try:
        worker = run_for(["worker"], env, 60, ready=b"Worker ready")
        assert "Worker ready" in worker
        capture = run_for(["capture", "crm"], {**env, "LIENTHONG_CRM_CAPTURE_PORT": "0"}, 8)
        acct_capture = run_for(
            ["capture", "acct"],
            {**env, "LIENTHONG_CALLBACK_PORT": str(ports["callback"]), "LIENTHONG_CAPTURE_PORT": str(ports["capture"])},
            40,
            ready=b"accounting callbacks on http",
            exercise=exercise_public_and_internal(ports["callback"], ports["capture"], ["/callback"]),
        )
        connector = run_for(["connector", "acct"], {**env, "LIENTHONG_ACCT_CONNECTOR_PORT": "0"}, 6)
        webhooks = run_for(
            ["webhooks", "--port", str(ports["webhooks"])],
            {**env, "LIENTHONG_WEBHOOK_METRICS_PORT": str(ports["webhook-probes"])},
            30,
            ready=b"webhooks on http",
            exercise=exercise_public_and_internal(ports["webhooks"], ports["webhook-probes"], ["/webhooks/crm/cty-a"]),
        )
        dashboard = run_for(
            ["dashboard", "--port", str(ports["dashboard"])],
            env,
            30,
            ready=b"the operator's page: http",
            exercise=exercise_dashboard(ports["dashboard"]),
        )
        sandboxes = []
        for system in ("crm", "acct"):
            port = free_port()
            sandboxes.append(
                run_for(
                    ["sandbox", system, "--port", str(port)],
                    {**env, "LIENTHONG_SANDBOX_CREDENTIALS": sandbox_logins(system)},
                    30,
                    ready=b"sandbox on http",
                    exercise=exercise_sandbox(system, port),
                )
            )
    finally:
        delete_topics_with_prefix(settings.kafka, prefix)
    assert all("sandbox on http" in output for output in sandboxes)
    # the requests were logged (the access logs are part of what is searched), their secrets not
    for output in (acct_capture, webhooks, dashboard, *sandboxes):
        assert "token=…" in output, output[-2000:]
    for output in (worker, capture, acct_capture, connector, webhooks, dashboard, *sandboxes):
        assert output.strip()  # each said something (debug logging), and none of it a secret
        assert_no_secret(output)
