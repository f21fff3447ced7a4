"""The tables' RocksDB stores: a global table keeps one copy of each key, within the worker's budget.

What a user relies on: a link another worker changed is the link this worker reads (not its own
older copy), it survives a restart, and the tables' memory is the budget the settings give.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from faust.types import TP

from common.settings import Settings
from streams.app import create_app
from streams.core.contract import System
from streams.core.decide import LinkUpdate
from streams.faust_adapter import as_current_event
from streams.tables import WRITER_HEADER, BatchState, read_store
from streams.tables.tenants import TenantSettings

from .conftest import FakeProducer, changelog_events


def worker_tables(data_dir, **settings):
    built = create_app(
        Settings(store="rocksdb://", data_dir=data_dir, web_enabled=False, app_id="store-test", **settings),
        producer=FakeProducer(),
    )
    built.app.finalize()
    return built.tables


def changelog_event(table, key: str, value, *, offset: int, writer: bytes = b"another-worker"):
    """A message of the table's changelog as faust's recovery and standby readers hand it over."""
    tp = TP(table.changelog_topic.get_topic_name(), 0)
    message = SimpleNamespace(
        tp=tp,
        topic=tp.topic,
        partition=0,
        offset=offset,
        key=orjson.dumps(key),
        value=None if value is None else orjson.dumps(value),
    )
    return SimpleNamespace(message=message, headers={WRITER_HEADER: writer}, key=key, value=value)


class Processing:
    """What faust's current event is while an agent processes an event of ``partition``."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="cdc.acct.customer", offset=1)


def processing(partition: int) -> Processing:
    return Processing(partition)


def test_a_link_another_worker_changed_replaces_this_workers_own_copy(tmp_path):
    links = worker_tables(tmp_path).links
    store = links.data
    key = "t1:customer:code=KH1"
    # this worker linked KH1 while processing an event of partition 3 ...
    with as_current_event(processing(3)):
        store[key] = {"acct": "A1", "code": "KH1"}
    # ... then another worker learnt the CRM id: its changelog message arrives on partition 0
    links.apply_changelog_batch([changelog_event(links, key, {"acct": "A1", "crm": "C9", "code": "KH1"}, offset=7)])
    with as_current_event(processing(3)):
        assert read_store(store, key) == {"acct": "A1", "crm": "C9", "code": "KH1"}
    assert read_store(store, key) == {"acct": "A1", "crm": "C9", "code": "KH1"}
    # and a delete by another worker deletes it here
    links.apply_changelog_batch([changelog_event(links, key, None, offset=8)])
    with as_current_event(processing(3)):
        assert read_store(store, key) is None
        assert key not in store


def test_a_global_table_survives_a_restart_and_resumes_after_what_it_read(tmp_path):
    tables = worker_tables(tmp_path)
    crm = tables.crm_records
    crm.data["t1:customer:KH1"] = {"id": "1", "name": "A"}  # this worker's own write
    crm.apply_changelog_batch([changelog_event(crm, "t1:customer:KH2", {"id": "2", "name": "B"}, offset=41)])
    tp = TP(crm.changelog_topic.get_topic_name(), 0)
    assert crm.data.persisted_offset(tp) == 41
    for name in ("links", "written", "crm_records", "seen_events", "orders"):  # the process ends
        for db in tables.table(name).data._dbs.values():
            db.close()

    restarted = worker_tables(tmp_path).crm_records
    assert read_store(restarted.data, "t1:customer:KH1") == {"id": "1", "name": "A"}
    assert read_store(restarted.data, "t1:customer:KH2") == {"id": "2", "name": "B"}
    # recovery reads the changelog from after what the store already has
    assert restarted.data.persisted_offset(tp) == 41


def test_the_customers_of_one_tenant_are_read_by_prefix_and_no_other_tenants(tmp_path):
    crm = worker_tables(tmp_path).crm_records
    for key in ("t1:customer:KH1", "t1:customer:KH2", "t1:product:SP1", "t10:customer:KH1", "t0:customer:KH1"):
        crm.data[key] = {"key": key}
    assert list(crm.data.keys_with_prefix("t1:customer:")) == ["t1:customer:KH1", "t1:customer:KH2"]
    assert list(crm.data.keys_with_prefix("t2:customer:")) == []


def test_every_table_of_a_worker_shares_the_memory_budget_of_the_settings(tmp_path):
    tables = worker_tables(tmp_path, rocksdb_block_cache_mb=3, rocksdb_memtables_mb=5)
    memories = {id(tables.table(name).data.rocksdb_options.memory) for name in ("links", "written", "orders")}
    assert len(memories) == 1
    memory = tables.links.data.rocksdb_options.memory
    assert memory.block_cache.get_usage() <= 3 * 1024 * 1024
    assert memory.memtables.get_buffer_size() == 5 * 1024 * 1024
    with as_current_event(processing(2)):
        for n in range(2000):
            tables.orders.data[f"t1:order-{n}"] = {"total": "1" * 100}
    assert 0 < memory.memtables.get_usage() <= 5 * 1024 * 1024 * 1.1


def test_a_global_table_counts_every_changelog_message_it_read_its_own_included(tmp_path):
    tables = worker_tables(tmp_path)
    links = tables.links
    assert links.changelog_read_until() == 0
    links.data["t1:customer:code=KH1"] = {"acct": "A2", "code": "KH1"}  # written since, by this worker
    own_older = changelog_event(links, "t1:customer:code=KH1", {"acct": "A1"}, offset=4, writer=tables.writer)
    links.apply_changelog_batch([own_older])
    assert links.changelog_read_until() == 5, "read up to its own message"
    assert read_store(links.data, "t1:customer:code=KH1") == {"acct": "A2", "code": "KH1"}, "not re-applied"


def _learn(tables, link: LinkUpdate):
    """One worker's batch that learns ``link``: its changelog messages, written to its own store."""
    state = BatchState(tables, TenantSettings({}, "config.tenants"), "sale_order")
    state.apply_links([link])
    messages = state.changelog(["links"])
    state.write_to_stores({})
    return messages


def test_two_workers_learning_two_halves_of_a_link_at_once_both_keep_it(tmp_path):
    """An acct customer's id learnt on one worker and its CRM copy's id on another, each before the
    other's changelog reached it: every worker, and one that starts later from the changelog, has
    the whole link — not only the half written last."""
    one, other, later = (worker_tables(tmp_path / name) for name in ("one", "other", "later"))
    acct_half = _learn(one, LinkUpdate("t1", "customer", "KH1", {"acct": "A1"}))
    crm_half = _learn(other, LinkUpdate("t1", "customer", "KH1", {"crm": "C9"}))
    one.links.apply_changelog_batch(changelog_events(acct_half + crm_half, 0))
    other.links.apply_changelog_batch(changelog_events(acct_half + crm_half, 0))
    later.links.apply_changelog_batch(changelog_events(acct_half + crm_half, 0))

    for worker in (one, other, later):
        state = BatchState(worker, TenantSettings({}, "config.tenants"), "sale_order")
        assert state.linked_id("t1", System.ACCT, "customer", code="KH1", other_id=None) == "A1"
        assert state.linked_id("t1", System.ACCT, "customer", code=None, other_id="C9") == "A1"
        assert state.linked_id("t1", System.CRM, "customer", code=None, other_id="A1") == "C9"
        assert state.linked_id("t1", System.CRM, "customer", code="KH1", other_id=None) == "C9"


def test_a_worker_counts_as_unread_only_what_other_workers_wrote(tmp_path):
    """What a worker must read before deciding on a link's absence: the others' messages, not its own
    (applied when it wrote them)."""
    links = worker_tables(tmp_path).links
    links.apply_changelog_batch(changelog_events_at(links, range(5)))
    assert links.others_unread(5) == 0
    links.wrote([5, 7])  # its own messages; 6 is another worker's
    assert links.others_unread(8) == 1
    links.apply_changelog_batch(changelog_events_at(links, [5, 6], writers=[links.writer, b"another-worker"]))
    assert links.others_unread(8) == 0, "7 is its own"
    assert links.others_unread(9) == 1, "8 is not"


def changelog_events_at(table, offsets, writers=None):
    offsets = list(offsets)
    return [
        changelog_event(table, f"t1:customer:code=K{offset}>acct", f"A{offset}", offset=offset, writer=writer)
        for offset, writer in zip(offsets, writers or [b"another-worker"] * len(offsets), strict=True)
    ]


def test_a_record_whose_code_changes_keeps_its_link_under_the_new_code(tmp_path):
    tables = worker_tables(tmp_path)
    _learn(tables, LinkUpdate("t1", "customer", "KH1", {"acct": "A1"}))
    _learn(tables, LinkUpdate("t1", "customer", "KH1", {"crm": "C9"}))
    _learn(tables, LinkUpdate("t1", "customer", "KH2", {"crm": "C9"}))  # CRM renamed the code
    state = BatchState(tables, TenantSettings({}, "config.tenants"), "sale_order")
    assert state.linked_id("t1", System.ACCT, "customer", code="KH2", other_id=None) == "A1"
    assert state.linked_id("t1", System.ACCT, "customer", code=None, other_id="C9") == "A1"
    assert state.linked_id("t1", System.CRM, "customer", code=None, other_id="A1") == "C9"
