"""The ``lienthong`` command line.

    lienthong worker                      run the stream processor (a faust worker)
    lienthong kafka start|stop|status     the local Apache Kafka broker (deploy/kafka/kafka.sh)
    lienthong topics create               create every topic of the contract, idempotently
    lienthong topics list                 the contract's topics with their settings
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    if not KAFKA_SCRIPT.exists():
        print(f"lienthong: {KAFKA_SCRIPT} not found; run from a checkout of the project "
              "(pip install -e .)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    first = settings.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        print(f"lienthong: the local broker runs on loopback only; LIENTHONG_BOOTSTRAP_SERVERS={first}",
              file=sys.stderr)
        return 2
    env.setdefault("LIENTHONG_KAFKA_PORT", port or "9092")
    return subprocess.call(["bash", str(KAFKA_SCRIPT), args.action], env=env)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.topics import contract_topics

    if args.action == "list":
        for spec in contract_topics():
            config = ", ".join(f"{k}={v}" for k, v in spec.kafka_config().items())
            print(f"{settings.topic_prefix}{spec.name}\t{spec.role}\t{config}")
        return 0
    from streams.admin import create_topics

    try:
        outcomes = create_topics(settings)
    except RuntimeError as exc:
        print(f"lienthong topics create: {exc}", file=sys.stderr)
        return 1
    failed = False
    for outcome in outcomes:
        print(f"{outcome.status:8} {outcome.name} {outcome.detail}".rstrip())
        failed |= outcome.status == "mismatch"
    print(f"{sum(o.status == 'created' for o in outcomes)} created, "
          f"{sum(o.status == 'exists' for o in outcomes)} already there, "
          f"{sum(o.status == 'mismatch' for o in outcomes)} with other settings "
          f"({settings.topic_partitions} partitions, replication {settings.topic_replication_factor})")
    return 1 if failed else 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import run_worker

    # faust's Worker reads sys.argv for its own options; give it none of ours.
    sys.argv = [sys.argv[0]]
    run_worker(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lienthong", description="Keep AMIS CRM and AMIS Kế toán in sync.")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run the stream processor")
    worker.set_defaults(func=_worker)

    kafka = sub.add_parser("kafka", help="the local Apache Kafka broker on loopback")
    kafka.add_argument("action", choices=["start", "stop", "status", "fetch", "purge"])
    kafka.set_defaults(func=_kafka)

    topics = sub.add_parser("topics", help="contract topics")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(func=_topics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
