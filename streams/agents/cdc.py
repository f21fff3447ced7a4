"""The CDC agent: every ``cdc.<system>.<entity>`` topic through the sync matrix."""

from __future__ import annotations

import logging
from typing import Any

import faust
import orjson
from faust.types import EventT

from streams.agents.pipeline import AgentDeps, Batch, Unstageable, Where, remember, run_batches, where_of
from streams.core.aggregates import AGGREGATE_ENTITIES, aggregate_inputs, check_document
from streams.core.contract import BadInput, ChangeEvent, System, decode_change_event, dumps
from streams.core.decide import decide, resolve_action
from streams.outputs import OutputMessage
from streams.topics import parse_cdc_topic

log = logging.getLogger(__name__)


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
    message, raw = event.message, event.value
    where = where_of(event)
    if raw is None:
        return  # a tombstone (Debezium writes one after each delete, for log compaction): not a change
    deps = batch.deps
    try:
        names = parse_cdc_topic(message.topic, deps.topic_prefix)
        if names is None:
            raise BadInput("unknown_topic", f"{message.topic} is not a cdc.<system>.<entity> topic")
        change = decode_change_event(
            raw,
            topic_system=names[0],
            topic_entity=names[1],
            headers=event.headers,
            topic=where.topic,
            partition=where.partition,
            offset=where.offset,
        )
        if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
            resolve_action(change, deps.rules)
            check_document(change)  # past it, the document names its order
            batch.stage(rekeyed(batch, change, where), lambda: None, state_values=[])
            deps.counts["forwarded"] += 1
            return
        record_key = f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}"
        state = batch.state
        if state.is_duplicate(record_key, change.event_id):
            log.info("dropped duplicate event %s of %s", change.event_id, record_key)
            deps.counts["duplicate"] += 1
            return
        decision = decide(change, state, deps.rules, now_ms=batch.now_ms)

        def remember_event() -> None:
            remember(state, decision)()
            state.mark_seen(record_key, change.event_id, event)

        batch.stage(
            batch.decision_messages(decision),
            remember_event,
            state_values=[record.record for record in decision.crm_records if record.record is not None]
            + [written.fields for written in decision.written.values()],
        )
        deps.counts["decided"] += 1
    except BadInput as bad:
        batch.dead_letter(message.key, raw, bad.kind, bad.message, where)
    except Unstageable as failed:
        batch.dead_letter(message.key, raw, failed.kind, failed.message, where)
    except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
        log.exception("failed on %s@%s:%s", where.topic, where.partition, where.offset)
        batch.dead_letter(message.key, raw, "internal", f"{type(exc).__name__}: {exc}", where)


def rekeyed(batch: Batch, change: ChangeEvent, where: Where) -> list[OutputMessage]:
    """An acct document event for the aggregates agent, keyed by the order it counts for (and, for a
    voucher or receipt moved to another order, a removal from the old one), with its origin."""
    headers = [
        ("origin.topic", where.topic.encode()),
        ("origin.partition", str(where.partition).encode()),
        ("origin.offset", str(where.offset).encode()),
    ]
    topic = batch.deps.topics.aggregate_inputs
    messages = []
    for key, event in aggregate_inputs(change):
        try:
            value = dumps(event)
        except (orjson.JSONEncodeError, TypeError) as exc:
            raise Unstageable("unserializable", f"the document cannot be written as JSON: {exc}") from None
        messages.append(OutputMessage(topic, key.encode(), value, headers))
    return messages
