"""The hot path the processor did not choose, measured: a faust agent that does nothing, draining a topic.

    .venv/bin/python -m bench.faust_agent --events 100000

Preloads ``--events`` messages of the business workload onto one topic of 6 partitions (fresh, on the
local broker), then runs a faust-streaming worker whose one agent takes them and does nothing, and
reports the events/s from its first message to its last: the ceiling of a faust agent over the
changes topic, before any decision, against which ``bench.run`` measures the librdkafka loop that
routes and decides the whole matrix (docs/performance.md, "Why a librdkafka loop").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # see ops/admin.py

from bench.workload import events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.faust_agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    import faust  # only here: the benchmark of faust's own path

    name = f"bench-faust-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(name, 6, 1)])[name].result(30)
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
    for event in events(args.events):
        producer.produce(name, event.value, event.key)
        producer.poll(0)
    producer.flush(60)

    app = faust.App(name, broker=f"kafka://{args.bootstrap}", store="memory://", web_enabled=False)
    topic = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    @app.agent(topic)
    async def nothing(stream):  # type: ignore[no-untyped-def]
        async for _value in stream:
            seen["count"] += 1
            now = time.monotonic()
            seen["first"] = seen["first"] or now
            seen["last"] = now
            if seen["count"] >= args.events:
                report(seen["count"], seen["last"] - seen["first"])
                admin.delete_topics([name])
                os._exit(0)  # faust's worker has no way out of its own loop that a benchmark needs

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()
    return 1  # not reached: the agent ends the process once it has every event


def report(count: int, seconds: float) -> None:
    rate = count / max(seconds, 1e-3)
    print(f"faust agent doing nothing: {count} events in {seconds:.2f}s = {rate:.0f} events/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
