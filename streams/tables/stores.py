"""Where the tables keep their data: RocksDB within a memory budget, one database per global table.

Two problems of faust's RocksDB store, one of memory and one of correctness:

* **Memory.** faust opens every RocksDB database (one per table and partition: fifteen in a worker
  with six partitions) with 64 MB write buffers, up to three of them, and a 2 GB block cache of
  its own: a worker's memory grows with what it has written and read, towards gigabytes.
  ``RocksDBMemory`` gives every database of the worker one block cache and one memtable budget
  (``LIENTHONG_ROCKSDB_BLOCK_CACHE_MB``, ``LIENTHONG_ROCKSDB_MEMTABLES_MB``): the data lives on
  disk, memory holds at most the budget of recent writes and of cached reads.
* **Global tables on RocksDB.** faust's store writes a key into the database of the *current
  event's* partition, while other workers' writes of the same key arrive through the changelog
  into the database of the changelog's partition; a read then finds whichever copy its key index
  points at, possibly the stale one (faust-streaming PRs #129/#130/#144 fixed reads, not the split
  itself). ``GlobalRocksDBStore`` keeps a global table (one changelog partition,
  ``streams.tables.define_tables``) in one database whatever the event: a worker's own writes and
  everyone's changelog messages replace each other in one place, in the order they are applied.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.stores.rocksdb import Store as RocksDBStore

from streams.settings import TableSettings

MIB = 1024 * 1024

# the one changelog partition of a global table (define_tables: partitions=1)
GLOBAL_PARTITION = 0

# Each database flushes its memtable to disk at this size (and the shared budget flushes earlier):
# small enough that fifteen databases of a worker stay within the budget.
WRITE_BUFFER_SIZE = 8 * MIB


@dataclass(frozen=True)
class RocksDBMemory:
    """One block cache and one memtable budget for every RocksDB database of a worker."""

    block_cache: Any  # rocksdict.Cache
    memtables: Any  # rocksdict.WriteBufferManager

    @classmethod
    def from_settings(cls, settings: TableSettings) -> RocksDBMemory:
        return cls(
            block_cache=rocksdict.Cache(settings.rocksdb_block_cache_mb * MIB),
            memtables=rocksdict.WriteBufferManager(settings.rocksdb_memtables_mb * MIB, False),
        )

    def usage_bytes(self) -> dict[str, int]:
        return {"block_cache": int(self.block_cache.get_usage()), "memtables": int(self.memtables.get_usage())}


# glibc's mallopt parameter for the number of malloc arenas (malloc.h: M_ARENA_MAX)
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for the threads this process starts from now on.

    glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and
    rarely returns their freed memory: RocksDB's flush and compaction threads, librdkafka's and
    faust's each grow one, and the worker's memory creeps up with the data it has written. Two
    arenas is the usual remedy for RocksDB in a long-running process. False where there is no
    glibc (the call is then skipped).
    """
    if arenas <= 0:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


class SharedMemoryOptions(RocksDBOptions):
    """faust's RocksDB options, with the worker's shared cache and memtable budget (rocksdict)."""

    def __init__(self, memory: RocksDBMemory, **kwargs: Any) -> None:
        super().__init__(write_buffer_size=WRITE_BUFFER_SIZE, max_write_buffer_number=2, **kwargs)
        self.memory = memory

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(-1 if self.max_open_files is None else self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.memory.memtables)
        table_options = rocksdict.BlockBasedOptions()
        table_options.set_bloom_filter(self.bloom_filter_size, True)
        table_options.set_block_cache(self.memory.block_cache)
        # index and filter blocks in the cache too, so the budget bounds them (they grow with the data)
        table_options.set_cache_index_and_filter_blocks(True)
        table_options.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table_options.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table_options)
        return options


class SharedMemoryRocksDBStore(RocksDBStore):
    """faust's RocksDB store whose databases share the worker's ``RocksDBMemory``.

    The table passes it as ``options={"memory": ...}`` (``define_tables``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.use_rocksdict:
            raise RuntimeError("the tables need the rocksdict RocksDB driver (pip install rocksdict)")
        options = dict(self.options or {})
        memory = options.pop("memory")
        self.rocksdb_options = SharedMemoryOptions(memory, use_rocksdict=True, **options)


class GlobalRocksDBStore(OnePartitionRocksDBStore, SharedMemoryRocksDBStore):
    """A global table's RocksDB store: every key in the one database of the changelog's partition."""

    database_partition = GLOBAL_PARTITION
