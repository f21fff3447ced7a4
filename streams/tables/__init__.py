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

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import faust
from faust.streams import _current_event  # the context variable behind faust.current_event()
from faust.types import EventT, TableT

from streams.core.contract import System
from streams.core.decide import Decision, LinkUpdate, Written
from streams.settings import Settings
from streams.tables.tenants import TenantSettings

SEEN_EVENTS_PER_RECORD = 32

TableName = Literal["links", "written", "crm_records", "seen_events", "orders"]
TABLE_NAMES: tuple[TableName, ...] = ("links", "written", "crm_records", "seen_events", "orders")


@dataclass
class Tables:
    """The processor's faust tables (``faust.Table`` / ``faust.GlobalTable``: str keys, JSON values)."""

    links: TableT[str, Any]
    written: TableT[str, Any]
    crm_records: TableT[str, Any]
    seen_events: TableT[str, Any]
    orders: TableT[str, Any]

    def table(self, name: TableName) -> Any:
        return getattr(self, name)


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


_DELETED = object()


class BatchState:
    """The tables as one batch sees them: what earlier events of the batch changed, over the tables.

    ``streams.core.decide.State`` for the core, so each event of a batch sees the state changes of
    the events before it. Nothing reaches the tables until ``write_to_tables`` (after the batch's
    outputs are on the broker): an event is never remembered as processed before its outputs are.
    """

    def __init__(self, tables: Tables, tenants: TenantSettings, default_order_target: str) -> None:
        self.tables = tables
        self.tenants = tenants
        self.default_order_target = default_order_target
        # table -> key -> (value or _DELETED, the event whose partition the write belongs to)
        self._changes: dict[TableName, dict[str, tuple[Any, EventT | None]]] = {name: {} for name in TABLE_NAMES}

    # --- reading and writing through the batch -----------------------------------------------

    def get(self, table: TableName, key: str) -> Any:
        change = self._changes[table].get(key)
        if change is not None:
            value = change[0]
            return None if value is _DELETED else value
        return self.tables.table(table).get(key)

    def set(self, table: TableName, key: str, value: Any, event: EventT | None) -> None:
        self._changes[table][key] = (value, event)

    def delete(self, table: TableName, key: str, event: EventT | None) -> None:
        if self.get(table, key) is not None:
            self._changes[table][key] = (_DELETED, event)

    @property
    def changed_keys(self) -> int:
        return sum(len(changes) for changes in self._changes.values())

    def write_to_tables(self) -> None:
        """Write the batch's changes, one write per key (each under its event: its partition)."""
        for name, changes in self._changes.items():
            table = self.tables.table(name)
            for key, (value, event) in changes.items():
                with as_current_event(event):
                    if value is _DELETED:
                        if key in table:
                            del table[key]
                    else:
                        table[key] = value
            changes.clear()

    # --- streams.core.decide.State -------------------------------------------------------------

    def order_target(self, tenant: str) -> str:
        return str(self.tenants.get(tenant).get("order_target") or self.default_order_target)

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        if code:
            link = self.get("links", f"{tenant}:{family}:code={code}")
            if link and link.get(system):
                return str(link[system])
        if other_id:
            other = System.ACCT if system is System.CRM else System.CRM
            link = self.get("links", f"{tenant}:{family}:{other}={other_id}")
            if link and link.get(system):
                return str(link[system])
        return None

    def last_written(self, key: str) -> Written | None:
        value = self.get("written", key)
        if not value:
            return None
        return Written(fields=value["fields"], event_id=value["event_id"], command_id=value["command_id"])

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = self.get("crm_records", f"{tenant}:{entity}:{code}")
        return record

    def crm_customers(self, tenant: str) -> Iterable[dict[str, Any]]:
        prefix = f"{tenant}:customer:"
        keys = {k for k in self.tables.crm_records if k.startswith(prefix)}
        keys |= {k for k in self._changes["crm_records"] if k.startswith(prefix)}
        return [record for key in sorted(keys) if (record := self.get("crm_records", key))]

    # --- what events teach -----------------------------------------------------------------------

    def is_duplicate(self, record_key: str, event_id: str) -> bool:
        return event_id in (self.get("seen_events", record_key) or ())

    def mark_seen(self, record_key: str, event_id: str, event: EventT | None) -> None:
        recent = list(self.get("seen_events", record_key) or ())
        self.set("seen_events", record_key, [*recent, event_id][-SEEN_EVENTS_PER_RECORD:], event)

    def apply_links(self, links: Iterable[LinkUpdate]) -> None:
        """Merge what each update says of one record's ids into every key the link is found by."""
        for link in links:
            merged: dict[str, Any] = {}
            for key in _link_keys(link.tenant, link.family, link.code, link.ids):
                merged.update(self.get("links", key) or {})
            merged.update(link.ids)
            if link.code:
                merged["code"] = link.code
            ids = {k: v for k, v in merged.items() if k != "code"}
            for key in _link_keys(link.tenant, link.family, merged.get("code"), ids):
                if self.get("links", key) != merged:
                    self.set("links", key, merged, None)

    def apply_decision(self, decision: Decision) -> None:
        """Remember what the decision taught: links, CRM records, what was written."""
        self.apply_links(decision.links)
        for key in decision.forget_written:
            self.delete("written", key, None)
        for record in decision.crm_records:
            key = f"{record.tenant}:{record.entity}:{record.code}"
            if record.record is None:
                self.delete("crm_records", key, None)
            else:
                self.set("crm_records", key, record.record, None)
        for key, written in decision.written.items():
            self.set(
                "written",
                key,
                {"fields": written.fields, "event_id": written.event_id, "command_id": written.command_id},
                None,
            )


@contextlib.contextmanager
def as_current_event(event: EventT | None) -> Iterator[None]:
    """Make ``event`` faust's current event while a table is written.

    A partitioned table (and its RocksDB store) writes to the partition of the event being
    processed, which faust reads from its current event; a batch is written after the stream moved
    past its events. Global tables pick their changelog partition themselves (``event`` None).
    """
    if event is None:
        yield
        return
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
