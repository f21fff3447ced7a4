"""The local Apache Kafka broker of a checkout: ``deploy/kafka/kafka.sh``, driven from Python.

Used by ``lienthong kafka …`` and by the demo; neither imports the other.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from common.settings import KafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class LocalBrokerError(RuntimeError):
    """The local broker cannot be driven here; the message says why and what to do."""


def run_kafka_script(action: str, kafka: KafkaSettings, *, said: list[str] | None = None) -> int:
    """Run ``kafka.sh <action>`` for the broker the settings point at; returns its exit code. With ``said``,
    what the script prints is collected there instead of shown."""
    if not KAFKA_SCRIPT.exists():
        raise LocalBrokerError(f"{KAFKA_SCRIPT} not found; run from a checkout of the project (pip install -e .)")
    first = kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in LOOPBACK_HOSTS:
        raise LocalBrokerError(f"the local broker runs on loopback only; LIENTHONG_BOOTSTRAP_SERVERS={first}")
    env = dict(os.environ)
    env.setdefault("LIENTHONG_KAFKA_PORT", port or "9092")
    if said is None:
        return subprocess.call(["bash", str(KAFKA_SCRIPT), action], env=env)
    done = subprocess.run(["bash", str(KAFKA_SCRIPT), action], env=env, capture_output=True, text=True)
    said.extend(line for line in (done.stdout + done.stderr).splitlines() if line.strip())
    return done.returncode
