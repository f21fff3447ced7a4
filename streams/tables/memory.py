"""The memory a worker's stores may use: one block cache and one memtable budget for all of them.

RocksDB's defaults give each database 64 MB write buffers, up to three of them, and a cache of its
own: a worker's memory would grow with the number of partitions it owns and with what it has
written. Here every database of the worker (one per partition it owns) shares one block cache
(``LIENTHONG_ROCKSDB_BLOCK_CACHE_MB``) and one memtable budget (``LIENTHONG_ROCKSDB_MEMTABLES_MB``):
the data lives on disk, memory holds at most the budget of recent writes and of cached reads.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from typing import Any

import rocksdict

MIB = 1024 * 1024

# Each database flushes its memtable to disk at this size (and the shared budget flushes earlier):
# small enough that the databases of a worker stay within the budget.
WRITE_BUFFER_SIZE = 8 * MIB
BLOOM_FILTER_BITS = 10


@dataclass(frozen=True)
class RocksDBMemory:
    """One block cache and one memtable budget for every RocksDB database of a worker."""

    block_cache: Any  # rocksdict.Cache
    memtables: Any  # rocksdict.WriteBufferManager

    @classmethod
    def of(cls, block_cache_mb: int, memtables_mb: int) -> RocksDBMemory:
        return cls(
            block_cache=rocksdict.Cache(block_cache_mb * MIB),
            memtables=rocksdict.WriteBufferManager(memtables_mb * MIB, False),
        )

    def usage_bytes(self) -> dict[str, int]:
        return {"block_cache": int(self.block_cache.get_usage()), "memtables": int(self.memtables.get_usage())}


def rocksdb_options(memory: RocksDBMemory) -> Any:
    """Options of one database: raw bytes, the shared cache and budget, index and filters in the cache."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_SIZE)
    options.set_max_write_buffer_number(2)
    options.set_write_buffer_manager(memory.memtables)
    table_options = rocksdict.BlockBasedOptions()
    table_options.set_bloom_filter(BLOOM_FILTER_BITS, True)
    table_options.set_block_cache(memory.block_cache)
    # index and filter blocks in the cache too, so the budget bounds them (they grow with the data)
    table_options.set_cache_index_and_filter_blocks(True)
    table_options.set_pin_l0_filter_and_index_blocks_in_cache(True)
    options.set_block_based_table_factory(table_options)
    return options


# glibc's mallopt parameter for the number of malloc arenas (malloc.h: M_ARENA_MAX)
M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for the threads this process starts from now on.

    glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core) and
    rarely returns their freed memory: RocksDB's flush and compaction threads and librdkafka's each
    grow one, and the worker's memory creeps up with the data it has written. Two arenas is the
    usual remedy for RocksDB in a long-running process. False where there is no glibc (the call is
    then skipped).
    """
    if arenas <= 0:
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


# Python's cyclic garbage collector, for a process that makes and drops a few hundred objects per
# event and keeps almost none: a young generation this large is collected every 50,000 allocations
# instead of every 700, and the old generations are scanned rarely (docs/performance.md measured it).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_garbage_collection() -> None:
    """Freeze what start-up made (modules, the rule table: never scanned again) and collect the young
    generation less often. The processor's objects form few cycles; reference counting frees them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
