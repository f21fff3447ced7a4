"""The aggregates agent: accounting documents become the statuses CRM shows (SO-9..SO-14, CT-11, CT-12)."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import EventT

from streams.agents.pipeline import AgentDeps, Batch, Where, count_decision, count_duplicate, origin_of, run_batches
from streams.core.aggregates import DOCUMENT, OrderAggregate, aggregate_inputs, decide_for_order
from streams.core.contract import BadInput, ChangeEvent, decode_change_event
from streams.topics import parse_cdc_topic


def register_aggregates_agent(app: faust.App, source: Any, deps: AgentDeps) -> Any:
    @app.agent(source, name="lienthong.aggregates", concurrency=1)
    async def aggregates(stream: Any) -> None:
        """Keep one aggregate per accounting order or contract and derive CRM statuses from it.

        Input topic: the internal ``<app id>-aggregate-inputs`` (change events of acct ``sale_order``,
        ``contract``, ``sales_voucher``, ``receipt``, re-keyed by the CDC agent). Key:
        ``<tenant>:<acct order or contract id>``.
        Tables: ``orders`` (same key, co-partitioned with the input topic: per-document
        contributions, what was last sent, recent event ids), and ``links``/``written`` through the
        batch's ``BatchState``. Output topics: ``commands.crm`` (SO-8, CT-9, CT-10 and the derived
        rules), ``audit.sync`` (one record per change), ``dlq.cdc`` (a document that cannot be counted).
        """
        await run_batches(stream, deps, "aggregates", process_document)

    return aggregates


def decode_document(
    event: EventT, where: Where, original_key: bytes | None, part: str | None, prefix: str
) -> ChangeEvent:
    """The change event of a re-keyed document, decoded from its original bytes as the CDC agent did,
    and the part of it this message is (the document, or its removal from the order it left)."""
    names = parse_cdc_topic(where.topic, prefix)
    if names is None or event.message.key is None:
        raise BadInput("schema", f"a re-keyed document from {where.topic} without its origin or its order")
    change = decode_change_event(
        event.value,
        topic_system=names[0],
        topic_entity=names[1],
        headers=event.headers,
        topic=where.topic,
        partition=where.partition,
        offset=where.offset,
        key=original_key,
    )
    order_key = event.message.key.decode()
    part = part or DOCUMENT
    for key, document, its_part in aggregate_inputs(change):
        if key == order_key and its_part == part:
            return document
    raise BadInput("schema", f"{where.topic}: the document does not count for order {order_key} ({part})")


def process_document(batch: Batch, event: EventT) -> None:
    """Stage one re-keyed document: the order's new aggregate and derived commands, or a dead letter
    (with the original key and bytes)."""
    message = event.message
    where, original_key, part = origin_of(event)
    deps = batch.deps
    with batch.or_dead_letter(event, original_key, where):
        change = decode_document(event, where, original_key, part, deps.topic_prefix)
        key = message.key.decode() if message.key is not None else ""
        stored = batch.state.get("orders", key)
        tenant, _, order_id = key.partition(":")
        aggregate = OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant=tenant, order_id=order_id)
        if change.event_id in aggregate.seen:
            count_duplicate(batch, change, f"order {key}")
            return
        decision = decide_for_order(change, aggregate, batch.state, deps.rules, now_ms=batch.now_ms)
        stored_value = aggregate.to_json()

        def remember_document() -> None:
            batch.state.apply_decision(decision)
            batch.state.set("orders", key, stored_value, event)

        batch.stage(batch.decision_messages(decision, change.ts_ms), remember_document, state_values=[stored_value])
        count_decision(batch, change, decision, "aggregated")
