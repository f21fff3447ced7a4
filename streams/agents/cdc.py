"""The CDC agent: every ``cdc.<system>.<entity>`` topic through the sync matrix."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import EventT

from common.names import System
from streams.agents.pipeline import (
    AgentDeps,
    Batch,
    Where,
    count_decision,
    count_duplicate,
    count_event,
    rekeyed_headers,
    run_batches,
    where_of,
)
from streams.core.aggregates import AGGREGATE_ENTITIES, aggregate_inputs, check_document
from streams.core.contract import BadInput, ChangeEvent, decode_change_event
from streams.core.decide import decide, resolve_action
from streams.outputs import OutputMessage
from streams.topics import parse_cdc_topic


def register_cdc_agent(app: faust.App, source: Any, deps: AgentDeps) -> Any:
    @app.agent(source, name="lienthong.cdc", concurrency=1)
    async def cdc(stream: Any) -> None:
        """Apply the sync matrix to every change event, a batch at a time.

        Input topics: ``cdc.crm.<entity>``, ``cdc.acct.<entity>`` (raw bytes; decoded here so that a
        bad message can be dead-lettered whole). Key: ``<tenant>:<record id>``.
        Tables: ``links``, ``written``, ``crm_records`` (read and updated through the batch's
        ``BatchState``), ``seen_events`` (duplicates of an ``event_id`` are dropped); tenant settings
        from ``config.tenants``.
        Output topics: ``commands.crm`` / ``commands.acct`` (key ``<tenant>:<entity>:<target key>``),
        ``audit.sync`` (one record per change), ``dlq.cdc`` (bad input, reason in headers), and the
        internal ``<app id>-aggregate-inputs`` topic: acct orders, contracts, sales vouchers and
        receipts re-keyed by ``<tenant>:<acct order id>`` for the aggregates agent, which decides them.
        """
        await run_batches(stream, deps, "cdc", process_change)

    return cdc


def process_change(batch: Batch, event: EventT) -> None:
    """Stage one CDC message: its decision, its re-keyed document, or its dead letter."""
    message = event.message
    where = where_of(event)
    if event.value is None:
        return  # a tombstone (Debezium writes one after each delete, for log compaction): not a change
    deps = batch.deps
    with batch.or_dead_letter(event, message.key, where):
        names = parse_cdc_topic(message.topic, deps.topic_prefix)
        if names is None:
            raise BadInput("unknown_topic", f"{message.topic} is not a cdc.<system>.<entity> topic")
        change = decode_change_event(
            event.value,
            topic_system=names[0],
            topic_entity=names[1],
            headers=event.headers,
            topic=where.topic,
            partition=where.partition,
            offset=where.offset,
            key=message.key,
        )
        if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
            resolve_action(change, deps.rules)
            check_document(change)  # past it, the document names its order
            batch.stage(rekeyed(batch, event, change, where), lambda: None, state_values=[])
            batch.count("forwarded")
            count_event(batch, change.system.value, change.entity, "forwarded")
            return
        record_key = f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}"
        state = batch.state
        if state.is_duplicate(record_key, change.event_id):
            count_duplicate(batch, change, record_key)
            return
        decision = decide(change, state, deps.rules, now_ms=batch.now_ms)

        def remember_event() -> None:
            state.apply_decision(decision)
            state.mark_seen(record_key, change.event_id, event)

        batch.stage(
            batch.decision_messages(decision, change.ts_ms),
            remember_event,
            state_values=[record.record for record in decision.crm_records if record.record is not None]
            + [written.fields for written in decision.written.values()],
        )
        count_decision(batch, change, decision, "decided")


def rekeyed(batch: Batch, event: EventT, change: ChangeEvent, where: Where) -> list[OutputMessage]:
    """An acct document for the aggregates agent, keyed by the order it counts for (and, for a voucher
    or receipt moved to another order, a removal from the old one).

    The message carries the original bytes and headers, with where they came from (``origin.*``,
    the original key) and which part of the document it is: the aggregates agent decodes it again,
    so that its dead letters carry the original key and bytes, not a re-encoding.
    """
    topic = batch.deps.topics.aggregate_inputs
    return [
        OutputMessage(topic, key.encode(), event.value, rekeyed_headers(event, where, part))
        for key, _document, part in aggregate_inputs(change)
    ]
