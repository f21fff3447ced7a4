"""``lienthong sandbox SYSTEM --port 0``: a sandbox on a free port, which says its URL and accepts the
credentials in the layout its connector reads (one layout for both)."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
import pytest
from pydantic import SecretStr

from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmClient, CrmCredentials
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.broker


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
