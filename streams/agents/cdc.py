"""The CDC agent: every ``cdc.<system>.<entity>`` topic through the sync matrix."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from streams.core.contract import BadInput, System, decode_change_event, dumps
from streams.core.decide import decide
from streams.core.rules import RuleBook
from streams.tables import TableState, Tables, apply_decision
from streams.tables.tenants import TenantSettings
from streams.topics import parse_cdc_topic

log = logging.getLogger(__name__)


def dead_letter_headers(kind: str, message: str, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """The contract's dead-letter headers."""
    return {
        "error.kind": kind.encode(),
        "error.message": message.encode(),
        "origin.topic": topic.encode(),
        "origin.partition": str(partition).encode(),
        "origin.offset": str(offset).encode(),
        "failed.at_ms": str(int(time.time() * 1000)).encode(),
    }


def register_cdc_agent(
    app: faust.App,
    *,
    source: Any,
    commands: dict[System, Any],
    audit: Any,
    dead_letters: Any,
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
        ``audit.sync`` (one record per change), ``dlq.cdc`` (bad input, reason in headers).
        """
        async for event in stream.events():
            message = event.message
            raw = event.value
            names = parse_cdc_topic(message.topic, topic_prefix)
            try:
                if names is None:
                    raise BadInput("unknown_topic", f"{message.topic} is not a cdc.<system>.<entity> topic")
                change = decode_change_event(
                    raw, topic_system=names[0], topic_entity=names[1], topic=message.topic,
                    partition=message.partition, offset=message.offset, headers=event.headers,
                )
                # Tenant settings written before this event reached the broker apply to it.
                await tenants.wait_until_current(int(message.timestamp * 1000))
                decision = decide(change, state, rules, now_ms=int(time.time() * 1000))
            except BadInput as bad:
                log.warning("dead-lettered %s@%s:%s: %s", message.topic, message.partition, message.offset, bad)
                await dead_letters.send(
                    key=message.key, value=raw,
                    headers=dead_letter_headers(bad.kind, bad.message, message.topic, message.partition, message.offset),
                )
                continue
            except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
                log.exception("failed on %s@%s:%s", message.topic, message.partition, message.offset)
                await dead_letters.send(
                    key=message.key, value=raw,
                    headers=dead_letter_headers("internal", f"{type(exc).__name__}: {exc}", message.topic,
                                                message.partition, message.offset),
                )
                continue
            record_key = f"{change.tenant}:{change.system.value}:{change.entity}:{change.record_id}"
            if tables.is_duplicate(record_key, change.event_id):
                log.info("dropped duplicate event %s of %s", change.event_id, record_key)
                continue
            deliveries = [
                await commands[command.target].send(key=command.message_key.encode(), value=dumps(command))
                for command in decision.commands
            ]
            # The event is marked seen only once its commands are on the broker: a crash in between
            # replays the event, which re-sends the same command ids instead of losing them.
            for delivery in deliveries:
                await delivery
            await audit.send(key=decision.audit.message_key.encode(), value=dumps(decision.audit))
            apply_decision(tables, decision)
            tables.mark_seen(record_key, change.event_id)

    return cdc
