"""The aggregates agent: accounting documents become the statuses CRM shows (SO-9..SO-14, CT-11, CT-12)."""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import EventT

from common.logs import about
from streams.agents.pipeline import (
    ORIGIN_KEY,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    PART,
    AgentDeps,
    Batch,
    Unstageable,
    Where,
    count_decision,
    count_event,
    remember,
    run_batches,
)
from streams.core.aggregates import DOCUMENT, OrderAggregate, aggregate_inputs, decide_for_order
from streams.core.contract import BadInput, ChangeEvent, decode_change_event
from streams.topics import parse_cdc_topic

log = logging.getLogger(__name__)


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


def _header(event: EventT, name: str) -> bytes | None:
    headers = event.headers or {}
    value = headers.get(name)
    return value if isinstance(value, bytes) or value is None else str(value).encode()


def origin_of(event: EventT) -> tuple[Where, bytes | None]:
    """Where the CDC agent read the document (its ``origin.*`` headers), and under which key."""
    message = event.message

    def text(name: str) -> str:
        return (_header(event, name) or b"").decode("utf-8", "replace")

    where = Where(
        text(ORIGIN_TOPIC) or message.topic,
        int(text(ORIGIN_PARTITION) or message.partition),
        int(text(ORIGIN_OFFSET) or message.offset),
    )
    return where, _header(event, ORIGIN_KEY)


def decode_document(event: EventT, where: Where, original_key: bytes | None, prefix: str) -> ChangeEvent:
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
    part = (_header(event, PART) or DOCUMENT.encode()).decode()
    for key, document, its_part in aggregate_inputs(change):
        if key == order_key and its_part == part:
            return document
    raise BadInput("schema", f"{where.topic}: the document does not count for order {order_key} ({part})")


def process_document(batch: Batch, event: EventT) -> None:
    """Stage one re-keyed document: the order's new aggregate and derived commands, or a dead letter
    (with the original key and bytes)."""
    message = event.message
    where, original_key = origin_of(event)
    deps = batch.deps
    try:
        change = decode_document(event, where, original_key, deps.topic_prefix)
        key = message.key.decode() if message.key is not None else ""
        stored = batch.state.get("orders", key)
        tenant, _, order_id = key.partition(":")
        aggregate = OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant=tenant, order_id=order_id)
        if change.event_id in aggregate.seen:
            log.info(
                "dropped duplicate event %s of order %s",
                change.event_id,
                key,
                extra=about(tenant=change.tenant, entity=change.entity, record_id=change.record_id),
            )
            batch.count("duplicate")
            count_event(batch, change.system.value, change.entity, "duplicate")
            return
        decision = decide_for_order(change, aggregate, batch.state, deps.rules, now_ms=batch.now_ms)
        stored_value = aggregate.to_json()

        def remember_document() -> None:
            remember(batch.state, decision)()
            batch.state.set("orders", key, stored_value, event)

        batch.stage(batch.decision_messages(decision, change.ts_ms), remember_document, state_values=[stored_value])
        batch.count("aggregated")
        count_decision(batch, change, decision)
    except BadInput as bad:
        batch.dead_letter(original_key, event.value, bad.kind, bad.message, where)
    except Unstageable as failed:
        batch.dead_letter(original_key, event.value, failed.kind, failed.message, where)
    except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
        log.exception("failed on %s (order %s)", where, message.key)
        batch.dead_letter(original_key, event.value, "internal", f"{type(exc).__name__}: {exc}", where)
