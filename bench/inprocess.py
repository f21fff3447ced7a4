"""The core as the agents run it, in one process, without Kafka or faust: decode, decide, remember.

Each event is decoded from its bytes, routed as the CDC agent routes it (acct orders, contracts,
vouchers and receipts through the order's aggregate, ``decide_for_order``; everything else through
``decide``), and its decision applied to a ``PartitionState`` over a store in memory, written to the store every
``batch`` events as the processing loop does.
"""

from __future__ import annotations

from bench.workload import Event
from common.names import System
from streams.core.aggregates import AGGREGATE_ENTITIES, OrderAggregate, aggregate_inputs, decide_for_order
from streams.core.contract import decode_change_event
from streams.core.decide import decide
from streams.core.rules import load_rules
from streams.tables.state import in_memory_state


def run_core(workload: list[Event], batch: int = 1000) -> tuple[int, int]:
    """Returns (events decided, commands)."""
    rules = load_rules()
    state = in_memory_state()
    commands = 0
    for n, event in enumerate(workload, start=1):
        _, system, entity = event.topic.split(".")
        change = decode_change_event(event.value, topic_system=system, topic_entity=entity)
        if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
            for key, document, _part in aggregate_inputs(change):
                stored = state.get("orders", key)
                tenant, _, order_id = key.partition(":")
                aggregate = OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant, order_id)
                decision = decide_for_order(document, aggregate, state, rules, now_ms=0)
                state.apply_decision(decision)
                state.set("orders", key, aggregate.to_json())
                commands += len(decision.commands)
        else:
            record_key = f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}"
            if state.is_duplicate(record_key, change.event_id):
                continue
            decision = decide(change, state, rules, now_ms=0)
            state.apply_decision(decision)
            state.mark_seen(record_key, change.event_id)
            commands += len(decision.commands)
        if n % batch == 0:
            state.write_to_store(None)  # as the loop does once a batch is committed
    state.write_to_store(None)
    return len(workload), commands
