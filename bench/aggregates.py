"""Benchmark: aggregate-table updates for 100k orders × 5 lines across 50 tenants.

    .venv/bin/python bench/aggregates.py [--orders 100000] [--tenants 50] [--lines 5]

Each order gets three accounting events (the order, a sales voucher delivering some of every line,
a receipt), as the aggregates agent sees them: JSON bytes decoded, the aggregate read from a RocksDB
store (rocksdict, the store faust's ``rocksdb://`` tables use), ``decide_for_order`` run, the
aggregate written back. Printed side by side with a baseline measured in the same run over the same
bytes: decode + read + write of the same store without the domain logic. It reports throughput
(events/s), per-event latency percentiles, peak memory (RSS) and the store's size on disk.

Not a test: numbers depend on the machine; nothing asserts them.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict

from common.names import System
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import ChangeEvent, change_event_json
from streams.core.decide import Written
from streams.core.rules import load_rules
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings


class BenchState:
    """The State the core reads: every order carries its crm_id, so links are never needed."""

    def order_target(self, tenant: str) -> str:
        return "sale_order"

    def sync_settings(self, tenant: str) -> SyncSettings:
        return DEFAULT_SETTINGS

    def linked_id(self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None):
        return None

    def last_written(self, key: str) -> Written | None:
        return None

    def crm_record(self, tenant: str, entity: str, code: str):
        return None

    def crm_customers(self, tenant: str):
        return []


def order_events(orders: int, tenants: int, lines: int) -> Iterator[tuple[bytes, bytes]]:
    """(table key, change event bytes): per order, the order, a voucher, a receipt."""
    ts = 1_764_201_600_000
    for n in range(orders):
        tenant = f"tenant-{n % tenants:02d}"
        order_id = f"AO{n}"
        order_lines = [
            {"line_id": f"L{i}", "product_code": f"SP{i}", "quantity": 4, "amount": "250000"} for i in range(lines)
        ]
        order = {
            "id": order_id,
            "code": f"DH{n:06d}",
            "crm_id": f"O{n}",
            "revenue_status": "recorded",
            "status": "in_progress",
            "total_amount": str(250000 * lines),
            "lines": order_lines,
        }
        voucher = {
            "id": f"V{n}",
            "code": f"XK{n:06d}",
            "order_id": order_id,
            "invoice_no": None,
            "einvoice_published": False,
            "lines": [
                {"line_id": f"L{i}", "product_code": f"SP{i}", "quantity": 2, "amount": "125000"} for i in range(lines)
            ],
        }
        receipt = {"id": f"R{n}", "code": f"PT{n:06d}", "order_id": order_id, "amount": str(100000 * lines)}
        key = f"{tenant}:{order_id}".encode()
        for i, (entity, record) in enumerate((("sale_order", order), ("sales_voucher", voucher), ("receipt", receipt))):
            yield (
                key,
                orjson.dumps(
                    change_event_json(
                        event_id=f"{tenant}-{entity}-{n}",
                        tenant=tenant,
                        system=System.ACCT,
                        entity=entity,
                        op="c",
                        ts_ms=ts + n * 3 + i,
                        before=None,
                        after=record,
                    )
                ),
            )


def run(
    name: str, process: Callable[[Rdict, bytes, bytes], int], stream: Iterable[tuple[bytes, bytes]], directory: Path
) -> dict[str, Any]:
    options = Options(raw_mode=True)
    store = Rdict(str(directory), options)
    samples: list[float] = []
    commands = count = 0
    gc.collect()
    started = time.perf_counter()
    for key, raw in stream:
        t0 = time.perf_counter_ns()
        commands += process(store, key, raw)
        if count % 50 == 0:
            samples.append((time.perf_counter_ns() - t0) / 1000)
        count += 1
    elapsed = time.perf_counter() - started
    store.flush()
    store.close()
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    quantiles = statistics.quantiles(samples, n=100)
    return {
        "name": name,
        "events": count,
        "seconds": elapsed,
        "rate": count / elapsed,
        "p50": quantiles[49],
        "p99": quantiles[98],
        "commands": commands,
        "disk_mb": size / 2**20,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def decode_and_store(store: Rdict, key: bytes, raw: bytes) -> int:
    """The floor: decode the event, read and write the same key, no domain logic."""
    event = ChangeEvent.model_validate_json(raw)
    stored = store.get(key)
    value = orjson.loads(stored) if stored else {"seen": []}
    value["seen"] = (value["seen"] + [event.event_id])[-64:]
    value.setdefault("documents", {})[event.record_id] = event.after
    store[key] = orjson.dumps(value)
    return 0


def make_lienthong():
    rules, state = load_rules(), BenchState()

    def lienthong(store: Rdict, key: bytes, raw: bytes) -> int:
        """What the aggregates agent does per event, minus Kafka."""
        event = ChangeEvent.model_validate_json(raw)
        stored = store.get(key)
        tenant, _, order_id = key.decode().partition(":")
        aggregate = OrderAggregate.from_json(orjson.loads(stored)) if stored else OrderAggregate(tenant, order_id)
        if event.event_id in aggregate.seen:
            return 0
        decision = decide_for_order(event, aggregate, state, rules, now_ms=0)
        store[key] = orjson.dumps(aggregate.to_json())
        return len(decision.commands)

    return lienthong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--lines", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lienthong-bench-"))
    try:
        print(
            f"{args.orders} orders × {args.lines} lines across {args.tenants} tenants; "
            f"3 events per order; python {sys.version.split()[0]}, {os.cpu_count()} cpu"
        )
        results = [
            run(
                "baseline (decode + store get/put)",
                decode_and_store,
                order_events(args.orders, args.tenants, args.lines),
                root / "baseline",
            ),
            run(
                "lienthong aggregates",
                make_lienthong(),
                order_events(args.orders, args.tenants, args.lines),
                root / "lienthong",
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{'':36} {'events':>9} {'seconds':>8} {'events/s':>9} {'p50 µs':>8} {'p99 µs':>8} "
        f"{'commands':>9} {'disk MB':>8} {'peak RSS MB':>12}"
    )
    for r in results:
        print(
            f"{r['name']:36} {r['events']:>9} {r['seconds']:>8.1f} {r['rate']:>9.0f} {r['p50']:>8.0f} "
            f"{r['p99']:>8.0f} {r['commands']:>9} {r['disk_mb']:>8.1f} {r['rss_mb']:>12.0f}"
        )
    base, ours = results
    print(
        f"lienthong runs at {ours['rate'] / base['rate']:.0%} of the baseline's rate "
        f"({ours['commands']} derived commands; peak RSS is the process's, cumulative)"
    )


if __name__ == "__main__":
    main()
