"""The aggregates agent: accounting documents become the statuses CRM shows (SO-9..SO-14, CT-11, CT-12)."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from pydantic import ValidationError

from streams.agents.cdc import Outputs
from streams.core.aggregates import OrderAggregate, decide_for_order
from streams.core.contract import BadInput, ChangeEvent
from streams.core.rules import RuleBook
from streams.tables import Tables, TableState, apply_decision
from streams.tables.tenants import TenantSettings

log = logging.getLogger(__name__)


def register_aggregates_agent(
    app: faust.App,
    *,
    source: Any,
    outputs: Outputs,
    orders: Any,
    tables: Tables,
    state: TableState,
    tenants: TenantSettings,
    rules: RuleBook,
) -> Any:
    @app.agent(source, name="lienthong.aggregates", concurrency=1)
    async def aggregates(stream: Any) -> None:
        """Keep one aggregate per accounting order or contract and derive CRM statuses from it.

        Input topic: the internal ``<app id>-aggregate-inputs`` (change events of acct ``sale_order``,
        ``contract``, ``sales_voucher``, ``receipt``, re-keyed by the CDC agent). Key:
        ``<tenant>:<acct order or contract id>``.
        Tables: ``orders`` (same key, co-partitioned with the input topic: per-document
        contributions, what was last sent, recent event ids), and ``links``/``written`` through
        ``TableState``. Output topics: ``commands.crm`` (SO-8, CT-9, CT-10 and the derived rules),
        ``audit.sync`` (one record per change), ``dlq.cdc`` (a document that cannot be counted).
        """
        async for event in stream.events():
            message = event.message
            origin = {
                name: (event.headers or {}).get(f"origin.{name}", b"").decode()
                for name in ("topic", "partition", "offset")
            }
            where = {
                "topic": origin["topic"] or message.topic,
                "partition": int(origin["partition"] or message.partition),
                "offset": int(origin["offset"] or message.offset),
            }
            key = message.key.decode()
            try:
                change = ChangeEvent.model_validate_json(event.value)
                stored = orders.get(key)
                tenant, _, order_id = key.partition(":")
                aggregate = (
                    OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant=tenant, order_id=order_id)
                )
                if change.event_id in aggregate.seen:
                    log.info("dropped duplicate event %s of order %s", change.event_id, key)
                    continue
                await tenants.wait_until_current(int(message.timestamp * 1000))
                decision = decide_for_order(change, aggregate, state, rules, now_ms=int(time.time() * 1000))
            except (BadInput, ValidationError) as bad:
                kind, text = (bad.kind, bad.message) if isinstance(bad, BadInput) else ("schema", str(bad))
                await outputs.dead_letter(message.key, event.value, kind, text, **where)
                continue
            except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
                log.exception("failed on %s (order %s)", where, key)
                await outputs.dead_letter(message.key, event.value, "internal", f"{type(exc).__name__}: {exc}", **where)
                continue
            await outputs.publish(decision)
            apply_decision(tables, decision)
            orders[key] = aggregate.to_json()

    return aggregates
