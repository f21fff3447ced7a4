"""Who may read the operator's page: the Host it answers, its token, the headers every answer carries;
and what it shows of a dead letter whose payload holds personal data.

No broker is needed: the page answers (with nothing sampled yet) while its collector fails to connect.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from common.names import ERROR_KIND, ERROR_MESSAGE
from common.settings import KafkaSettings
from ops.dashboard.web import ACCESS, DATA, create_dashboard, summary
from ops.settings import OpsSettings
from streams.core.contract import decode_change_event
from streams.core.errors import BadInput

TOKEN = "dashboard-token-1234567890"
NOWHERE = KafkaSettings(bootstrap_servers="127.0.0.1:9")  # nothing listens: no sample, the page still answers


async def serve(settings: OpsSettings) -> TestClient:
    from ops.dashboard.web import DashboardAccess

    access = DashboardAccess.of(
        web_host=settings.web_host, hosts=settings.dashboard_hosts, token=settings.dashboard_token
    )
    app = create_dashboard(NOWHERE, [], interval=60, access=access)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def open_page() -> AsyncIterator[TestClient]:
    client = await serve(OpsSettings(web_host="127.0.0.1"))
    yield client
    await client.close()


@pytest.fixture
async def guarded() -> AsyncIterator[TestClient]:
    client = await serve(OpsSettings(web_host="127.0.0.1", dashboard_token=SecretStr(TOKEN)))
    yield client
    await client.close()


async def test_a_foreign_host_is_answered_421_and_reads_nothing(open_page):
    rebound = await open_page.get("/api/summary.json", headers={"Host": "evil.example:8080"})
    assert rebound.status == 421
    reason = await rebound.text()
    assert reason.count("\n") == 1 and "LIENTHONG_DASHBOARD_HOSTS" in reason
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        assert (await open_page.get("/api/summary.json", headers={"Host": host})).status == 200, host
    # the probes and /metrics answer whatever the Host (kubelet and Prometheus send the pod's address)
    assert (await open_page.get("/healthz", headers={"Host": "10.1.2.3:8080"})).status == 200


async def test_a_host_named_in_the_setting_is_answered():
    client = await serve(OpsSettings(web_host="0.0.0.0", dashboard_hosts=["ops.example.internal"]))
    try:
        assert (await client.get("/", headers={"Host": "ops.example.internal:8080"})).status == 200
        assert (await client.get("/", headers={"Host": "0.0.0.0:8080"})).status == 421
    finally:
        await client.close()


async def test_every_answer_forbids_framing_scripts_and_sniffing(open_page):
    for path in ("/", "/api/summary.json", "/nowhere"):
        answer = await open_page.get(path)
        assert answer.headers["X-Frame-Options"] == "DENY", path
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        policy = answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "script-src" not in policy  # no script runs at all
    page = await (await open_page.get("/")).text()
    assert "<script" not in page
    # the page's style sheet is the one the policy's hash allows (a browser would drop another)
    import base64
    import hashlib

    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in answer.headers["Content-Security-Policy"]


async def test_with_a_token_the_link_becomes_a_cookie_and_the_address_loses_it(guarded):
    assert (await guarded.get("/api/summary.json")).status == 401
    assert (await guarded.get("/")).status == 401
    wrong = await guarded.get("/", params={"token": "not-the-token-at-all"}, allow_redirects=False)
    assert wrong.status == 401 and "not LIENTHONG_DASHBOARD_TOKEN" in await wrong.text()
    opened = await guarded.get("/", params={"token": TOKEN, "refresh": "0"}, allow_redirects=False)
    assert opened.status == 303 and opened.headers["Location"] == "/?refresh=0"  # the token left the address
    cookie = opened.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # the client keeps the cookie, as a browser does: the page and the API answer from now on
    assert (await guarded.get("/?refresh=0")).status == 200
    assert (await guarded.get("/api/summary.json")).status == 200
    # the probes and /metrics do not ask for it (Prometheus, kubelet)
    assert (await guarded.get("/healthz")).status == 200


async def test_with_a_token_scripts_send_it_as_a_bearer(guarded):
    assert (await guarded.get("/api/summary.json", headers={"Authorization": "Bearer wrong"})).status == 401
    answer = await guarded.get("/api/summary.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 200 and "dead_letters" in await answer.json()


def test_a_short_token_is_refused_naming_the_variable():
    with pytest.raises(ValueError, match="LIENTHONG_DASHBOARD_TOKEN must be at least 16 characters"):
        OpsSettings(dashboard_token=SecretStr("short"))


async def test_a_dead_letters_reason_shows_no_payload_value_and_the_letter_keeps_it(open_page):
    payload = {
        "schema_version": 1,
        "event_id": "e-1",
        "tenant": "cty-a",
        "system": "crm",
        "entity": "customer",
        "op": "u",
        "ts_ms": ["Nguyễn Thị Bích Ngọc, 0912345678"],  # a person's name and phone where a number belongs
        "before": None,
        "after": {"id": "C-1", "name": "Nguyễn Thị Bích Ngọc"},
    }
    raw = orjson.dumps(payload)
    with pytest.raises(BadInput) as bad:
        decode_change_event(raw, topic_system="crm", topic_entity="customer")
    reason = bad.value.message
    assert "ts_ms" in reason and "0912345678" not in reason and "Bích Ngọc" not in reason
    # as the page receives the dead letter: the original bytes are the message, the reason a header
    data = open_page.app[DATA]
    data.health.dead_letter("dlq.cdc", b"cty-a:C-1", [(ERROR_KIND, b"schema"), (ERROR_MESSAGE, reason.encode())])
    page = await (await open_page.get("/")).text()
    shown = summary(data)["recent_dead_letters"][0]["message"]
    assert "0912345678" not in page and "0912345678" not in shown and "ts_ms" in shown
    assert "0912345678" in raw.decode()  # the dead letter itself (its value) keeps the payload whole
    assert open_page.app[ACCESS].token is None
