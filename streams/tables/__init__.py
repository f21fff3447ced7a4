"""Faust tables of the processor and the ``State`` the rule interpreter reads through them.

Each table's key, value, writers and readers are in ``docs/state.md``: ``links`` (X-3),
``written`` (X-2), ``crm_records`` (CUS-10, X-4), ``orders`` (the aggregates) and ``seen_events``
(duplicate event ids).

Global tables are used because one record's rule reads state that another record (on another
partition, maybe another worker) wrote: an order reads its customer's link. They live in memory
(``memory://``) and are rebuilt from their changelog topics at start-up; faust's RocksDB store
with ``use_partitioner`` can serve a worker its own stale copy of a key that another worker
changed, which the memory store cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import faust

from streams.core.contract import System
from streams.core.decide import Decision, LinkUpdate, Written
from streams.settings import Settings
from streams.tables.tenants import TenantSettings

SEEN_EVENTS_PER_RECORD = 32


@dataclass
class Tables:
    links: Any
    written: Any
    crm_records: Any
    seen_events: Any
    orders: Any

    def is_duplicate(self, record_key: str, event_id: str) -> bool:
        return event_id in (self.seen_events.get(record_key) or ())

    def mark_seen(self, record_key: str, event_id: str) -> None:
        recent = list(self.seen_events.get(record_key) or ())
        self.seen_events[record_key] = ([*recent, event_id])[-SEEN_EVENTS_PER_RECORD:]


def define_tables(app: faust.App, settings: Settings) -> Tables:
    def global_table(name: str, help: str) -> Any:
        return app.GlobalTable(
            name,
            default=None,
            key_type=str,
            value_type=None,
            partitions=1,
            # Writes come from agents on any source partition: let the producer pick the
            # changelog partition (there is one) instead of the event's partition.
            use_partitioner=True,
            # A bare "memory://" is a falsy yarl URL, and faust would fall back to the app's store.
            store="memory://global",
            recovery_buffer_size=1,
            help=help,
        )

    return Tables(
        links=global_table("links", "X-3 cross-system links by code and by id"),
        written=global_table("written", "X-2 what each target record was last written"),
        crm_records=global_table("crm_records", "last seen CRM customers and products by code"),
        # Keyed by the record, written while processing that record's event: co-partitioned with
        # the CDC topics (same key on the same partition), so each worker holds its own records'.
        seen_events=app.Table(
            "seen_events",
            default=None,
            key_type=str,
            value_type=None,
            partitions=settings.topic_partitions,
            help="recent event ids per record",
        ),
        # Keyed <tenant>:<acct order or contract id>, written only by the aggregates agent while it
        # processes that key's message of <app id>-aggregate-inputs: co-partitioned by construction.
        orders=app.Table(
            "orders",
            default=None,
            key_type=str,
            value_type=None,
            partitions=settings.topic_partitions,
            help="per accounting order: contributions of its vouchers and receipts, what was sent",
        ),
    )


def _link_keys(tenant: str, family: str, code: str | None, ids: dict[str, str]) -> list[str]:
    keys = [f"{tenant}:{family}:{system}={record_id}" for system, record_id in ids.items()]
    if code:
        keys.insert(0, f"{tenant}:{family}:code={code}")
    return keys


class TableState:
    """``streams.core.decide.State`` over the faust tables, plus tenant settings."""

    def __init__(self, tables: Tables, tenants: TenantSettings, default_order_target: str) -> None:
        self.tables = tables
        self.tenants = tenants
        self.default_order_target = default_order_target

    def order_target(self, tenant: str) -> str:
        return self.tenants.get(tenant).get("order_target") or self.default_order_target

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        links = self.tables.links
        candidates = []
        if code:
            candidates.append(f"{tenant}:{family}:code={code}")
        if other_id:
            other = System.ACCT if system is System.CRM else System.CRM
            candidates.append(f"{tenant}:{family}:{other.value}={other_id}")
        for key in candidates:
            link = links.get(key)
            if link and link.get(system.value):
                return str(link[system.value])
        return None

    def last_written(self, key: str) -> Written | None:
        value = self.tables.written.get(key)
        if not value:
            return None
        return Written(fields=value["fields"], event_id=value["event_id"], command_id=value["command_id"])

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        return self.tables.crm_records.get(f"{tenant}:{entity}:{code}")

    def crm_customers(self, tenant: str) -> Iterable[dict[str, Any]]:
        prefix = f"{tenant}:customer:"
        return [v for k, v in self.tables.crm_records.items() if k.startswith(prefix) and v]


def apply_links(tables: Tables, links: Iterable[LinkUpdate]) -> None:
    """Merge what each update says of one record's ids into every key the link is found by."""
    for link in links:
        merged: dict[str, Any] = {}
        keys = _link_keys(link.tenant, link.family, link.code, link.ids)
        for key in keys:
            merged.update(tables.links.get(key) or {})
        merged.update(link.ids)
        if link.code:
            merged["code"] = link.code
        for key in _link_keys(
            link.tenant, link.family, merged.get("code"), {k: v for k, v in merged.items() if k != "code"}
        ):
            if tables.links.get(key) != merged:
                tables.links[key] = merged


def apply_decision(tables: Tables, decision: Decision) -> None:
    """Remember what the decision taught: links, CRM records, what was written."""
    apply_links(tables, decision.links)
    for key in decision.forget_written:
        if tables.written.get(key) is not None:
            del tables.written[key]
    for record in decision.crm_records:
        key = f"{record.tenant}:{record.entity}:{record.code}"
        if record.record is None:
            if key in tables.crm_records:
                del tables.crm_records[key]
        else:
            tables.crm_records[key] = record.record
    for key, written in decision.written.items():
        tables.written[key] = {"fields": written.fields, "event_id": written.event_id, "command_id": written.command_id}
