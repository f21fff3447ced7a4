"""A partition's tables as one batch sees them: the store, overlaid with what the batch changed.

``PartitionState`` is the ``State`` the core reads (``streams.core.decide.State``) for the tenants of
one partition of the changes topic: each event of a batch sees the changes of the events before it,
and nothing reaches the store before the batch is durable. ``changelog()`` gives the batch's changes
as state-changelog messages (sent in the batch's transaction); ``write_to_store()`` applies them
once the transaction has committed (``streams.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from common.names import System
from streams.core.decide import Decision, LinkUpdate, Written
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings
from streams.outputs import OutputMessage
from streams.tables.store import MemoryPartitionStore, PartitionStore, TableName, encode_key, read_value

SEEN_EVENTS_PER_RECORD = 32

LINK_SYSTEMS: tuple[str, ...] = (System.ACCT.value, System.CRM.value)

_DELETED = object()
_UNREAD = object()


def _link_facts(code: str | None, ids: dict[str, str]) -> list[tuple[str, str, str]]:
    """The facts a link is kept as, each (lookup, field, value): with a code, each system's id by the
    code and the code by each id (``linked_id`` joins an id to the other through the code); without
    one, each id by the other."""
    if code:
        facts = []
        for system, record_id in ids.items():
            facts.append((f"code={code}", system, record_id))
            facts.append((f"{system}={record_id}", "code", code))
        return facts
    return [(f"{a}={a_id}", b, b_id) for a, a_id in ids.items() for b, b_id in ids.items() if a != b]


def link_fact_key(tenant: str, family: str, lookup: str, field: str) -> str:
    """The key of one link fact: what ``field`` (``acct``, ``crm`` or ``code``) is for ``lookup``.

    ``field`` has no ``>``, so the text after the last ``>`` tells two keys apart whatever the code.
    """
    return f"{tenant}:{family}:{lookup}>{field}"


class PartitionState:
    """The tables of one partition's tenants through one batch (``streams.core.decide.State``)."""

    def __init__(
        self,
        store: PartitionStore,
        tenant_settings: Any,
        default_order_target: str,
        *,
        committing: PartitionState | None = None,
    ) -> None:
        self.store = store
        # the state of the batch before this one while its transaction commits (``streams.loop``): its
        # changes are read as if in the store, which they reach once it has committed
        self.committing = committing
        self.tenant_settings = tenant_settings  # streams.tables.tenants.TenantSettings (or a fake)
        self.default_order_target = default_order_target
        # (table, key) -> new value, or _DELETED
        self._changes: dict[tuple[TableName, str], Any] = {}
        self._encoded: list[tuple[bytes, bytes | None]] | None = None  # the changes as sent (changelog)
        # (table, key) -> what the store answered, absences included, until the changes are written:
        # an event reads the same few keys several times (deciding, then remembering), most of them
        # absent, and each read of RocksDB costs ~2 µs. The store changes only through this batch's
        # write_to_store (which forgets them) or the committing batch's, whose keys are read above.
        self._read: dict[tuple[TableName, str], Any] = {}

    # --- reading and writing through the batch -----------------------------------------------

    def get(self, table: TableName, key: str) -> Any:
        where = (table, key)
        change = self._changes.get(where, None)
        if change is None and self.committing is not None:
            # written to the store before they are cleared here: read here first, then the store
            change = self.committing._changes.get(where, None)
        if change is not None:
            return None if change is _DELETED else change
        value = self._read.get(where, _UNREAD)
        if value is _UNREAD:
            value = self._read[where] = read_value(self.store, table, key)
        return value

    def set(self, table: TableName, key: str, value: Any) -> None:
        self._changes[(table, key)] = value
        self._encoded = None

    def delete(self, table: TableName, key: str) -> None:
        if self.get(table, key) is not None:
            self._changes[(table, key)] = _DELETED
            self._encoded = None

    def items_with_prefix(self, table: TableName, prefix: str) -> list[tuple[str, Any]]:
        """Every (key, value) of ``table`` whose key starts with ``prefix``, in key order, with the
        batch's changes."""
        found: dict[str, Any] = {}
        skip = len(table) + 1
        for raw_key, raw_value in self.store.items_from(encode_key(table, prefix)):
            found[raw_key[skip:].decode()] = orjson.loads(raw_value)
        # a copy of the committing batch's changes: its commit clears them from another thread
        earlier = list(self.committing._changes.items()) if self.committing is not None else []
        for (changed_table, key), value in [*earlier, *self._changes.items()]:
            if changed_table == table and key.startswith(prefix):
                if value is _DELETED:
                    found.pop(key, None)
                else:
                    found[key] = value
        return sorted(found.items())

    def changes(self) -> Iterator[tuple[TableName, str, Any | None]]:
        """(table, key, new value or None for a delete) of every change the batch made."""
        for (table, key), value in self._changes.items():
            yield table, key, None if value is _DELETED else value

    def changelog(self, topic: str) -> list[OutputMessage]:
        """The batch's changes as messages of the state changelog (this store's partition), each
        value encoded once: ``write_to_store`` writes the same bytes."""
        partition = self.store.partition
        encoded = self._encoded = self.sealed()
        return [OutputMessage(topic, key, value, None, partition) for key, value in encoded]

    def sealed(self) -> list[tuple[bytes, bytes | None]]:
        """The batch's changes encoded now, as the changelog and the store will have them: a value the
        next batch changes in place after this point does not change what this batch writes."""
        if self._encoded is None:
            self._encoded = self._encode()
        return self._encoded

    def write_to_store(self, changelog_offset: int | None) -> None:
        """Apply the batch's changes to the store, once their changelog messages are committed."""
        if not self._changes and changelog_offset is None:
            return
        encoded = self._encoded if self._encoded is not None else self._encode()
        self.store.write(encoded, changelog_offset)
        self._changes.clear()
        self._encoded = None
        self._read.clear()

    def _encode(self) -> list[tuple[bytes, bytes | None]]:
        dumps = orjson.dumps
        return [
            (encode_key(table, key), None if value is _DELETED else dumps(value))
            for (table, key), value in self._changes.items()
        ]

    # --- streams.core.decide.State -------------------------------------------------------------

    def order_target(self, tenant: str) -> str:
        return str(self.tenant_settings.get(tenant).order_target or self.default_order_target)

    def sync_settings(self, tenant: str) -> SyncSettings:
        return self.tenant_settings.get(tenant)

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        if code and (found := self.get("links", link_fact_key(tenant, family, f"code={code}", system))):
            return str(found)
        if other_id:
            other = System.ACCT if system is System.CRM else System.CRM
            lookup = f"{other}={other_id}"
            if found := self.get("links", link_fact_key(tenant, family, lookup, system)):
                return str(found)
            # the other record's code, and what that code is linked to
            other_code = self.get("links", link_fact_key(tenant, family, lookup, "code"))
            if other_code and other_code != code:
                found = self.get("links", link_fact_key(tenant, family, f"code={other_code}", system))
                if found:
                    return str(found)
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
        return [record for _key, record in self.items_with_prefix("crm_records", f"{tenant}:customer:") if record]

    # --- what events teach -----------------------------------------------------------------------

    def is_duplicate(self, record_key: str, event_id: str) -> bool:
        return event_id in (self.get("seen_events", record_key) or ())

    def mark_seen(self, record_key: str, event_id: str) -> None:
        recent = list(self.get("seen_events", record_key) or ())
        self.set("seen_events", record_key, [*recent, event_id][-SEEN_EVENTS_PER_RECORD:])

    def apply_links(self, links: Iterable[LinkUpdate]) -> None:
        """Learn what each update says of one record's ids, one fact per key (X-3).

        A link is kept as facts: "the acct id of code KH1 is A1", "the code of CRM id C9 is KH1",
        each under its own key (``<tenant>:<family>:<lookup>><field>``), never as one value holding
        all of a record's ids: a record whose code changes keeps its link, and ``linked_id`` joins an
        id to the other system's through the code.
        """
        for link in links:
            self._apply_link(link)

    def _apply_link(self, link: LinkUpdate) -> None:
        """One update: unless it says nothing new, the facts of what it says and what was known."""
        tenant, family = link.tenant, link.family

        def fact(lookup: str, name: str) -> Any:
            # read again as often as asked: the batch's state answers a second read from memory
            return self.get("links", link_fact_key(tenant, family, lookup, name))

        if all(fact(lookup, name) == value for lookup, name, value in _link_facts(link.code, link.ids)):
            return  # nothing new: most changes are to records already linked
        # What is known of the record: by each of its ids, its code and other ids; by its codes
        # (the one it has now, the one it had), its ids. What the update says wins.
        codes = [link.code] if link.code else []
        known: dict[str, str] = {}
        for system, record_id in link.ids.items():
            code = fact(f"{system}={record_id}", "code")
            if code is not None and code not in codes:
                codes.append(str(code))
            for other in LINK_SYSTEMS:
                if other != system and (value := fact(f"{system}={record_id}", other)) is not None:
                    known.setdefault(other, str(value))
        for code in codes:
            for system in LINK_SYSTEMS:
                if (value := fact(f"code={code}", system)) is not None:
                    known.setdefault(system, str(value))
        known.update(link.ids)
        for lookup, name, value in _link_facts(codes[0] if codes else None, known):
            if fact(lookup, name) != value:
                self.set("links", link_fact_key(tenant, family, lookup, name), value)

    def apply_decision(self, decision: Decision) -> None:
        """Remember what the decision taught: links, CRM records, what was written."""
        self.apply_links(decision.links)
        for key in decision.forget_written:
            self.delete("written", key)
        for record in decision.crm_records:
            key = f"{record.tenant}:{record.entity}:{record.code}"
            if record.record is None:
                self.delete("crm_records", key)
            else:
                self.set("crm_records", key, record.record)
        for key, written in decision.written.items():
            self.set(
                "written",
                key,
                {"fields": written.fields, "event_id": written.event_id, "command_id": written.command_id},
            )


class NoTenantSettings:
    """Tenant settings where there are none: every tenant follows the defaults."""

    def get(self, tenant: str) -> SyncSettings:
        return DEFAULT_SETTINGS


def in_memory_state(default_order_target: str = "sale_order") -> PartitionState:
    """The state of one partition in memory, with no tenant settings: the core as the processor runs it,
    without Kafka (``bench/inprocess.py``, the tests)."""
    return PartitionState(MemoryPartitionStore(0), NoTenantSettings(), default_order_target)
