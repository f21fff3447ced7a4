"""The processing loop measured on the real local broker, beside a baseline measured in the same run.

    .venv/bin/python -m bench.run                     # 100k events, 50 tenants, every measurement
    .venv/bin/python -m bench.run --events 20000 --rss-events 0 --json bench/results.json

Needs the local broker (``lienthong kafka start``); every topic it makes has a fresh prefix and is
deleted afterwards. What it reports, side by side:

* **worker drain**: ``--events`` change events of the workload in ``bench/workload.py`` (its mix is
  stated there) preloaded into ``cdc.*``; one ``lienthong worker`` from offset zero until its
  consumer group has committed the end of every input partition. events/s and commands/s over the
  processing time (first to last audit record), and the wall time with start-up;
* **baseline**: the same events through a bare confluent-kafka consume -> orjson decode -> produce
  loop on the same broker, and the ratio worker / baseline;
* **latency** at a fixed offered rate (``--rate``, default half the measured drain rate) for
  ``--latency-seconds``: from an event's produce time to its audit record's, p50/p95/p99;
* **decide()** in-process: decode + the core's decision + the state update, events/s;
* **RSS** of the worker sampled every half second over a ``--rss-events`` run (0 skips it).

Not a test: it asserts nothing about speed. ``tests/test_bench.py`` runs a small one to see that it
completes and that its output is well-formed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.workload import Event, bulk_import, events
from common.kafka_config import confluent_config
from common.names import AUDIT, changes_topic
from common.settings import KafkaSettings
from common.topic_wait import end_offsets
from ops.admin import create_topics, delete_topics_with_prefix
from streams.settings import TableSettings, WorkerSettings
from streams.topics import cdc_topics

REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    worker: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    scale: list[dict[str, Any]] = field(default_factory=list)
    bulk: dict[str, Any] = field(default_factory=dict)

    latency: dict[str, Any] = field(default_factory=dict)
    decide: dict[str, Any] = field(default_factory=dict)
    rss: dict[str, Any] = field(default_factory=dict)


# --- the broker ------------------------------------------------------------------------------------


def kafka_client(bootstrap: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A client config of the cluster at ``bootstrap``, with the transport security of the environment
    (LIENTHONG_KAFKA_*), as the worker under test has it."""
    return confluent_config(KafkaSettings(bootstrap_servers=bootstrap), extra)


def preload(bootstrap: str, prefix: str, workload: list[Event]) -> None:
    producer = Producer(
        kafka_client(bootstrap, {"linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 500_000})
    )
    for event in workload:
        while True:
            try:
                producer.produce(prefix + event.topic, event.value, event.key)
                break
            except BufferError:  # the local queue is full: let the broker take some
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the workload did not reach the broker")


def ends_of(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    probe = Consumer(kafka_client(bootstrap, {"group.id": f"bench-probe-{uuid.uuid4()}"}))
    try:
        return end_offsets(probe, topics, 10)
    finally:
        probe.close()


def committed(bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    reader = Consumer(kafka_client(bootstrap, {"group.id": group, "enable.auto.commit": False}))
    try:
        found = reader.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
    finally:
        reader.close()


def read_timestamps(bootstrap: str, topic: str, want: int, timeout: float = 120.0) -> list[tuple[int, bytes]]:
    """(broker timestamp ms, value) of the first ``want`` messages of ``topic``."""
    consumer = Consumer(kafka_client(bootstrap, {"group.id": f"bench-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    found: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            for message in consumer.consume(10000, 0.5):
                if not message.error():
                    found.append((message.timestamp()[1], message.value() or b""))
    finally:
        consumer.close()
    return found


# --- the worker --------------------------------------------------------------------------------------


class WorkerProcess:
    def __init__(self, settings: WorkerSettings, log_path: Path) -> None:
        env = {
            **os.environ,
            "LIENTHONG_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "LIENTHONG_APP_ID": settings.app_id,
            "LIENTHONG_TOPIC_PREFIX": settings.kafka.topic_prefix,
            "LIENTHONG_DATA_DIR": str(settings.tables.data_dir),
            "LIENTHONG_WEB_ENABLED": "false",
            "LIENTHONG_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "info"),
            "LIENTHONG_LOG_FORMAT": "text",
        }
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - open as long as the worker runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.peak_rss_mb = 0.0
        self.rss_samples: list[float] = []

    def sample_rss(self) -> float:
        try:
            # Right after fork the pid is still a copy of this process (a few hundred KB of RSS until
            # exec); only the worker's own samples count. (Not "is it `python -m cli worker`": faust
            # renames its process, "[Faust:Worker] ...", when setproctitle is installed, as mutmut's is.)
            if Path(f"/proc/{self.process.pid}/cmdline").read_bytes() == Path("/proc/self/cmdline").read_bytes():
                return 0.0
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    mb = int(line.split()[1]) / 1024
                    self.peak_rss_mb = max(self.peak_rss_mb, mb)
                    self.rss_samples.append(mb)
                    return mb
        except FileNotFoundError:
            pass
        return 0.0

    def cpu_seconds(self) -> float:
        """CPU time of the worker process so far, all its threads (user + system)."""
        return process_cpu_seconds(self.process.pid)

    def ready(self) -> bool:
        return b"Worker ready" in self.log_path.read_bytes()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


@contextlib.contextmanager
def fresh_topics(bootstrap: str, data: Path) -> Iterator[WorkerSettings]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    settings = WorkerSettings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        tables=TableSettings(data_dir=data / prefix),
        app_id=f"{prefix}lienthong",
        web_enabled=False,
    )
    create_topics(
        settings.kafka, partitions=settings.topic_partitions, replication_factor=settings.topic_replication_factor
    )
    try:
        yield settings
    finally:
        delete_topics_with_prefix(settings.kafka, prefix)


def drain(
    settings: WorkerSettings, workload: list[Event], log_dir: Path, timeout: float, *, workers: int = 1
) -> dict[str, Any]:
    """``workers`` workers of one group, started and ready on empty topics; then the workload produced
    as fast as the broker takes it; until the group committed the end of its inputs and of the changes
    topic. Events/s over the processing time (first to last audit record); the CPU of all workers."""
    bootstrap = settings.kafka.bootstrap_servers
    running = [
        WorkerProcess(
            settings.model_copy(
                update={"tables": settings.tables.model_copy(update={"data_dir": settings.tables.data_dir / f"w{n}"})}
            ),
            log_dir / f"worker-{len(workload)}-{workers}-{n}.log",
        )
        for n in range(workers)
    ]
    started = time.monotonic()
    try:
        deadline = started + 120
        while not (all(worker.ready() for worker in running) and group_members(bootstrap, settings.app_id) == workers):
            if time.monotonic() > deadline or any(worker.process.poll() is not None for worker in running):
                raise RuntimeError(f"the {workers} worker(s) did not all become ready (logs in {log_dir})")
            time.sleep(0.2)
        cpu_before = sum(worker.cpu_seconds() for worker in running)
        broker = local_broker_pid(bootstrap)
        broker_before, bench_before = process_cpu_seconds(broker), time.process_time()
        busy_before, measured_from = machine_busy_seconds(), time.monotonic()
        preload(bootstrap, settings.kafka.topic_prefix, workload)
        inputs = [settings.kafka.topic_prefix + spec.name for spec in cdc_topics()]
        ends = {tp: end for tp, end in ends_of(bootstrap, inputs).items() if end > 0}
        deadline = time.monotonic() + timeout
        done = False
        while time.monotonic() < deadline and all(worker.process.poll() is None for worker in running):
            for worker in running:
                worker.sample_rss()
            time.sleep(0.5)
            group = committed(bootstrap, settings.app_id, list(ends))
            if all(group.get(tp, 0) >= end for tp, end in ends.items()):
                # the changes topic too: everything routed by tenant has been decided
                internal = changes_topic(settings.app_id)
                internal_ends = {tp: e for tp, e in ends_of(bootstrap, [internal]).items() if e > 0}
                inner = committed(bootstrap, settings.app_id, list(internal_ends))
                if all(inner.get(tp, 0) >= end for tp, end in internal_ends.items()):
                    done = True
                    break
        cpu = sum(worker.cpu_seconds() for worker in running) - cpu_before
        broker_cpu = process_cpu_seconds(broker) - broker_before if broker is not None else None
        bench_cpu = time.process_time() - bench_before
        busy_cores = (machine_busy_seconds() - busy_before) / (time.monotonic() - measured_from)
        wall = time.monotonic() - started
        if not done:
            raise RuntimeError(
                f"{workers} worker(s) did not drain {len(workload)} events within {timeout:g}s (logs in {log_dir})"
            )
    finally:
        for worker in running:
            worker.stop()
    audits = read_timestamps(bootstrap, settings.kafka.topic_prefix + AUDIT, len(workload))
    times = sorted(ts for ts, _ in audits)
    commands = sum(len(orjson.loads(value).get("commands") or []) for _, value in audits)
    processing = max((times[-1] - times[0]) / 1000, 1e-3) if times else wall
    return {
        "workers": workers,
        "events": len(workload),
        "audit_records": len(audits),
        "commands": commands,
        "processing_s": round(processing, 2),
        "wall_s_with_startup": round(wall, 2),
        "events_per_s": round(len(workload) / processing),
        "commands_per_s": round(commands / processing),
        "cpu_us_per_event": round(cpu / len(workload) * 1e6, 1),
        # beside the workers on this machine, from the produce to the drain: the broker (when it is the
        # one deploy/kafka/kafka.sh runs here) and this script (its producer of the workload)
        "broker_cpu_us_per_event": None if broker_cpu is None else round(broker_cpu / len(workload) * 1e6, 1),
        "bench_cpu_us_per_event": round(bench_cpu / len(workload) * 1e6, 1),
        # the whole machine (workers, broker, this script's producer) from the produce to the drain:
        # near the number of cores, adding workers cannot drain faster here
        "machine_busy_cores": round(busy_cores, 2),
        "cores": os.cpu_count(),
        "peak_rss_mb": round(max(worker.peak_rss_mb for worker in running), 1),
        "rss_samples_mb": [round(s, 1) for s in running[0].rss_samples],
    }


def process_cpu_seconds(pid: int | None) -> float:
    """CPU time of a process of this machine so far, all its threads (user + system); 0 when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pid(bootstrap: str) -> int | None:
    """The pid of the broker ``deploy/kafka/kafka.sh`` runs on this machine for ``bootstrap`` (one
    address, its port), if any: the broker's CPU shares the machine with the workers."""
    port = bootstrap.split(",")[0].rsplit(":", 1)[-1]
    # where deploy/kafka/broker.sh keeps its data (its ``cache``)
    cache = (
        os.environ.get("LIENTHONG_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lienthong"
    )
    try:
        pid = int((Path(cache) / "kafka-data" / port / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def group_members(bootstrap: str, group: str) -> int:
    """How many members the consumer group has, once it is stable (0 before)."""
    admin = AdminClient(kafka_client(bootstrap))
    try:
        described = admin.describe_consumer_groups([group])[group].result(10)
    except Exception:  # noqa: BLE001 - a group not formed yet, or a slow broker: not ready
        return 0
    return len(described.members) if str(described.state).endswith("STABLE") else 0


def passthrough(settings: WorkerSettings, workload: list[Event]) -> dict[str, Any]:
    """The same events: consume -> orjson decode -> produce, nothing else (librdkafka both ways)."""
    bootstrap = settings.kafka.bootstrap_servers
    sink = settings.kafka.topic_prefix + "bench.passthrough"
    admin = AdminClient(kafka_client(bootstrap))
    admin.create_topics([NewTopic(sink, 6, 1)])[sink].result(30)
    inputs = [settings.kafka.topic_prefix + spec.name for spec in cdc_topics()]
    consumer = Consumer(
        kafka_client(
            bootstrap,
            {
                "group.id": f"bench-baseline-{uuid.uuid4()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    producer = Producer(kafka_client(bootstrap, {"linger.ms": 5, "acks": "all"}))
    consumer.subscribe(inputs)
    seen = 0
    first = None
    deadline = time.monotonic() + 300
    try:
        while seen < len(workload) and time.monotonic() < deadline:
            batch = consumer.consume(10000, 0.5)
            if batch and first is None:
                first = time.monotonic()
            for message in batch:
                if message.error():
                    continue
                value = orjson.loads(message.value() or b"null")
                producer.produce(sink, orjson.dumps(value), message.key())
                seen += 1
            producer.poll(0)
        producer.flush(60)
        elapsed = time.monotonic() - (first or time.monotonic())
    finally:
        consumer.close()
    return {"events": seen, "seconds": round(elapsed, 3), "events_per_s": round(seen / max(elapsed, 1e-3))}


def latency(
    settings: WorkerSettings, workload: list[Event], rate: float, seconds: float, log_dir: Path
) -> dict[str, Any]:
    """A caught-up worker; events offered at ``rate``/s; produce time -> audit record time."""
    bootstrap = settings.kafka.bootstrap_servers
    worker = WorkerProcess(settings, log_dir / "worker-latency.log")
    try:
        # wait until the worker is up: one event through
        producer = Producer(kafka_client(bootstrap, {"linger.ms": 0}))
        warm = workload[0]
        producer.produce(settings.kafka.topic_prefix + warm.topic, warm.value, warm.key)
        producer.flush(10)
        if not read_timestamps(bootstrap, settings.kafka.topic_prefix + AUDIT, 1, timeout=120):
            raise RuntimeError(f"the worker did not start (log in {log_dir})")
        offered = workload[1 : 1 + int(rate * seconds)]
        sent_at: dict[str, int] = {}
        started = time.monotonic()
        for n, event in enumerate(offered):
            due = started + n / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent_at[orjson.loads(event.value)["event_id"]] = int(time.time() * 1000)
            producer.produce(settings.kafka.topic_prefix + event.topic, event.value, event.key)
            producer.poll(0)
        producer.flush(30)
        offer_s = time.monotonic() - started
        audits = read_timestamps(bootstrap, settings.kafka.topic_prefix + AUDIT, len(offered) + 1, timeout=120)
    finally:
        worker.stop()
    by_input: dict[str, list[int]] = {}  # "<system>.<entity>" -> its events' delays: where the tail is
    for ts, value in audits:
        audit = orjson.loads(value)
        if audit["event_id"] in sent_at:
            by_input.setdefault(f"{audit['system']}.{audit['entity']}", []).append(ts - sent_at[audit["event_id"]])
    for some in by_input.values():
        some.sort()
    delays = sorted(delay for some in by_input.values() for delay in some)
    if not delays:
        raise RuntimeError("no audit record came back for the offered events")
    return {
        "offered_per_s": round(len(offered) / offer_s),
        "events": len(delays),
        "p50_ms": percentile(delays, 0.50),
        "p95_ms": percentile(delays, 0.95),
        "p99_ms": percentile(delays, 0.99),
        "max_ms": delays[-1],
        "by_input": {
            name: {
                "share": round(len(some) / len(delays), 3),
                "p50_ms": percentile(some, 0.50),
                "p99_ms": percentile(some, 0.99),
            }
            for name, some in sorted(by_input.items())
        },
    }


def percentile(ordered: list[int], q: float) -> int:
    """The ``q`` quantile of ``ordered`` (ascending), by rank."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- in process ---------------------------------------------------------------------------------------


def decide_in_process(workload: list[Event]) -> dict[str, Any]:
    """Decode, decide and remember each event as the agents do, without Kafka or faust's machinery."""
    from bench.inprocess import run_core

    started = time.perf_counter()
    decided, commands = run_core(workload)
    elapsed = time.perf_counter() - started
    return {"events": decided, "commands": commands, "events_per_s": round(decided / elapsed)}


# --- main -----------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(report: BenchReport) -> str:
    w, b, lat, d, rss = report.worker, report.baseline, report.latency, report.decide, report.rss
    rows = [
        ("worker drain (events/s)", w.get("events_per_s")),
        ("worker drain (commands/s)", w.get("commands_per_s")),
        ("worker wall time incl. start-up (s)", w.get("wall_s_with_startup")),
        ("worker peak RSS (MB)", w.get("peak_rss_mb")),
        ("baseline passthrough (events/s)", b.get("events_per_s")),
        ("ratio worker / baseline", report.ratio),
        ("latency offered (events/s)", lat.get("offered_per_s")),
        (
            "latency p50 / p95 / p99 (ms)",
            f"{lat.get('p50_ms')} / {lat.get('p95_ms')} / {lat.get('p99_ms')}" if lat else None,
        ),
        ("decide() in process (events/s)", d.get("events_per_s")),
        (
            f"RSS over {rss.get('events')} events: first / peak / last (MB)",
            f"{rss.get('first_mb')} / {rss.get('peak_mb')} / {rss.get('last_mb')}" if rss else None,
        ),
    ]
    for drained in report.scale[1:] if len(report.scale) > 1 else []:
        rows.append((f"{drained['workers']} workers drain (events/s)", drained["events_per_s"]))
    for drained in report.scale:
        rows.append((f"{drained['workers']} worker(s): CPU of all workers per event (µs)", drained["cpu_us_per_event"]))
        rows.append(
            (
                f"{drained['workers']} worker(s): machine busy (cores of {drained['cores']})",
                drained["machine_busy_cores"],
            )
        )
        rows.append(
            (
                f"{drained['workers']} worker(s): CPU of the broker / this script per event (µs)",
                f"{drained.get('broker_cpu_us_per_event')} / {drained.get('bench_cpu_us_per_event')}",
            )
        )
    if report.bulk:
        rows.append(("one tenant's bulk import (events/s)", report.bulk["events_per_s"]))
        rows.append(("one tenant's bulk import: all commands out after (s)", report.bulk["processing_s"]))
    width = max(len(name) for name, _ in rows)

    lines = [f"{name:<{width}}  {'-' if value is None else value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0, help="offered events/s for latency (0: half the drain rate)")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--rss-events", type=int, default=1_000_000, help="events of the RSS run (0: skip)")
    parser.add_argument("--skip", action="append", default=[], choices=["drain", "latency", "decide", "baseline"])
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "latest.json")
    parser.add_argument("--bootstrap", default=KafkaSettings().bootstrap_servers)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument(
        "--bulk", type=int, default=0, help="also: one tenant importing this many products at once (0: skip)"
    )
    parser.add_argument(
        "--workers",
        default="1",
        help="workers of one group draining the backlog; a list (1,2,3) drains it once per count, each on "
        "fresh topics: the scale-out measurement",
    )
    args = parser.parse_args(argv)

    report = BenchReport(machine=machine(), settings={k: v for k, v in vars(args).items() if k != "json"})
    report.settings["json"] = str(args.json)
    workload = list(events(args.events, args.tenants))
    with tempfile.TemporaryDirectory(prefix="lienthong-bench-") as tmp:
        data = Path(tmp)
        if "drain" in args.skip and not args.rate and "latency" not in args.skip:
            parser.error("--skip drain needs --rate for the latency run (its default is half the drain rate)")
        if "drain" not in args.skip:
            counts = [int(n) for n in str(args.workers).split(",")]
            for n, count in enumerate(counts):
                with fresh_topics(args.bootstrap, data) as settings:
                    print(f"{count} worker(s): draining {len(workload)} events ...", flush=True)
                    drained = drain(settings, workload, data, args.timeout, workers=count)
                    drained.pop("rss_samples_mb")
                    report.scale.append(drained)
                    if n == 0:
                        report.worker = drained
                        if "baseline" not in args.skip:
                            print("baseline: the same events through consume -> decode -> produce ...", flush=True)
                            report.baseline = passthrough(settings, workload)
                            report.ratio = round(report.worker["events_per_s"] / report.baseline["events_per_s"], 4)
        if args.bulk:
            with fresh_topics(args.bootstrap, data) as settings:
                print(f"one tenant: {args.bulk} products imported into accounting at once ...", flush=True)
                bulk = drain(settings, list(bulk_import(args.bulk)), data, args.timeout)
                bulk.pop("rss_samples_mb")
                report.bulk = bulk
        if "latency" not in args.skip:
            rate = args.rate or max(1.0, report.worker["events_per_s"] / 2)
            print(f"latency: {rate:.0f} events/s offered for {args.latency_seconds:g}s ...", flush=True)
            with fresh_topics(args.bootstrap, data) as settings:
                report.latency = latency(settings, workload, rate, args.latency_seconds, data)
        if "decide" not in args.skip:
            print("decide(): in process ...", flush=True)
            report.decide = decide_in_process(workload)
        if args.rss_events:
            print(f"RSS: draining {args.rss_events} events ...", flush=True)
            with fresh_topics(args.bootstrap, data) as settings:
                # a million events take longer than the default timeout at a few hundred per second
                timeout = max(args.timeout, args.rss_events / 200)
                big = drain(settings, list(events(args.rss_events, args.tenants, seed=2)), data, timeout)
            samples = big["rss_samples_mb"]
            report.rss = {
                "events": args.rss_events,
                "events_per_s": big["events_per_s"],
                "first_mb": samples[0] if samples else None,
                "peak_mb": big["peak_rss_mb"],
                "last_mb": samples[-1] if samples else None,
                "samples_mb": samples[:: max(1, len(samples) // 60)],
            }
    print()
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))
    print(f"\n(JSON: {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
