"""The state of the tenants of one partition: one store, rebuilt from the state changelog.

A worker owns the partitions of the changes topic (``<app id>-changes``) the consumer group gives
it, and every tenant is routed to one partition of it. For each partition it owns, the worker holds
one ``PartitionStore``: every table of every tenant of that partition (``TABLES``), under keys
``<table>|<key>`` whose values are JSON. On RocksDB (``LIENTHONG_STORE=rocksdb://``, the default)
that is one database under ``<data dir>/state/<partition>``; in memory (tests) a dict.

The same key and value bytes are the messages of the state changelog (``<app id>-state-changelog``,
compacted, partitioned like the changes topic: partition *p* holds the state of partition *p*), so
recovering a store copies bytes without decoding them (``restore``). A store keeps the changelog
offset it reflects (``changelog_offset``), written with the data of each batch only once the
transaction holding that batch's changelog messages has committed (``streams.checkpoint``). A worker
that stopped in between finds its store behind the changelog and reads the rest back; a store that
another worker moved ahead while it did not own the partition is caught up the same way.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
import rocksdict

from streams.tables.memory import RocksDBMemory, rocksdb_options

TableName = Literal["links", "written", "crm_records", "seen_events", "orders", "held"]
# Every table of a partition's state (docs/state.md says what each holds and who writes it).
TABLES: tuple[TableName, ...] = ("links", "written", "crm_records", "seen_events", "orders", "held")

SEPARATOR = b"|"
# Where a store keeps the changelog offset it reflects: no table name has a "~".
CHANGELOG_OFFSET_KEY = b"~changelog_offset"


def encode_key(table: TableName, key: str) -> bytes:
    """A table's key as the store and the changelog hold it."""
    return table.encode() + SEPARATOR + key.encode()


def decode_key(raw: bytes) -> tuple[str, str]:
    """(table, key) of a stored or changelog key."""
    table, _, key = raw.partition(SEPARATOR)
    return table.decode(), key.decode()


class PartitionStore(Protocol):
    """What the processor needs of a partition's store, on RocksDB or in memory."""

    partition: int

    def get(self, raw_key: bytes) -> bytes | None: ...

    def items_from(self, raw_prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with ``raw_prefix``, in key order."""
        ...

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int | None) -> None:
        """Apply changes (None deletes) and, with them, the changelog offset they bring the store to."""
        ...

    @property
    def changelog_offset(self) -> int:
        """The changelog offset this store reflects (-1: none yet)."""
        ...

    def count(self) -> int:
        """About how many keys the store holds (RocksDB's estimate)."""
        ...

    def close(self) -> None: ...


def read_value(store: PartitionStore, table: TableName, key: str) -> Any:
    raw = store.get(encode_key(table, key))
    return None if raw is None else orjson.loads(raw)


class RocksDBPartitionStore:
    """A partition's state in one RocksDB database, within the worker's memory budget."""

    def __init__(self, path: Path, partition: int, memory: RocksDBMemory) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.partition = partition
        self.db = rocksdict.Rdict(str(path), rocksdb_options(memory))

    def get(self, raw_key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(raw_key)
        return value

    def items_from(self, raw_prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=raw_prefix):
            if not isinstance(key, bytes) or not key.startswith(raw_prefix):
                break
            yield key, bytes(value)

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int | None) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if changelog_offset is not None:
            batch.put(CHANGELOG_OFFSET_KEY, str(changelog_offset).encode())
        self.db.write(batch)

    @property
    def changelog_offset(self) -> int:
        raw = self.db.get(CHANGELOG_OFFSET_KEY)
        return -1 if raw is None else int(raw)

    def count(self) -> int:
        return int(self.db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        self.db.close()


class MemoryPartitionStore:
    """A partition's state in a dict (``LIENTHONG_STORE=memory://``: tests); rebuilt from the
    changelog whenever the partition is assigned."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.data: dict[bytes, bytes] = {}
        self._offset = -1

    def get(self, raw_key: bytes) -> bytes | None:
        return self.data.get(raw_key)

    def items_from(self, raw_prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        data = dict(self.data)  # a copy: a committing batch writes from another thread (streams.loop)
        for key in sorted(k for k in data if k.startswith(raw_prefix)):
            yield key, data[key]

    def write(self, changes: Iterable[tuple[bytes, bytes | None]], changelog_offset: int | None) -> None:
        for key, value in changes:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        if changelog_offset is not None:
            self._offset = changelog_offset

    @property
    def changelog_offset(self) -> int:
        return self._offset

    def count(self) -> int:
        return len(self.data)

    def close(self) -> None:
        return None


class Stores:
    """The partition stores of one worker: opened when a partition is assigned, closed when revoked."""

    def __init__(self, data_dir: Path | None, memory: RocksDBMemory | None) -> None:
        self.data_dir = data_dir  # None: in memory
        self.memory = memory
        self.open: dict[int, PartitionStore] = {}

    def path(self, partition: int) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "state" / str(partition)

    def assign(self, partition: int) -> PartitionStore:
        store = self.open.get(partition)
        if store is None:
            if self.data_dir is None or self.memory is None:
                store = MemoryPartitionStore(partition)
            else:
                store = RocksDBPartitionStore(self.path(partition), partition, self.memory)
            self.open[partition] = store
        return store

    def revoke(self, partition: int) -> None:
        store = self.open.pop(partition, None)
        if store is not None:
            store.close()

    def discard(self, partition: int) -> PartitionStore:
        """Throw a partition's local copy away and open it empty (its changelog was reset)."""
        self.revoke(partition)
        if self.data_dir is not None:
            shutil.rmtree(self.path(partition), ignore_errors=True)
        return self.assign(partition)

    def close(self) -> None:
        for partition in list(self.open):
            self.revoke(partition)
