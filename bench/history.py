"""``lienthong history`` at a million retained events: build the index, then time one record's story.

    .venv/bin/python -m bench.history --events 1000000   # needs the local broker (LIENTHONG_BOOTSTRAP_SERVERS)

Loads ``--events`` change events of the business workload (``bench/workload.py``, 50 tenants) under a fresh
topic prefix, with what the worker and the connectors would have written for them: each event's audit
record (decided in process by the core, ``streams.replay.decide_and_remember``) and an ``applied`` result
per command (``--decided N``: only for the first N events). Then: the index built from nothing (time,
messages per second, its size on disk), the index brought up to date when nothing is new (what every
question pays first), and one order's story asked in process and by a new process (``python -m cli
history``, a cold process on a warm index), beside a new process that only starts. The topics are deleted
at the end unless ``--keep`` (``--load-only`` keeps them for ``--prefix``); the numbers go to
docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bench.workload import events
from common.kafka_config import confluent_config
from common.names import AUDIT, results_topic
from common.settings import KafkaSettings
from ops.admin import create_topics, delete_topics_with_prefix
from ops.history import HistoryIndex, history, index_path
from streams.core.contract import decode_change_event, dumps
from streams.core.rules import load_rules
from streams.replay import decide_and_remember
from streams.tables.state import in_memory_state


def load(kafka: KafkaSettings, count: int, decided: int) -> dict[str, int]:
    producer = Producer(
        confluent_config(kafka, {"linger.ms": 20, "batch.num.messages": 10000, "queue.buffering.max.messages": 500_000})
    )
    rules, state = load_rules(), in_memory_state()
    counts = {"cdc": 0, "audit": 0, "results": 0}

    def send(topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                producer.produce(kafka.topic_prefix + topic, value, key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)

    for n, event in enumerate(events(count), start=1):
        send(event.topic, event.value, event.key)
        counts["cdc"] += 1
        if n > decided:
            if n % 100_000 == 0:
                print(f"  produced {n:,} events", flush=True)
            continue
        _, system, entity = event.topic.split(".")
        change = decode_change_event(event.value, topic_system=system, topic_entity=entity)
        for decision in decide_and_remember(state, change, rules, now_ms=change.ts_ms + 100):
            audit = decision.audit
            send(AUDIT, dumps(audit), f"{audit.tenant}:{audit.entity}:{audit.record_id}".encode())
            counts["audit"] += 1
            for command in decision.commands:
                key = command.key.code or command.key.id or ""
                result = {
                    "command_id": command.command_id,
                    "tenant": command.tenant,
                    "target": command.target.value,
                    "entity": command.entity,
                    "status": "applied",
                    "target_id": command.key.id or f"T-{command.command_id[:10]}",
                    "code": command.key.code,
                    "error": None,
                    "attempts": 1,
                    "ts_ms": change.ts_ms + 200,
                }
                send(
                    results_topic(command.target),
                    orjson.dumps(result),
                    f"{command.tenant}:{command.entity}:{key}".encode(),
                )
                counts["results"] += 1
        if n % 100_000 == 0:
            print(f"  produced {n:,} events", flush=True)
    if producer.flush(300):
        raise RuntimeError("the workload did not reach the broker")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--decided",
        type=int,
        default=None,
        help="only the first N events get their audit records and results (default: every one; deciding in "
        "process is the slow part of loading)",
    )
    parser.add_argument("--prefix", help="reuse topics loaded before (skips loading)")
    parser.add_argument("--keep", action="store_true", help="keep the topics")
    parser.add_argument("--load-only", action="store_true", help="load the topics and keep them (then --prefix)")
    parser.add_argument("--tenant", default="t000")
    parser.add_argument("--code", default="DH0000007", help="the order asked for (DH<unit>)")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("LIENTHONG_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    prefix = args.prefix or f"bench-hist-{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    data = Path(tempfile.mkdtemp(prefix="history-bench-"))
    try:
        if not args.prefix:
            create_topics(kafka, partitions=6, replication_factor=1)
            started = time.monotonic()
            counts = load(kafka, args.events, args.events if args.decided is None else args.decided)
            print(f"loaded {counts} under {prefix} in {time.monotonic() - started:.0f} s", flush=True)
            if args.load_only:
                args.keep = True
                return 0
        path = index_path(data, kafka)
        with HistoryIndex(kafka, path) as index:
            started = time.monotonic()
            read = index.catch_up()
            built = time.monotonic() - started
            index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = sum(f.stat().st_size for f in path.parent.iterdir())
            (names,) = index.db.execute("SELECT count(*) FROM name").fetchone()
            print(
                f"index built: {read:,} messages in {built:.1f} s ({read / built:,.0f}/s); {names:,} names; "
                f"{size / 1e6:.0f} MB on disk ({size / read:.0f} bytes per message)",
                flush=True,
            )
            started = time.monotonic()
            index.catch_up()
            print(f"index brought up to date with nothing new: {(time.monotonic() - started) * 1000:.0f} ms")
            started = time.monotonic()
            story = history(index, args.tenant, "sale_order", args.code)
            asked = time.monotonic() - started
            print(
                f"in process: {args.code} of {args.tenant}: {len(story.versions)} versions, "
                f"{len(story.explanation.changes)} decisions in {asked * 1000:.0f} ms"
            )
        env = dict(
            os.environ,
            LIENTHONG_BOOTSTRAP_SERVERS=bootstrap,
            LIENTHONG_TOPIC_PREFIX=prefix,
            LIENTHONG_DATA_DIR=str(data),
            PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        )
        for _ in range(3):  # the baseline: a new process that only starts the command line
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "cli", "--version"], env=env, capture_output=True, check=True)
            print(f"new process: `lienthong --version`: {(time.monotonic() - started) * 1000:.0f} ms wall", flush=True)
        for _ in range(3):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "cli", "history", args.tenant, "sale_order", args.code],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            took = time.monotonic() - started
            print(
                f"new process: `lienthong history {args.tenant} sale_order {args.code}`: exit {done.returncode}, "
                f"{took * 1000:.0f} ms wall, {len(done.stdout.splitlines())} lines",
                flush=True,
            )
            if done.returncode != 0:
                print(done.stderr)
    finally:
        if not args.keep and not args.prefix:
            delete_topics_with_prefix(kafka, prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
