"""Loss-free under crashes: a worker killed with SIGKILL again and again does what an unkilled one does.

The same multi-tenant business workload (bench/workload.py) goes through two fresh deployments on
the real broker: one worker that is never disturbed, and workers that are ``kill -9``'d right
after starting, during table recovery, and in the middle of every wave of events, each replaced
by a new one. Afterwards both must have sent the same commands (same ids, same content; the killed
run may repeat a command, never with other content), audited every event, and dead-lettered
nothing.

The workload goes in waves (each record's later changes in a later wave, once the earlier ones are
processed: decided, remembered and committed), so that what a change leads to does not depend on
how the consumer happened to interleave partitions: that is what makes two runs comparable command
by command. (Waiting only for the audit records is not enough: they are sent before a batch's
lessons are remembered, so a kill in between replays the wave's events after the next wave's.)
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer

from bench.run import committed, ends_of
from bench.workload import Event, business_unit
from common.names import changes_topic
from common.settings import KafkaSettings
from ops.admin import create_topics, delete_topics_with_prefix
from streams.settings import TableSettings, WorkerSettings
from streams.topics import cdc_topics
from tests.integration.conftest import Kafka, Worker

pytestmark = pytest.mark.broker

TENANTS, UNITS = 8, 30
# The events of a business unit (bench/workload.py, in its order) by wave: a record's later change
# comes in a later wave than what it depends on.
WAVES = (
    (0, 3, 4, 9, 10),  # acct customer, CRM product, CRM order draft, invoice request, price policy
    (1,),  # the CRM copy of the customer (origin sync): the link
    (2, 5, 11),  # CRM edit (CUS-3), the order proposed (SO-4, X-4), acct address change (CUS-8)
    (6,),  # the acct order (origin sync)
    (7, 8),  # its sales voucher and receipt: the derived statuses
)


def waves(seed: int = 3) -> list[list[Event]]:
    import random

    rng = random.Random(seed)
    units = [business_unit(f"k{t}", n, rng) for n in range(UNITS) for t in range(TENANTS)]
    return [[unit[i] for unit in units for i in wave] for wave in WAVES]


class Audited:
    """Follows ``audit.sync`` in the background: which event ids have been decided."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.event_ids: set[str] = set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka.bootstrap_servers,
                "group.id": f"audited-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
            }
        )
        self._consumer.subscribe([settings.kafka.topic_prefix + "audit.sync"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1000, 0.1):
                if not message.error():
                    self.event_ids.add(orjson.loads(message.value())["event_id"])

    def count(self, wanted: set[str]) -> int:
        return len(wanted & self.event_ids)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def deployment(bootstrap: str, tmp_path: Path, name: str) -> WorkerSettings:
    prefix = f"k9-{name}-{uuid.uuid4().hex[:8]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=tmp_path / name, store="rocksdb://"),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
        # a restarted worker takes its place in the group at once (static membership)
        group_instance_id="worker-1",
        # small batches: a wave is many transactions, so that a kill in the middle of one finds some
        # of it decided and committed and some not (a wave of 240 events is one batch by default)
        batch_size=20,
    )
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    return settings


def wait_until(check, timeout: float, what, worker: Worker | None = None) -> None:
    """Until ``check()``; ``what`` (a text, or a callable giving one) says what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.process.returncode}) before {what}:\n{worker.tail()}")
        time.sleep(0.02)
    said = what() if callable(what) else what
    raise AssertionError(f"not within {timeout:g}s: {said}" + (f"\n{worker.tail()}" if worker else ""))


def processed(settings: WorkerSettings) -> bool:
    """Whether the worker's group has committed every message of its inputs (the CDC topics, then
    the changes it routed by tenant)."""
    cdc = [settings.kafka.topic_prefix + spec.name for spec in cdc_topics()]
    internal = [changes_topic(settings.app_id)]
    for topics in (cdc, internal):
        ends = {tp: end for tp, end in ends_of(settings.kafka.bootstrap_servers, topics).items() if end > 0}
        group = committed(settings.kafka.bootstrap_servers, settings.app_id, list(ends))
        if any(group.get(tp, 0) < end for tp, end in ends.items()):
            return False
    return True


def produce(kafka: Kafka, events: list[Event]) -> None:
    for event in events:
        kafka.producer.produce(kafka.name(event.topic), event.value, event.key)
    kafka.producer.flush(30)


def event_ids(events: list[Event]) -> set[str]:
    return {orjson.loads(event.value)["event_id"] for event in events}


def outputs(kafka: Kafka) -> tuple[dict[str, list[dict]], list[dict]]:
    """Commands by id (every copy), and the dead letters, as the run left them."""
    commands: dict[str, list[dict]] = defaultdict(list)
    # read once the run's worker committed everything and stopped: all it wrote is there, to the end
    messages = kafka.read_to_end(["commands.crm", "commands.acct", "dlq.cdc"])
    for message in messages:
        if message["topic"].startswith("commands."):
            command = dict(message["value"])
            command.pop("ts_ms")  # when it was decided: differs from run to run by nature
            commands[command["command_id"]].append(command)
    letters = [m for m in messages if m["topic"] == "dlq.cdc"]
    return commands, letters


def test_a_worker_killed_at_many_points_sends_what_an_unkilled_one_sends(bootstrap, tmp_path):
    workload = waves()
    everything = event_ids([event for wave in workload for event in wave])
    clean = deployment(bootstrap, tmp_path, "clean")
    killed = deployment(bootstrap, tmp_path, "killed")
    audited = {name: Audited(settings) for name, settings in (("clean", clean), ("killed", killed))}
    started: list[Worker] = []  # every worker, stopped at the end whatever happened

    def start(settings: WorkerSettings, log: Path) -> Worker:
        started.append(Worker(settings, log))
        return started[-1]

    try:
        # --- the reference: one worker, never disturbed ----------------------------------------
        kafka = Kafka(clean.kafka)
        worker = start(clean, tmp_path / "clean.log")
        worker.wait_ready()
        for wave in workload:
            produce(kafka, wave)
            wanted = event_ids(wave)
            wait_until(lambda w=wanted: audited["clean"].count(w) == len(w), 120, "the clean wave", worker)
            wait_until(lambda: processed(clean), 60, "the clean wave committed", worker)
        assert worker.stop() in (0, -signal.SIGTERM)

        # --- the same, killed at many points ---------------------------------------------------
        kafka = Kafka(killed.kafka)
        kills: list[str] = []
        logs = iter(tmp_path / f"killed-{n}.log" for n in range(100))

        def kill(worker: Worker, when: str) -> Worker:
            if when == "during recovery" and b"Worker ready" in worker.log_path.read_bytes():
                when = "just after recovery"
            assert worker.stop(signal.SIGKILL) == -signal.SIGKILL, worker.tail()
            kills.append(when)
            return start(killed, next(logs))

        produce(kafka, workload[0])
        worker = start(killed, next(logs))
        time.sleep(0.5)
        worker = kill(worker, "right after start")
        wait_until(
            lambda: worker.log_path.read_bytes().count(b"of the changes topic to restore") > 0,
            60,
            "recovery to begin",
            worker,
        )
        worker = kill(worker, "during recovery")
        for number, wave in enumerate(workload):
            if number:
                produce(kafka, wave)
            wanted = event_ids(wave)
            # in the middle of the wave: some of it decided, not all
            wait_until(lambda w=wanted: audited["killed"].count(w) >= len(w) // 3, 120, "the wave to start", worker)
            if audited["killed"].count(wanted) < len(wanted):
                worker = kill(worker, f"mid-wave {number}")
            wait_until(
                lambda w=wanted: audited["killed"].count(w) == len(w),
                180,
                lambda w=wanted, n=number: (
                    f"{len(w - audited['killed'].event_ids)} of {len(w)} events of wave {n} "
                    f"were never decided after the kills {kills}"
                ),
                worker,
            )
            wait_until(lambda: processed(killed), 60, f"wave {number} committed", worker)
        # and once more with everything decided, before the last commit may have happened
        worker = kill(worker, "after the last wave")
        worker.wait_ready()
        # whatever the killed worker had not committed is taken again and committed: then stop it
        wait_until(lambda: processed(killed), 60, "the restarted worker to commit what it took again", worker)
        assert worker.stop() in (0, -signal.SIGTERM)
        assert len(kills) >= 5 and {"right after start", "during recovery"} <= set(kills), kills

        # --- the comparison -------------------------------------------------------------------
        reference, reference_letters = outputs(Kafka(clean.kafka))
        after_kills, letters = outputs(Kafka(killed.kafka))
        assert audited["clean"].count(everything) == len(everything)
        assert audited["killed"].count(everything) == len(everything), "events never decided after the kills"
        assert reference_letters == [] and letters == [], (reference_letters[:3], letters[:3])
        assert len(reference) > len(everything) // 2, "the workload sent too few commands to compare"
        missing = sorted(set(reference) - set(after_kills))
        extra = sorted(set(after_kills) - set(reference))
        differing = [cid for cid in set(reference) & set(after_kills) if after_kills[cid][0] != reference[cid][0]]
        repeated_differently = [cid for cid, copies in after_kills.items() if any(c != copies[0] for c in copies)]
        repeats = sum(len(copies) - 1 for copies in after_kills.values())
        print(
            f"kills: {kills}; commands: {len(reference)} expected, {len(missing)} missing, {len(extra)} extra, "
            f"{len(differing)} differing, {repeats} repeated with the same id"
        )
        assert missing == [], f"{len(missing)} commands never sent after the kills, e.g. {reference[missing[0]][0]}"
        assert extra == [], f"{len(extra)} commands the unkilled run did not send, e.g. {after_kills[extra[0]][0]}"
        assert differing == [], (
            f"{len(differing)} commands differ, e.g. unkilled {reference[differing[0]][0]} "
            f"and after kills {after_kills[differing[0]][0]}"
        )
        assert repeated_differently == [], "a repeated command id carried other content"
    finally:
        for running in started:
            running.stop(signal.SIGKILL)
        for follower in audited.values():
            follower.close()
        for settings in (clean, killed):
            delete_topics_with_prefix(settings.kafka, settings.kafka.topic_prefix)
