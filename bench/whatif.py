"""Benchmark: ``lienthong whatif``'s replay, the core alone (no Kafka), per core.

    .venv/bin/python -m bench.whatif [--events 50000] [--tenants 1]

The business workload (``bench/workload.py``) as retained messages, replayed by ``streams.replay``:
once (one run of the core, as ``whatif`` does per settings), then twice side by side as ``whatif``
does (settings in force and proposed ones: PRD-1 off), beside a baseline in the same run: the same
messages decoded only (``decode_change_event``). CPU time of this process, so other load on the
machine moves the numbers less than wall time would. Not a test: nothing asserts the numbers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.workload import events
from common.messages import Retained
from streams.core.rules import load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings
from streams.replay import Replay, read, whatif


def cpu_rate(count: int, work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return count / max(time.process_time() - started, 1e-9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--tenants", type=int, default=1)
    args = parser.parse_args(argv)
    messages = [
        Retained(e.topic, 0, n, n, e.key, e.value) for n, e in enumerate(events(args.events, tenants=args.tenants))
    ]
    rules = load_rules()
    proposed = SyncSettings(schema_version=2, revision=1, rules_off=frozenset({"PRD-1"}))
    rows = [
        ("decode only (baseline)", cpu_rate(len(messages), lambda: [read(m) for m in messages])),
        ("one replay (decode + decide + state)", cpu_rate(len(messages), lambda: list(Replay(rules).run(messages)))),
        (
            "whatif: decode once, two replays, compare",
            cpu_rate(
                len(messages),
                lambda: whatif(
                    messages,
                    rules_in_force=rules,
                    settings_in_force=DEFAULT_SETTINGS,
                    rules_proposed=rules,
                    settings_proposed=proposed,
                ),
            ),
        ),
    ]
    print(f"{len(messages)} events, {args.tenants} tenant(s); change events per second of CPU (one core):")
    for name, rate in rows:
        print(f"  {name:<45} {rate:>10,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
