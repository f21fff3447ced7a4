"""Agent tier: the state of a partition — kept with its batch, rebuilt from its changelog by whichever
worker owns the partition next, never ahead of what the broker committed."""

from __future__ import annotations

import threading

import orjson
import pytest
from confluent_kafka import TopicPartition

from streams.checkpoint import BatchNotDurable
from streams.core.decide import LinkUpdate
from streams.tables.memory import RocksDBMemory
from streams.tables.state import PartitionState, in_memory_state
from streams.tables.store import RocksDBPartitionStore, Stores
from tests.agents.conftest import NOW_MS, Worker, change, every_subscribed_partition, put, sent
from tests.agents.test_deciding_changes import crm_copy_created_and_renamed


def test_a_batch_whose_transaction_fails_leaves_nothing_and_is_read_again_whole(world, worker, tmp_path):
    """The worker is fenced (a newer one took over) before its transaction commits: no command, audit
    record or state of the batch is visible, its offsets are not committed, and the worker stops. The
    next owner reads the batch again and sends the same commands, with the same ids."""
    put(world, "cdc.acct.customer", b"t1:A1", change())
    worker.step()  # routed only: the change is on the changes topic
    worker.producer.fail_commit = "fenced"
    with pytest.raises(BatchNotDurable):
        worker.run()
    assert not sent(world, "commands.crm") and not sent(world, "audit.sync")
    assert not world.records("agent-test-state-changelog")
    assert worker.stopped, "a batch that cannot be made durable stops the worker"

    replacement = Worker(world, tmp_path / "replacement")
    replacement.start()
    replacement.run()
    ((_key, command),) = sent(world, "commands.crm")
    assert command["rule"] == "CUS-6"
    assert [audit["event_id"] for _, audit in sent(world, "audit.sync")] == ["e-1"]


def test_a_batch_aborted_because_the_broker_was_away_is_read_again_by_the_same_worker(world, worker):
    """The broker stayed away longer than a transaction may take: the batch is aborted and read again
    at once, whole, by the same worker, which does not stop. Each change is decided once."""
    crm_created, crm_edited = crm_copy_created_and_renamed()
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    worker.step()  # routed
    worker.producer.fail_commit = "abortable"
    worker.step()  # decided, not durable: aborted (the edit held in memory is forgotten too)
    assert not sent(world, "commands.crm") and not worker.stopped
    worker.run()
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"]
    assert [c["rule"] for _, c in sent(world, "commands.acct")] == ["CUS-3"]
    assert sorted(a["event_id"] for _, a in sent(world, "audit.sync")) == ["e-1", "e-6", "e-7"]


def crm_copy_renamed_again() -> bytes:
    """The salesperson renames CRM copy C1 once more (e-8), after ``crm_copy_created_and_renamed``."""
    return change(
        system="crm",
        event_id="e-8",
        op="u",
        before={"id": "C1", "code": "KH0001", "name": "ABC mới"},
        after={"id": "C1", "code": "KH0001", "name": "ABC mới 2"},
    )


def _commit_waits_for_the_next_batch(worker):
    """The worker's transactions commit only once the loop has decided the batch after them (it waits
    for the one before when it has): what the world shows at that moment is recorded."""
    release = threading.Event()
    seen_while_committing: list[list[str]] = []
    commit, await_durable = worker.producer.commit_transaction, worker.loop.await_durable

    def slow_commit(timeout: float = 0) -> None:
        assert release.wait(10), "the loop never waited for the committing batch"
        commit(timeout)

    def awaiting(**kwargs):
        seen_while_committing.append([c["rule"] for _, c in sent(worker.world, "commands.crm")])
        release.set()
        try:
            return await_durable(**kwargs)
        finally:
            release.clear()

    worker.producer.commit_transaction = slow_commit
    worker.loop.await_durable = awaiting
    return seen_while_committing


def _customer_then_its_copy_in_two_batches(world, worker) -> None:
    """The acct customer A1 decided in one batch; while its transaction commits, its CRM copy C1
    created and edited by a salesperson decided in the next (all read by the owner of t1)."""
    crm_created, crm_edited = crm_copy_created_and_renamed()
    worker.step()  # the changes topic read to its end: changes are decided where they are read
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    worker.loop.process(worker.pending(), now=NOW_MS / 1000)  # its transaction commits...
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    worker.loop.process(worker.pending(), now=NOW_MS / 1000)  # ...while these are decided
    worker.loop.await_durable()


def test_the_next_batch_is_decided_while_one_commits_and_sees_its_state(world, worker):
    """Pipelined batches: the salesperson's edit, decided while the batch that learnt A1's link is still
    committing, reads that link (CUS-3 to A1), not "not linked"; nothing is held or routed."""
    seen = _commit_waits_for_the_next_batch(worker)
    _customer_then_its_copy_in_two_batches(world, worker)
    assert seen[0] == [], "the second batch was decided before the first was visible"
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"]
    ((_key, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3" and command["key"] == {"id": "A1", "code": "KH0001"}
    assert not world.records(worker.loop.config.changes_topic), "decided where read: nothing routed"
    assert not any(owned.held.by_record for owned in worker.loop.owned.values())


def test_a_rebalance_while_a_batch_commits_ends_that_batch_and_the_next_turn_goes_on(world, worker):
    """librdkafka calls the revoke callback inside ``consume``: the loop waits there for the batch that
    is committing, and the turn that called ``consume`` goes on without it (seen in the chaos suite: a
    worker stopped on the batch it no longer had)."""
    worker.step()  # the changes topic read to its end: changes are decided where they are read
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    worker.loop.process(worker.pending(), now=NOW_MS / 1000)  # its transaction commits...
    assert worker.loop._committing is not None
    consume, revoked = worker.consumer.consume, []

    def rebalanced(num_messages: int = 1, timeout: float = 0):
        if not revoked:  # ...when the group takes every partition back
            revoked.append(list(worker.consumer.assignment))
            worker.loop._on_revoke(worker.consumer, revoked[0])
        return consume(num_messages, timeout)

    worker.consumer.consume = rebalanced
    worker.loop.turn()
    assert revoked and worker.loop._committing is None and not worker.stopped
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"], "the batch before is durable"


def test_when_a_committing_batch_fails_the_batch_decided_meanwhile_is_read_again_with_it(world, worker):
    """The first batch's transaction is aborted (the broker was away) while the next one was decided on
    top of its state: neither is visible; both are read again, and each change is decided once."""
    _commit_waits_for_the_next_batch(worker)
    worker.producer.fail_commit = "abortable"
    _customer_then_its_copy_in_two_batches(world, worker)
    assert not sent(world, "commands.crm") and not sent(world, "commands.acct") and not worker.stopped
    worker.run()
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"]
    assert [c["rule"] for _, c in sent(world, "commands.acct")] == ["CUS-3"]
    assert sorted(a["event_id"] for _, a in sent(world, "audit.sync")) == ["e-1", "e-6", "e-7"]


def test_a_change_its_owner_reads_is_decided_at_once_unless_it_would_be_held(world, worker):
    """Read by the owner of its tenant, a change is decided at once, unless it would be held: a
    salesperson's edit of CRM customer C1, read before accounting's A1 (whose copy C1 is), rests on an
    absence, so it is routed onto the changes topic and held there; C1's next edit, read at once
    after A1, follows it there instead of overtaking it. Both become CUS-3 to A1, in their order."""
    crm_created, crm_edited = crm_copy_created_and_renamed()
    edited_again = crm_copy_renamed_again()
    worker.step()  # the changes topic read to its end: changes are decided where they are read
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 3000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 2500)
    worker.step()
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3500)
    put(world, "cdc.crm.customer", b"t1:C1", edited_again, at_ms=NOW_MS - 2000)
    worker.run()
    routed = [orjson.loads(record.value)["event_id"] for record in world.records(worker.loop.config.changes_topic)]
    assert routed == ["e-7", "e-8"], "only the edit that rested on an absence, and the one behind it"
    assert [(c["rule"], c["source"]["event_id"]) for _, c in sent(world, "commands.acct")] == [
        ("CUS-3", "e-7"),
        ("CUS-3", "e-8"),
    ]
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"]


def test_a_record_routed_to_wait_is_not_overtaken_by_its_next_change_decided_at_once(world, worker):
    """Pipelined and decided where read: the edit e-7 of C1, read before accounting's A1, rests on an
    absence and is routed; its batch is still committing when C1's next edit e-8 is read. A1's link is
    known by then, yet e-8 is routed behind e-7 instead of being decided at once: accounting gets
    e-7's name, then e-8's, and keeps the newer one."""
    crm_created, crm_edited = crm_copy_created_and_renamed()
    edited_again = crm_copy_renamed_again()
    worker.step()  # the changes topic read to its end: changes are decided where they are read
    _commit_waits_for_the_next_batch(worker)
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 3000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 2500)
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 2400)
    # read in this order: e-7 rests on A1's absence (routed), then A1 is decided; the batch commits...
    worker.loop.process(worker.pending(), now=NOW_MS / 1000)
    put(world, "cdc.crm.customer", b"t1:C1", edited_again, at_ms=NOW_MS - 2000)
    worker.loop.process(worker.pending(), now=NOW_MS / 1000)  # ...while e-8 is read, A1's link known
    worker.loop.await_durable()
    worker.run()
    assert [(c["source"]["event_id"], c["fields"]["name"]) for _, c in sent(world, "commands.acct")] == [
        ("e-7", "ABC mới"),
        ("e-8", "ABC mới 2"),
    ]


def test_a_worker_that_takes_a_partition_over_restores_its_tenants_links(world, worker, tmp_path):
    """Worker 1 learns acct customer A1's link, then stops; worker 2 gets every partition, reads the
    state changelog back, and the salesperson's later edit of the CRM copy is CUS-3 to A1."""
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    worker.run()
    second = Worker(world, tmp_path / "second")
    second.start()
    crm_created, crm_edited = crm_copy_created_and_renamed()
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    second.run()
    ((_key, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3" and command["key"] == {"id": "A1", "code": "KH0001"}
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"], "nothing decided twice"


def test_two_workers_each_decide_only_the_tenants_of_their_partitions(world, tmp_path):
    changes = [TopicPartition("agent-test-changes", p) for p in range(3)]
    first, second = Worker(world, tmp_path / "1"), Worker(world, tmp_path / "2")
    inputs = _inputs(world)
    first.start([*inputs[::2], *changes[:2]])
    second.start([*inputs[1::2], changes[2]])
    for n in range(30):
        tenant = f"t{n}"
        put(world, "cdc.acct.customer", f"{tenant}:A1".encode(), change(tenant=tenant, event_id=f"e{n}"))
    for _ in range(3):
        first.run()
        second.run()
    assert len(sent(world, "commands.crm")) == 30
    assert first.counts["decided"] + second.counts["decided"] == 30
    assert first.counts["decided"] and second.counts["decided"], "both decided some"


def _inputs(world):
    return [
        TopicPartition(topic, p)
        for topic, count in sorted(world.partitions.items())
        if topic.startswith(("cdc.", "results."))
        for p in range(count)
    ]


def test_a_store_on_rocksdb_survives_a_restart_and_knows_how_far_its_changelog_went(tmp_path):
    memory = RocksDBMemory.of(8, 8)
    store = RocksDBPartitionStore(tmp_path / "state" / "2", 2, memory)
    state = PartitionState(store, {}, "sale_order")
    state.set("links", "t1:customer:code=KH1>acct", "A1")
    state.write_to_store(41)
    store.close()
    reopened = RocksDBPartitionStore(tmp_path / "state" / "2", 2, memory)
    assert reopened.changelog_offset == 41, "recovery reads the changelog from after what the store has"
    assert (
        PartitionState(reopened, {}, "sale_order").linked_id("t1", _acct(), "customer", code="KH1", other_id=None)
        == "A1"
    )


def test_a_state_kept_over_many_batches_reads_what_each_batch_wrote_after_reading_it_absent():
    state = in_memory_state()  # as a replay keeps one (streams.replay): written every batch, never new
    key = "t1:customer:code=KH1>acct"
    for batch, value in enumerate(("A1", "A2", None, "A3")):
        assert state.get("links", key) == (None if batch == 0 else ["A1", "A2", None][batch - 1])
        if value is None:
            state.delete("links", key)
        else:
            state.set("links", key, value)
        state.write_to_store(None)
    assert state.get("links", key) == "A3"


def _acct():
    from common.names import System

    return System.ACCT


def test_the_customers_of_one_tenant_are_read_by_prefix_and_no_other_tenants(tmp_path):
    store = RocksDBPartitionStore(tmp_path / "state" / "0", 0, RocksDBMemory.of(8, 8))
    state = PartitionState(store, {}, "sale_order")
    for key in ("t1:customer:KH1", "t1:customer:KH2", "t1:product:SP1", "t10:customer:KH1", "t0:customer:KH1"):
        state.set("crm_records", key, {"key": key})
    state.write_to_store(0)
    state.set("crm_records", "t1:customer:KH3", {"key": "t1:customer:KH3"})  # this batch's, not stored yet
    assert [record["key"] for record in state.crm_customers("t1")] == [
        "t1:customer:KH1",
        "t1:customer:KH2",
        "t1:customer:KH3",
    ]
    assert list(state.crm_customers("t2")) == []


def test_every_store_of_a_worker_shares_the_memory_budget_of_the_settings(tmp_path):
    memory = RocksDBMemory.of(3, 5)
    stores = Stores(tmp_path, memory)
    first, second = stores.assign(0), stores.assign(1)
    assert memory.memtables.get_buffer_size() == 5 * 1024 * 1024
    for n in range(2000):
        PartitionState(first, {}, "sale_order").set("orders", f"t1:order-{n}", {"total": "1" * 100})
    state = PartitionState(second, {}, "sale_order")
    for n in range(2000):
        state.set("orders", f"t2:order-{n}", {"total": "1" * 100})
    state.write_to_store(1)
    assert 0 < memory.memtables.get_usage() <= 5 * 1024 * 1024 * 1.1
    assert memory.block_cache.get_usage() <= 3 * 1024 * 1024
    stores.close()


def test_a_record_whose_code_changes_keeps_its_link_under_the_new_code():
    state = in_memory_state()
    state.apply_links([LinkUpdate("t1", "customer", "KH1", {"acct": "A1"})])
    state.apply_links([LinkUpdate("t1", "customer", "KH1", {"crm": "C9"})])
    state.apply_links([LinkUpdate("t1", "customer", "KH2", {"crm": "C9"})])  # CRM renamed the code
    assert state.linked_id("t1", _acct(), "customer", code="KH2", other_id="C9") == "A1"


def test_a_drained_group_has_committed_the_end_of_every_partition_it_read(world, worker, tmp_path):
    """No lag once everything is decided, even for a worker that took a partition over and found
    nothing new on it (it has no position of its own: it commits the end the consumer reported)."""
    put(world, "cdc.acct.customer", b"t1:A1", change())
    worker.run()
    successor = Worker(world, tmp_path / "successor")
    successor.start()
    world.append("agent-test-changes", 0, None, None, None, NOW_MS).marker = True  # a transaction's marker

    successor.run()
    for tp in every_subscribed_partition(world):
        end = len(world.log[(tp.topic, tp.partition)])
        assert world.group_offsets.get((tp.topic, tp.partition), 0) == end, (tp.topic, tp.partition)
