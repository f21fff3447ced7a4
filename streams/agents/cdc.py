"""The CDC agent: every ``cdc.<system>.<entity>`` topic through the sync matrix."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import faust

from streams.core.aggregates import AGGREGATE_ENTITIES, aggregate_inputs, check_document
from streams.core.contract import BadInput, ChangeEvent, System, dead_letter_headers, decode_change_event, dumps
from streams.core.decide import Decision, decide, resolve_action
from streams.core.rules import RuleBook
from streams.tables import Tables, TableState, apply_decision
from streams.tables.tenants import TenantSettings
from streams.topics import parse_cdc_topic

log = logging.getLogger(__name__)


class Outputs:
    """The topics an agent writes: commands per target system, the audit trail, dead letters."""

    def __init__(self, commands: Mapping[System, Any], audit: Any, dead_letters: Any) -> None:
        self.commands = commands
        self.audit = audit
        self.dead_letters = dead_letters

    async def publish(self, decision: Decision) -> None:
        """Send the decision's commands and its audit record; return once the broker has all of them.

        Callers update their tables (which remember the event as processed) only after this
        returns: a crash in between replays the event, which re-sends the same command ids and the
        audit record instead of losing them.
        """
        deliveries = [
            await self.commands[command.target].send(key=command.message_key.encode(), value=dumps(command))
            for command in decision.commands
        ]
        deliveries.append(await self.audit.send(key=decision.audit.message_key.encode(), value=dumps(decision.audit)))
        for delivery in deliveries:
            await delivery

    async def dead_letter(
        self, key: bytes | None, raw: bytes | None, kind: str, message: str, *, topic: str, partition: int, offset: int
    ) -> None:
        log.warning("dead-lettered %s@%s:%s: %s: %s", topic, partition, offset, kind, message)
        await self.dead_letters.send(
            key=key,
            value=raw,
            headers=dead_letter_headers(kind, message, topic=topic, partition=partition, offset=offset),
        )


def register_cdc_agent(
    app: faust.App,
    *,
    source: Any,
    outputs: Outputs,
    aggregate_inputs: Any,
    tables: Tables,
    state: TableState,
    tenants: TenantSettings,
    rules: RuleBook,
    topic_prefix: str,
) -> Any:
    @app.agent(source, name="lienthong.cdc", concurrency=1)
    async def cdc(stream: Any) -> None:
        """Apply the sync matrix to every change event.

        Input topics: ``cdc.crm.<entity>``, ``cdc.acct.<entity>`` (raw bytes; decoded here so that a
        bad message can be dead-lettered whole). Key: ``<tenant>:<record id>``.
        Tables: ``links``, ``written``, ``crm_records`` (read through ``TableState``, updated from the
        decision), ``seen_events`` (duplicates of an ``event_id`` are dropped); tenant settings from
        ``config.tenants``.
        Output topics: ``commands.crm`` / ``commands.acct`` (key ``<tenant>:<entity>:<target key>``),
        ``audit.sync`` (one record per change), ``dlq.cdc`` (bad input, reason in headers), and the
        internal ``<app id>-aggregate-inputs`` topic: acct orders, contracts, sales vouchers and
        receipts re-keyed by ``<tenant>:<acct order id>`` for the aggregates agent, which decides them.
        """
        async for event in stream.events():
            message = event.message
            where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
            names = parse_cdc_topic(message.topic, topic_prefix)
            if event.value is None:
                # A tombstone (Debezium writes one after each delete for log compaction): not a change.
                log.debug("skipped tombstone at %s@%s:%s", message.topic, message.partition, message.offset)
                continue
            try:
                if names is None:
                    raise BadInput("unknown_topic", f"{message.topic} is not a cdc.<system>.<entity> topic")
                change = decode_change_event(
                    event.value, topic_system=names[0], topic_entity=names[1], headers=event.headers, **where
                )
                if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
                    resolve_action(change, rules)
                    check_document(change)  # past it, the document names its order
                    await forward_to_aggregates(aggregate_inputs, change, where)
                    continue
                record_key = f"{change.tenant}:{change.system.value}:{change.entity}:{change.record_id}"
                if tables.is_duplicate(record_key, change.event_id):
                    log.info("dropped duplicate event %s of %s", change.event_id, record_key)
                    continue
                # Tenant settings written before this event reached the broker apply to it.
                await tenants.wait_until_current(int(message.timestamp * 1000))
                decision = decide(change, state, rules, now_ms=int(time.time() * 1000))
            except BadInput as bad:
                await outputs.dead_letter(message.key, event.value, bad.kind, bad.message, **where)
                continue
            except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
                log.exception("failed on %s@%s:%s", message.topic, message.partition, message.offset)
                await outputs.dead_letter(message.key, event.value, "internal", f"{type(exc).__name__}: {exc}", **where)
                continue
            await outputs.publish(decision)
            apply_decision(tables, decision)
            tables.mark_seen(record_key, change.event_id)

    return cdc


async def forward_to_aggregates(topic: Any, change: ChangeEvent, where: dict[str, Any]) -> None:
    """Re-key an acct document event by its order (``aggregate_inputs``), so that one worker holds
    each order's aggregate."""
    headers = {f"origin.{name}": str(value).encode() for name, value in where.items()}
    for order_key, event in aggregate_inputs(change):
        await topic.send(key=order_key.encode(), value=dumps(event), headers=headers)
