"""The aggregates agent: accounting documents become the statuses CRM shows (SO-9..SO-14, CT-11, CT-12)."""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import EventT
from pydantic import ValidationError

from streams.agents.pipeline import AgentDeps, Batch, Unstageable, Where, remember, run_batches
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import BadInput, ChangeEvent

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


def origin_of(event: EventT) -> Where:
    """Where the CDC agent read the document (its ``origin.*`` headers), for dead letters."""
    message, headers = event.message, event.headers or {}

    def header(name: str) -> str:
        value = headers.get(f"origin.{name}", b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    return Where(
        header("topic") or message.topic,
        int(header("partition") or message.partition),
        int(header("offset") or message.offset),
    )


def process_document(batch: Batch, event: EventT) -> None:
    """Stage one re-keyed document: the order's new aggregate and derived commands, or a dead letter."""
    message = event.message
    where = origin_of(event)
    deps = batch.deps
    try:
        if message.key is None:
            raise BadInput("schema", "a re-keyed document without a key (its order)")
        key = message.key.decode()
        change = ChangeEvent.model_validate_json(event.value)
        stored = batch.state.get("orders", key)
        tenant, _, order_id = key.partition(":")
        aggregate = OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant=tenant, order_id=order_id)
        if change.event_id in aggregate.seen:
            log.info("dropped duplicate event %s of order %s", change.event_id, key)
            deps.counts["duplicate"] += 1
            return
        decision = decide_for_order(change, aggregate, batch.state, deps.rules, now_ms=batch.now_ms)
        stored_value = aggregate.to_json()

        def remember_document() -> None:
            remember(batch.state, decision)()
            batch.state.set("orders", key, stored_value, event)

        batch.stage(batch.decision_messages(decision), remember_document, state_values=[stored_value])
        deps.counts["aggregated"] += 1
    except (BadInput, ValidationError) as bad:
        kind, text = (bad.kind, bad.message) if isinstance(bad, BadInput) else ("schema", str(bad))
        batch.dead_letter(message.key, event.value, kind, text, where)
    except Unstageable as failed:
        batch.dead_letter(message.key, event.value, failed.kind, failed.message, where)
    except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
        log.exception("failed on %s (order %s)", where, message.key)
        batch.dead_letter(message.key, event.value, "internal", f"{type(exc).__name__}: {exc}", where)
