"""Faust tables of the processor and the ``State`` the rule interpreter reads through them.

Each table's key, value, writers and readers are in ``docs/state.md``: ``links`` (X-3),
``written`` (X-2), ``crm_records`` (CUS-10, X-4), ``orders`` (the aggregates) and ``seen_events``
(duplicate event ids).

Global tables are used because one record's rule reads state that another record (on another
partition, maybe another worker) wrote: an order reads its customer's link. With the worker's
RocksDB store (the default) each global table is one RocksDB database on disk, which holds a
worker's own writes and the others' changelog messages in one place (``streams.tables.stores``:
faust's own store would split them by partition and could serve a stale copy); with
``memory://`` (tests) they live in memory and are rebuilt from their changelog at start-up.

A batch's changes reach the tables through ``BatchState`` in four steps, each acknowledged by the
broker before the next (``streams.agents.pipeline.Batch.finish``): the changelog of the ``links``
the batch learnt (``LINKS_FIRST``); the batch's outputs; what it remembers having sent and seen
(``written``, ``crm_records``: ``AFTER_OUTPUTS``); then the changelogs that say an event was
processed (``seen_events``, and ``orders``, whose aggregates keep their own recent event ids:
``PROCESSED_MARKERS``). A crash in between replays the batch against state that is at most ahead
by what the replay teaches again, never remembered-as-processed without its outputs and lessons.

Why links before the outputs and the rest after them: a link is a fact read from an input event
(a record's ids and code), and a replay that already knows it decides with more, never sends
less — an edit of a record "not linked" the first time is sent, a dependency already in the
target is not sent again. A worker killed after the outputs and before the links would instead
replay the batch without them, and an edit ordered before the event that links its record in the
replayed batch would be "not linked" for good (docs/reliability.md, finding 3). Sent in the same
step as the outputs they would still leave a gap: librdkafka sends one produce request per
partition, and the broker may acknowledge the command before the link. ``written`` and
``crm_records`` must come after the outputs: a replay that found them would build a command of the
same id with other content (X-2 would drop a re-send, X-4 would send a dependency's fields under
the id its code-only copy already used) and the connectors skip a known id.

The changelog messages are produced with the outputs' producer (faust's buffered changelog
producer sends them one at a time), in faust's own encoding, so faust recovers the tables as usual.
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import faust
import orjson
from faust.stores.memory import Store as MemoryStore
from faust.types import TP, EventT, TableT
from yarl import URL

from common.names import System
from streams.core.decide import Decision, LinkUpdate, Written
from streams.faust_adapter import GlobalTableOnStore, TableOnStore, as_current_event
from streams.outputs import OutputMessage
from streams.settings import TableSettings
from streams.tables.stores import (
    GLOBAL_PARTITION,
    GlobalRocksDBStore,
    RocksDBMemory,
    SharedMemoryRocksDBStore,
    new_store,
)
from streams.tables.tenants import TenantSettings

SEEN_EVENTS_PER_RECORD = 32

TableName = Literal["links", "written", "crm_records", "seen_events", "orders"]
TABLE_NAMES: tuple[TableName, ...] = ("links", "written", "crm_records", "seen_events", "orders")
GLOBAL_TABLES: frozenset[TableName] = frozenset({"links", "written", "crm_records"})
# The order in which a batch's changelogs are made durable (module docstring).
LINKS_FIRST: tuple[TableName, ...] = ("links",)
AFTER_OUTPUTS: tuple[TableName, ...] = ("written", "crm_records")
PROCESSED_MARKERS: tuple[TableName, ...] = ("seen_events", "orders")

# The header naming the worker process that wrote a changelog message.
WRITER_HEADER = "lienthong.writer"


class OwnWritesGlobalTable(GlobalTableOnStore):
    """A global table that does not re-apply its own worker's changelog messages.

    Every worker follows a global table's changelog to learn what the others wrote, its own writes
    included; those it already applied when it wrote them, and applying them again when they come
    back would set a key back to an older value the worker has since replaced.
    """

    # on RocksDB: one database for the whole table (streams/tables/stores.py says why)
    rocksdb_store = GlobalRocksDBStore
    writer: bytes = b""
    read_until: int = 0  # the offset after the last changelog message this worker has read
    others_read: int = 0  # how many messages of other workers it has applied

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # offsets of this worker's own changelog messages, acknowledged by the broker, not read back yet
        self.own_unread: list[int] = []  # ascending

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        super().apply_changelog_batch(self._others_writes(batch))

    def _others_writes(self, batch: Iterable[EventT]) -> Iterator[EventT]:
        for event in batch:
            self.read_until = max(self.read_until, event.message.offset + 1)
            if _writer_of(event) != self.writer:
                self.others_read += 1
                yield event

    def wrote(self, offsets: Iterable[int]) -> None:
        """This worker's own messages at these changelog offsets are on the broker."""
        own = self.own_unread
        for offset in sorted(offsets):
            if own and offset < own[-1]:  # two agents' acknowledgements, out of order
                bisect.insort(own, offset)
            else:
                own.append(offset)

    def others_unread(self, end: int) -> int:
        """How many messages before ``end`` other workers wrote that this worker has not read.

        Its own messages it need not read back: it applied them when it wrote them.
        """
        read = self.changelog_read_until()
        own_unread = self.own_unread
        del own_unread[: bisect.bisect_left(own_unread, read)]  # read back since
        own = bisect.bisect_left(own_unread, end)
        return max(0, end - read - own)

    def changelog_tp(self) -> TP:
        return TP(self.changelog_topic.get_topic_name(), GLOBAL_PARTITION)

    def changelog_read_until(self) -> int:
        """The offset after the last changelog message this worker's copy holds: what it read since it
        started, or what its RocksDB store had when it started."""
        persisted = self.data.persisted_offset(self.changelog_tp())
        return max(self.read_until, 0 if persisted is None else persisted + 1)


class SharedMemoryTable(TableOnStore):
    """A partitioned table whose RocksDB databases share the worker's memory budget (``stores``)."""

    rocksdb_store = SharedMemoryRocksDBStore


def _writer_of(event: EventT) -> bytes | None:
    headers = event.headers or {}
    if isinstance(headers, dict):
        value = headers.get(WRITER_HEADER)
    else:
        value = next((v for k, v in headers if k == WRITER_HEADER), None)
    return value.encode() if isinstance(value, str) else value


@dataclass
class Tables:
    """The processor's faust tables (``faust.Table`` / ``faust.GlobalTable``: str keys, JSON values).

    ``writer`` names this worker process in the changelog messages it writes.
    """

    links: TableT[str, Any]
    written: TableT[str, Any]
    crm_records: TableT[str, Any]
    seen_events: TableT[str, Any]
    orders: TableT[str, Any]
    writer: bytes = b""
    memory: RocksDBMemory | None = None  # the RocksDB tables' shared memory (None with memory://)

    def table(self, name: TableName) -> Any:
        return getattr(self, name)

    def global_tables(self) -> list[OwnWritesGlobalTable]:
        return [self.table(name) for name in TABLE_NAMES if name in GLOBAL_TABLES]


def define_tables(app: faust.App, settings: TableSettings, partitions: int) -> Tables:
    """The worker's tables, kept as ``settings`` say; ``partitions``: of the tables keyed by record."""
    on_rocksdb = URL(settings.store).scheme == "rocksdb"
    memory = RocksDBMemory.from_settings(settings) if on_rocksdb else None

    def options() -> dict[str, Any] | None:
        # a dict per table: faust's store takes keys out of the one it is given
        return {"memory": memory} if memory else None

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
            store="rocksdb://" if on_rocksdb else "memory://global",
            options=options(),
            recovery_buffer_size=1,
            help=help,
        )

    writer = uuid.uuid4().hex.encode()
    tables = Tables(
        writer=writer,
        memory=memory,
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
            partitions=partitions,
            options=options(),
            help="recent event ids per record",
        ),
        # Keyed <tenant>:<acct order or contract id>, written only by the aggregates agent while it
        # processes that key's message of <app id>-aggregate-inputs: co-partitioned by construction.
        orders=app.Table(
            "orders",
            default=None,
            key_type=str,
            value_type=None,
            partitions=partitions,
            options=options(),
            help="per accounting order: contributions of its vouchers and receipts, what was sent",
        ),
    )
    for name in GLOBAL_TABLES:
        tables.table(name).writer = writer
    for name in TABLE_NAMES:
        table = tables.table(name)
        if (table.key_serializer, table.value_serializer) != ("json", "json"):
            # BatchState.changelog writes the changelogs as JSON (orjson), as faust would for these
            raise RuntimeError(
                f"table {name}: key/value serializers {table.key_serializer}/{table.value_serializer}; the "
                "changelog writer needs json/json"
            )
    return tables


LINK_SYSTEMS: tuple[str, ...] = (System.ACCT.value, System.CRM.value)


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


def _link_fact_key(tenant: str, family: str, lookup: str, field: str) -> str:
    """The key of one link fact: what ``field`` (``acct``, ``crm`` or ``code``) is for ``lookup``.

    ``field`` has no ``>``, so the text after the last ``>`` tells two keys apart whatever the code.
    """
    return f"{tenant}:{family}:{lookup}>{field}"


_DELETED = object()


class BatchState:
    """The tables as one batch sees them: what earlier events of the batch changed, over the tables.

    ``streams.core.decide.State`` for the core, so each event of a batch sees the state changes of
    the events before it. Nothing reaches the tables before the batch's outputs are on the broker
    (``changelog``, then ``write_to_stores``): an event is never remembered as processed before
    its outputs are.
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
        return read_store(self.tables.table(table).data, key)

    def set(self, table: TableName, key: str, value: Any, event: EventT | None) -> None:
        self._changes[table][key] = (value, event)

    def delete(self, table: TableName, key: str, event: EventT | None) -> None:
        if self.get(table, key) is not None:
            self._changes[table][key] = (_DELETED, event)

    def changes(self) -> Iterator[tuple[TableName, str, Any | None]]:
        """(table, key, new value or None for a delete) of every change the batch made."""
        for name, changes in self._changes.items():
            for key, (value, _event) in changes.items():
                yield name, key, None if value is _DELETED else value

    def forget_changes(self) -> None:
        for changes in self._changes.values():
            changes.clear()

    def changelog(self, names: Iterable[TableName]) -> list[OutputMessage]:
        """The changelog messages of the batch's changes to ``names``.

        The tables' keys and values are JSON (faust's "json" serializer, ``define_tables``): orjson
        writes the same bytes faust's serializers would, for a fraction of the cost.
        """
        messages = []
        headers = [(WRITER_HEADER, self.tables.writer)]
        dumps = orjson.dumps
        for name in names:
            topic = self.tables.table(name).changelog_topic.get_topic_name()
            is_global = name in GLOBAL_TABLES
            for key, (value, event) in self._changes[name].items():
                # a global table has one changelog partition; a partitioned one the event's
                partition = 0 if is_global or event is None else event.message.partition
                encoded = None if value is _DELETED else dumps(value)
                messages.append(OutputMessage(topic, dumps(key), encoded, headers, partition))
        return messages

    def write_to_stores(self, persisted: dict[tuple[str, int], int]) -> None:
        """Apply the batch's changes to the tables' stores, once their changelogs are durable.

        ``persisted``: the highest changelog offset written per partition, which a RocksDB store
        keeps so that recovery reads only what it does not have yet.
        """
        for name, changes in self._changes.items():
            table = self.tables.table(name)
            store = table.data
            for key, (value, event) in changes.items():
                with as_current_event(event):
                    if value is _DELETED:
                        if key in store:
                            del store[key]
                    else:
                        store[key] = value
            changes.clear()
            if name in GLOBAL_TABLES:
                # A global table's store must not skip, at its next start, what other workers wrote
                # before this worker's own messages but it has not read yet: only faust's changelog
                # reader, which reads the partition in order, says how far the store has it.
                continue
            topic = table.changelog_topic.get_topic_name()
            for (written_topic, partition), offset in persisted.items():
                if written_topic == topic:
                    store.set_persisted_offset(TP(topic, partition), offset)

    # --- streams.core.decide.State -------------------------------------------------------------

    def order_target(self, tenant: str) -> str:
        return str(self.tenants.get(tenant).get("order_target") or self.default_order_target)

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        if code and (found := self.get("links", _link_fact_key(tenant, family, f"code={code}", system))):
            return str(found)
        if other_id:
            other = System.ACCT if system is System.CRM else System.CRM
            lookup = f"{other}={other_id}"
            if found := self.get("links", _link_fact_key(tenant, family, lookup, system)):
                return str(found)
            # the other record's code, and what that code is linked to: two workers may each have
            # written one half of the link (apply_links)
            other_code = self.get("links", _link_fact_key(tenant, family, lookup, "code"))
            if other_code and other_code != code:
                found = self.get("links", _link_fact_key(tenant, family, f"code={other_code}", system))
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
        prefix = f"{tenant}:customer:"
        store = self.tables.crm_records.data
        if isinstance(store, GlobalRocksDBStore):
            keys = set(store.keys_with_prefix(prefix))
        else:
            keys = {k for k in store if k.startswith(prefix)}
        keys |= {k for k in self._changes["crm_records"] if k.startswith(prefix)}
        return [record for key in sorted(keys) if (record := self.get("crm_records", key))]

    # --- what events teach -----------------------------------------------------------------------

    def is_duplicate(self, record_key: str, event_id: str) -> bool:
        return event_id in (self.get("seen_events", record_key) or ())

    def mark_seen(self, record_key: str, event_id: str, event: EventT | None) -> None:
        recent = list(self.get("seen_events", record_key) or ())
        self.set("seen_events", record_key, [*recent, event_id][-SEEN_EVENTS_PER_RECORD:], event)

    def apply_links(self, links: Iterable[LinkUpdate]) -> None:
        """Learn what each update says of one record's ids, one fact per key (X-3).

        A link is kept as facts: "the acct id of code KH1 is A1", "the code of CRM id C9 is KH1",
        each under its own key (``<tenant>:<family>:<lookup>><field>``), never as one value holding
        all of a record's ids. Two workers can learn two halves of one link at the same moment,
        each before the other's write reaches it (an acct customer's id on one, the CRM id of its
        copy on the other): with one value per record, the later write would replace the earlier
        one in every worker's copy and in the compacted changelog, and the link would lose an id
        for good. As facts, both halves stay, and ``linked_id`` joins them through the code.
        """
        for link in links:
            self._apply_link(link)

    def _apply_link(self, link: LinkUpdate) -> None:
        """One update: unless it says nothing new, the facts of what it says and what was known."""
        tenant, family = link.tenant, link.family
        read: dict[str, Any] = {}  # each fact read once per update: reads cost, most are misses

        def fact(lookup: str, name: str) -> Any:
            key = _link_fact_key(tenant, family, lookup, name)
            if key not in read:
                read[key] = self.get("links", key)
            return read[key]

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
                self.set("links", _link_fact_key(tenant, family, lookup, name), value, None)

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


def read_store(store: Any, key: str) -> Any:
    """A table's value for ``key`` read from its store, or None.

    Past faust's table layer (which calls its sensors and raises KeyError for a missing key, a
    third of the agents' time): a memory store is a dict; a partitioned RocksDB store reads the
    partition of the current event (the agents set it, ``as_current_event``); a global one reads
    its one database (``GlobalRocksDBStore``).
    """
    if isinstance(store, MemoryStore):
        return store.data.get(key)
    return store.get(key)
