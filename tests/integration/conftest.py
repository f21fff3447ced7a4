"""Integration tier: the real Apache Kafka broker (deploy/kafka/kafka.sh), fresh topics per module.

Each test module gets its own topic prefix (fresh topic names) and app id; each test gets its own
tenant. A worker is a real ``lienthong worker`` subprocess configured through LIENTHONG_* env.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from common.kafka_config import confluent_config
from common.settings import KafkaSettings
from common.topic_wait import watermarks
from ops.admin import admin_client, create_topics, delete_topics_with_prefix
from streams.settings import TableSettings, WorkerSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bootstrap() -> str:
    servers = os.environ.get("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    host = servers.split(",")[0].rsplit(":", 1)[0]
    assert host in ("127.0.0.1", "localhost", "[::1]"), f"tests only talk to a broker on loopback, not {servers}"
    try:
        admin_client(KafkaSettings(bootstrap_servers=servers)).list_topics(timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"no Kafka broker answers at {servers} ({exc}); start one with `lienthong kafka start`")
    return servers


class Kafka:
    """Produce to and read from the topics of one test module (names with its prefix)."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producer = Producer(confluent_config(settings, {"linger.ms": 0}))

    def name(self, topic: str) -> str:
        return self.settings.topic_prefix + topic

    def produce(self, topic: str, value: bytes | dict, key: str | bytes, headers: dict | None = None) -> None:
        raw = orjson.dumps(value) if isinstance(value, dict) else value
        self.producer.produce(
            self.name(topic), key=key.encode() if isinstance(key, str) else key, value=raw, headers=headers
        )
        self.producer.flush(10)

    def read(
        self,
        topics: list[str],
        until: Callable[[list[dict]], bool],
        timeout: float = 30.0,
    ) -> list[dict]:
        """Read every message of ``topics`` from the beginning until ``until(messages)`` holds.

        Each message: topic (without prefix), key, value (decoded JSON when it is JSON, else bytes),
        headers (dict). To see that nothing unwanted follows, read on with ``read_to_end`` once what
        made them is known to be written (a returned command, a committed batch), never for a while.
        """
        consumer = Consumer(
            confluent_config(
                self.settings,
                {"group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False, "auto.offset.reset": "earliest"},
            )
        )
        metadata = consumer.list_topics(timeout=10).topics
        assignment = [TopicPartition(self.name(t), p, 0) for t in topics for p in metadata[self.name(t)].partitions]
        consumer.assign(assignment)
        messages: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    messages.append(self._as_read(message))
                if until(messages):
                    return messages
            raise AssertionError(
                f"timed out after {timeout}s waiting on {topics}; read {len(messages)}: "
                f"{[(m['topic'], m['key']) for m in messages][:20]}"
            )
        finally:
            consumer.close()

    def read_to_end(self, topics: list[str], timeout: float = 30.0) -> list[dict]:
        """Every message of ``topics`` written before the call: read up to the end offsets they had
        then (what a producer that flushed before the call wrote is all there). Same shape as ``read``."""
        consumer = Consumer(
            confluent_config(
                self.settings,
                {"group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False, "auto.offset.reset": "earliest"},
            )
        )
        messages: list[dict] = []
        try:
            metadata = consumer.list_topics(timeout=10).topics
            assignment = [TopicPartition(self.name(t), p, 0) for t in topics for p in metadata[self.name(t)].partitions]
            deadline = time.monotonic() + timeout
            ends = {
                (tp.topic, tp.partition): watermarks(consumer, tp, max(0.1, deadline - time.monotonic()))[1]
                for tp in assignment
            }
            consumer.assign(assignment)
            # a partition not fetched yet has no position (a negative offset): it is at 0, where it was assigned
            while any(max(p.offset, 0) < ends[(p.topic, p.partition)] for p in consumer.position(assignment)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read {topics} to their end offsets {ends} within {timeout}s")
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    messages.append(self._as_read(message))
        finally:
            consumer.close()
        return messages

    def _as_read(self, message: Message) -> dict:
        """A consumed message as ``read`` gives it: topic without the prefix, key, value (JSON when it is),
        headers."""
        try:
            value = orjson.loads(message.value())
        except orjson.JSONDecodeError:
            value = message.value()
        return {
            "topic": message.topic()[len(self.settings.topic_prefix) :],
            "key": message.key().decode() if message.key() else None,
            "value": value,
            "headers": {k: v.decode() for k, v in (message.headers() or [])},
        }


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Stop a service the test started as its operator would (``sig``, SIGTERM: a clean stop), killing it
    if it has not stopped within ``timeout``; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def last_assignment(log: str, topic: str) -> str:
    """The partitions of ``topic`` the worker's consumer was last assigned, as the processing loop logs
    them ("assigned N partition(s), …: <topic> 0,3; <topic> 1"), in text or JSON logs alike; "" when none."""
    lines = [line for line in log.splitlines() if "of the changes topic to restore" in line]
    if not lines:
        return ""
    found = re.search(rf"(?:: |; ){re.escape(topic)} ([0-9,]+)", lines[-1])
    return found.group(1) if found else ""


def wait_for_shared_partitions(workers: list[Worker], topics: list[str], timeout: float = 60.0) -> None:
    """Until the group's rebalance is done: each worker owns partitions of each topic and none owns
    another's (a worker logs its new assignment once it gave a newcomer its share)."""

    def shared(topic: str) -> bool:
        owned = [set(last_assignment(w.log_path.read_text(), topic).split(",")) - {""} for w in workers]
        return all(owned) and sum(map(len, owned)) == len(set().union(*owned))

    deadline = time.monotonic() + timeout
    while not all(shared(topic) for topic in topics):
        assert time.monotonic() < deadline, "the rebalance never gave every worker partitions:\n" + "\n".join(
            w.tail() for w in workers
        )
        time.sleep(0.1)


class Worker:
    """A ``lienthong worker`` subprocess."""

    def __init__(self, settings: WorkerSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        env = dict(os.environ)
        env.update(
            {
                "LIENTHONG_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
                "LIENTHONG_APP_ID": settings.app_id,
                "LIENTHONG_TOPIC_PREFIX": settings.kafka.topic_prefix,
                "LIENTHONG_TOPIC_PARTITIONS": str(settings.topic_partitions),
                "LIENTHONG_STORE": settings.tables.store,
                "LIENTHONG_DATA_DIR": str(settings.tables.data_dir),
                "LIENTHONG_WEB_ENABLED": "false",
                "LIENTHONG_LOG_LEVEL": settings.log.log_level,
                "LIENTHONG_SESSION_TIMEOUT": str(settings.session_timeout),
                "LIENTHONG_BATCH_SIZE": str(settings.batch_size),
            }
        )
        if settings.group_instance_id:
            env["LIENTHONG_GROUP_INSTANCE_ID"] = settings.group_instance_id
        self.log = open(log_path, "wb")  # noqa: SIM115 - open as long as the worker runs; closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=REPO_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            if b"Worker ready" in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        code = stop_process(self.process, sig, timeout)
        self.log.close()
        return code


@pytest.fixture(scope="module")
def module_settings(bootstrap: str, tmp_path_factory) -> Iterator[WorkerSettings]:
    """The settings of the module's worker; ``.kafka``: what every client of the module connects with."""
    prefix = f"it-{uuid.uuid4().hex[:10]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path_factory.mktemp("worker-data")),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    yield settings
    delete_topics_with_prefix(settings.kafka, prefix)


def in_data_dir(settings: WorkerSettings, data_dir: Path) -> WorkerSettings:
    """The same worker's settings with its tables in ``data_dir`` (another worker of the module)."""
    return settings.model_copy(update={"tables": settings.tables.model_copy(update={"data_dir": data_dir})})


@pytest.fixture(scope="module")
def kafka(module_settings: WorkerSettings) -> Kafka:
    return Kafka(module_settings.kafka)


@pytest.fixture(scope="module")
def worker(module_settings: WorkerSettings, tmp_path_factory) -> Iterator[Worker]:
    log_path = tmp_path_factory.mktemp("worker-log") / "worker.log"
    process = Worker(module_settings, log_path)
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.stop()
        if code not in (0, -signal.SIGTERM):
            print(f"worker exited with {code}:\n{process.tail()}")


@pytest.fixture()
def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:8]}"


def change_event(
    tenant: str,
    system: str,
    entity: str,
    after: dict | None,
    *,
    op: str = "c",
    before: dict | None = None,
    action: str | None = None,
    origin: str = "user",
    event_id: str | None = None,
) -> dict:
    event = {
        "schema_version": 1,
        "event_id": event_id or f"ev-{uuid.uuid4().hex}",
        "tenant": tenant,
        "system": system,
        "entity": entity,
        "op": op,
        "origin": origin,
        "ts_ms": int(time.time() * 1000),
        "before": before,
        "after": after,
    }
    if action:
        event["action"] = action
    return event
