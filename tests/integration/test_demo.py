"""`lienthong demo --exit`: the README's main command runs the whole loop and says what synced."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from common.settings import KafkaSettings
from ops.admin import delete_topics_with_prefix

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_a_business_day_and_exits(bootstrap, tmp_path):
    prefix = f"demo-{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "LIENTHONG_BOOTSTRAP_SERVERS": bootstrap,
        "LIENTHONG_TOPIC_PREFIX": prefix,
        "LIENTHONG_APP_ID": f"{prefix}lienthong",
        "LIENTHONG_DATA_DIR": str(tmp_path),
        "LIENTHONG_WEB_ENABLED": "false",
    }
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "demo",
                "--exit",
                "--crm-port",
                "0",
                "--acct-port",
                "0",
                "--dashboard-port",
                "0",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        # the audit trail the demo points to, typed as it prints it (its topic prefix, the code it shows)
        shown = re.search(r"LIENTHONG_TOPIC_PREFIX=(\S+) \.venv/bin/lienthong (explain \S+ \S+ \S+)", result.stdout)
        assert shown is not None, result.stdout[-3000:]
        explained = subprocess.run(
            [sys.executable, "-m", "cli", *shown.group(2).split()],
            cwd=REPO,
            env={**env, "LIENTHONG_TOPIC_PREFIX": shown.group(1)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        delete_topics_with_prefix(KafkaSettings(bootstrap_servers=bootstrap), prefix)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "CRM order DH0001: delivery delivering, pay partially_paid, remaining 30000" in out
    assert "crm: 4 records created" in out and "acct: 6 records created" in out
    assert "http://127.0.0.1:" in out
    health = next(line for line in out.splitlines() if line.startswith("sync health: lag"))
    assert "dead letters 0" in health, out[out.index("sync health: lag") :]
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert explained.stdout.startswith("customer KH0001 of ") and "-> CUS-6: " in explained.stdout, explained.stdout
    assert "applied (id " in explained.stdout, explained.stdout
