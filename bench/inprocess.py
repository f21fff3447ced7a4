"""The core as the agents run it, in one process, without Kafka or faust: decode, decide, remember.

Each event is decoded from its bytes, decided and remembered as the worker does
(``streams.replay.decide_and_remember``: acct orders, contracts, vouchers and receipts through the order's
aggregate, everything else through ``decide``) in a ``PartitionState`` over a store in memory, written to the
store every ``batch`` events as the processing loop does. ``rocksdb``: the store is a RocksDB database in
that directory, as a worker's is (``LIENTHONG_STORE=rocksdb://``), instead of a dict.
"""

from __future__ import annotations

from pathlib import Path

from bench.workload import Event
from streams.core.contract import decode_change_event
from streams.core.rules import load_rules
from streams.replay import decide_and_remember
from streams.tables.memory import RocksDBMemory
from streams.tables.state import NoTenantSettings, PartitionState, in_memory_state
from streams.tables.store import RocksDBPartitionStore


def run_core(workload: list[Event], batch: int = 1000, *, rocksdb: Path | None = None) -> tuple[int, int]:
    """Returns (events decided, commands)."""
    rules = load_rules()
    if rocksdb is None:
        state = in_memory_state()
    else:
        store = RocksDBPartitionStore(rocksdb, 0, RocksDBMemory.of(64, 64))
        state = PartitionState(store, NoTenantSettings(), "sale_order")
    commands = 0
    for n, event in enumerate(workload, start=1):
        _, system, entity = event.topic.split(".")
        change = decode_change_event(event.value, topic_system=system, topic_entity=entity)
        commands += sum(len(decision.commands) for decision in decide_and_remember(state, change, rules, now_ms=0))
        if n % batch == 0:
            state.write_to_store(None)  # as the loop does once a batch is committed
    state.write_to_store(None)
    state.store.close()
    return len(workload), commands
