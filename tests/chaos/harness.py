"""The chaos suite's machinery: its own broker, services as real subprocesses, reading the broker.

Everything here runs what a deployment runs (``python -m cli ...``) so that ``kill -9`` is a
real SIGKILL of a real process. The broker is the suite's own (``deploy/kafka/kafka.sh`` on a free
port, so a data directory of its own under ``~/.cache/lienthong/kafka-data/<port>``): restarting it
disturbs nobody else's tests, and it is purged at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.run import committed, ends_of
from tests.integration.conftest import stop_process

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str | Callable[[], str], step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    said = what() if callable(what) else what
    raise AssertionError(f"not within {timeout:g}s: {said}")


class OwnBroker:
    """A single-node Kafka broker of the suite's own: ``kafka.sh`` with ``LIENTHONG_KAFKA_PORT`` set
    to a free port (its controller takes the next one); data in ``<cache>/kafka-data/<port>``."""

    def __init__(self, log_dir: Path) -> None:
        for port in range(19100 + os.getpid() % 400 * 2, 19990, 2):
            if port_free(port) and port_free(port + 1):
                self.port = port
                break
        else:
            raise RuntimeError("no two free neighbouring ports for the chaos suite's broker in 19100-19990")
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = log_dir / f"kafka-{self.port}.log"
        self.env = {**os.environ, "LIENTHONG_KAFKA_PORT": str(self.port), "LIENTHONG_KAFKA_HEAP": "512m"}

    def _script(self, action: str, timeout: float = 120) -> None:
        with open(self.log, "ab") as out:
            done = subprocess.run(
                ["bash", str(KAFKA_SH), action], env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        if done.returncode != 0:
            raise AssertionError(f"kafka.sh {action} on port {self.port} failed:\n{self.log.read_text()[-3000:]}")

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def purge(self) -> None:
        self._script("purge")


class Service:
    """One ``lienthong <args>`` subprocess; ``restart`` starts a new one with the same settings."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.env, self.log_dir = name, args, env, log_dir
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"{name}-0.log"
        self.start()

    def start(self) -> None:
        self.generation += 1
        self.log_path = self.log_dir / f"{self.name}-{self.generation}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_bytes(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_log(self, needle: bytes, timeout: float = 90) -> None:
        def seen() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited ({self.returncode}) before {needle!r}:\n{self.tail()}")
            return needle in self.log_bytes()

        wait_for(seen, timeout, lambda: f"{self.name} never logged {needle!r}:\n{self.tail()}", step=0.05)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def signal(self, sig: int, timeout: float = 40) -> int:
        """Send ``sig`` and wait for the process to end (SIGKILL after ``timeout``); its exit status."""
        if self.process is None:
            return 0
        return stop_process(self.process, sig, timeout)

    def kill9(self) -> int:
        return self.signal(signal.SIGKILL)

    def stop(self) -> int:
        return self.signal(signal.SIGTERM)

    def restart(self) -> None:
        self.start()

    def logs(self) -> list[Path]:
        return [self.log_dir / f"{self.name}-{n}.log" for n in range(1, self.generation + 1)]


# --- reading the broker ---------------------------------------------------------------------------


def consumer(bootstrap: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"chaos-reader-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )


def lag(bootstrap: str, group: str, topics: list[str]) -> int:
    """Messages of ``topics`` the group has not committed."""
    return sum(lagging(bootstrap, group, topics).values())


def lagging(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """Each partition of ``topics`` whose end the group has not committed, and by how much."""
    ends = {tp: end for tp, end in ends_of(bootstrap, topics).items() if end > 0}
    if not ends:
        return {}
    done = committed(bootstrap, group, list(ends))
    return {tp: end - done.get(tp, 0) for tp, end in ends.items() if end > done.get(tp, 0)}


def read_all(bootstrap: str, topics: list[str], prefix: str) -> list[dict[str, Any]]:
    """Every message of ``topics`` (names without prefix) up to their current ends, in partition order."""
    full = [prefix + t for t in topics]
    ends = {tp: end for tp, end in ends_of(bootstrap, full).items() if end > 0}
    # read_committed (librdkafka's default): the processor writes in transactions, whose markers take
    # offsets no message reaches; the end-of-partition event says where a partition was read to
    reader = consumer(bootstrap, **{"enable.partition.eof": True})
    messages: list[dict[str, Any]] = []
    try:
        reader.assign([TopicPartition(t, p, 0) for (t, p) in ends])
        positions = dict.fromkeys(ends, 0)
        deadline = time.monotonic() + 60
        while any(positions[tp] < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topics} to their ends within 60s")
            for message in reader.consume(1000, 0.5):
                tp = (message.topic(), message.partition())
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF and tp in positions:
                        positions[tp] = max(positions[tp], message.offset())
                    continue
                positions[tp] = message.offset() + 1

                raw = message.value()
                try:
                    value: Any = orjson.loads(raw) if raw is not None else None
                except orjson.JSONDecodeError:
                    value = raw
                messages.append(
                    {
                        "topic": message.topic()[len(prefix) :],
                        "partition": message.partition(),
                        "offset": message.offset(),
                        "key": message.key(),
                        "raw": raw,
                        "value": value,
                        "headers": dict(message.headers() or []),
                    }
                )
    finally:
        reader.close()
    return messages
