"""Agent tier: change events through the processing loop (routed by tenant, decided by its owner)."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from streams.core.sync_settings import SyncSettings
from tests.agents.conftest import NOW_MS, ROUND_MS, Worker, change, every_subscribed_partition, headers_of, put, sent


def crm_copy_created_and_renamed() -> tuple[bytes, bytes]:
    """The CRM copy C1 of acct customer KH0001 created (e-6), then renamed by a salesperson (e-7)."""
    created = change(system="crm", event_id="e-6", after={"id": "C1", "code": "KH0001", "name": "ABC"})
    renamed = change(
        system="crm",
        event_id="e-7",
        op="u",
        before={"id": "C1", "code": "KH0001", "name": "ABC"},
        after={"id": "C1", "code": "KH0001", "name": "ABC mới"},
    )
    return created, renamed


def test_acct_customer_create_becomes_a_cus6_command(world, worker):
    put(world, "cdc.acct.customer", b"t1:A1", change())
    worker.run()
    commands = sent(world, "commands.crm")
    assert len(commands) == 1
    key, command = commands[0]
    assert key == b"t1:customer:KH0001"
    assert command["rule"] == "CUS-6"
    assert command["op"] == "upsert"
    assert command["fields"]["name"] == "Công ty ABC"
    assert "id" not in command["fields"]
    assert not sent(world, "commands.acct")
    ((_, audit),) = sent(world, "audit.sync")
    assert audit["rules"] == ["CUS-6"]
    assert audit["commands"][0]["command_id"] == command["command_id"]
    # the command says when the change happened in its source, for the connector's latency
    assert headers_of(world, "commands.crm")[0]["lienthong.source_ts_ms"] == b"1"


def test_crm_customer_create_is_audited_without_command(world, worker):
    put(world, "cdc.crm.customer", b"t1:C1", change(system="crm", event_id="e-2", after={"id": "C1", "code": "KH2"}))
    worker.run()
    assert not sent(world, "commands.acct") and not sent(world, "commands.crm")
    ((key, audit),) = sent(world, "audit.sync")
    assert key == b"t1:customer:C1"
    assert audit["rules"] == ["CUS-1"]
    assert audit["commands"] == []
    assert "CUS-1" in audit["reason"]


def test_bad_input_goes_to_the_dead_letter_topic_whole_and_the_stream_goes_on(world, worker):
    bad = put(world, "cdc.acct.customer", b"t1:A9", b"{not json")
    put(world, "cdc.acct.customer", b"t1:A1", change(schema_version=2, event_id="e-3"))
    put(world, "cdc.acct.customer", b"t1:A1", change(action="fly", event_id="e-4"))
    put(world, "cdc.acct.customer", b"t1:A1", change(event_id="e-5"))
    worker.run()
    letters = world.records("dlq.cdc")
    assert sorted(dict(letter.headers)["error.kind"] for letter in letters) == [
        b"decode",
        b"schema_version",
        b"unknown_action",
    ]
    first = next(letter for letter in letters if dict(letter.headers)["error.kind"] == b"decode")
    assert first.value == b"{not json" and first.key == b"t1:A9", "the original key and bytes, not the routed ones"
    headers = dict(first.headers)
    assert set(headers) == {"error.kind", "error.message", "origin.topic", "origin.partition", "origin.offset",
                            "failed.at_ms"}  # fmt: skip
    assert (headers["origin.topic"], headers["origin.partition"], headers["origin.offset"]) == (
        b"cdc.acct.customer",
        str(bad.partition).encode(),
        str(bad.offset).encode(),
    ), "where it was first read, not where it was routed"
    # the worker's clock when it decided: the second batch (the first routed it to its tenant's partition)
    assert headers["failed.at_ms"] == str(NOW_MS + ROUND_MS).encode()
    # the good event after the bad ones still produced its command
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6"]


def test_a_tombstone_is_not_a_change(world, worker):
    put(world, "cdc.acct.receipt", b"t1:R9", None)  # Debezium writes one after each delete
    worker.run()
    assert not world.records("dlq.cdc") and not world.records("audit.sync")


def test_tables_remember_links_for_the_next_event(world, worker):
    """An acct customer teaches the link by code, so a CRM update of that code is CUS-3, not none."""
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    worker.run()
    crm_created, crm_updated = crm_copy_created_and_renamed()
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_updated, at_ms=NOW_MS - 1000)
    worker.run()
    ((_key, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A1", "code": "KH0001"}
    assert command["fields"]["name"] == "ABC mới"


def test_a_crm_edit_routed_before_the_acct_create_it_follows_waits_for_it(world, worker):
    """The acct create (earlier) and the salesperson's edit of its CRM copy (later) sit on different
    input partitions; the edit is routed first. Its decision rests on "not linked": it is held until
    every input has passed its time, then decided with the link: CUS-3, never "not linked"."""
    crm_created, crm_edited = crm_copy_created_and_renamed()
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    worker.run()  # cdc.crm.* is routed before cdc.acct.*: the edit reaches its owner first
    assert worker.counts["held"] == 1
    ((_key, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A1", "code": "KH0001"}
    audited = [audit["event_id"] for _, audit in sent(world, "audit.sync")]
    assert sorted(audited) == ["e-1", "e-6", "e-7"], "one audit record per change"


def test_a_held_change_waits_for_an_input_with_no_router_at_most_the_order_wait(world, tmp_path, caplog):
    """One input has no router (its worker is gone) and holds an earlier event: a change resting on an
    absence waits for it no longer than LIENTHONG_ORDER_MAX_WAIT, then is decided with what is known,
    and the log says so."""
    worker = Worker(world, tmp_path, order_max_wait=10)
    unrouted = ("cdc.acct.customer", 0)
    worker.start([tp for tp in every_subscribed_partition(world) if (tp.topic, tp.partition) != unrouted])
    other = change(tenant="t9", event_id="e-9", after={"id": "A9", "code": "KH9"})
    world.append(*unrouted, b"t9:A9", other, None, NOW_MS - 2000)  # nobody routes it
    _crm_created, crm_edited = crm_copy_created_and_renamed()
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    for now_ms in (NOW_MS, NOW_MS + 300, NOW_MS + 5_000):
        worker.step(now_ms=now_ms)
    assert worker.counts["held"] == 1 and not sent(world, "audit.sync"), "still waiting after 5 s"
    worker.step(now_ms=NOW_MS + 10_300)
    ((_, audit),) = sent(world, "audit.sync")
    assert audit["event_id"] == "e-7" and [note["tag"] for note in audit["notes"]] == ["not_linked"]
    assert "before every input passed its time" in caplog.text


def test_a_change_routed_by_another_worker_while_the_owner_asks_is_read_before_what_it_held(world, tmp_path):
    """Another worker routes the acct create (earlier) and commits that transaction while the owner
    asks the broker how far the inputs are, between its questions: the committed offsets then say
    the create was routed. The owner counts the inputs as passed only once it has read its partition
    of the changes topic to an end asked after those offsets, so the create is decided before the
    held edit: CUS-3, never "not linked"."""
    acct_create = world.partition_of("cdc.acct.customer", b"t1:A1")
    others = [("cdc.acct.customer", acct_create)]
    owner, router = Worker(world, tmp_path / "owner"), Worker(world, tmp_path / "router")
    owner.start([tp for tp in every_subscribed_partition(world) if (tp.topic, tp.partition) not in others])
    router.start([TopicPartition(*where) for where in others])
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    crm_created, crm_edited = crm_copy_created_and_renamed()
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    asked = owner.loop.group_offsets

    def router_commits_meanwhile(partitions, timeout=0):
        if not router.counts["batches"]:
            router.step()  # routes the create and commits its offset, in one transaction
        return asked(partitions, timeout)

    owner.loop.group_offsets = router_commits_meanwhile
    owner.run()
    assert router.counts["batches"] == 1 and owner.counts["held"] == 1
    ((_key, command),) = sent(world, "commands.acct")
    assert command["rule"] == "CUS-3"
    edit = next(audit for _, audit in sent(world, "audit.sync") if audit["event_id"] == "e-7")
    assert "not_linked" not in [note["tag"] for note in edit["notes"]]


def test_later_changes_of_a_held_record_wait_behind_it_in_their_order(world, worker):
    crm_created, crm_edited = crm_copy_created_and_renamed()
    renamed_again = change(
        system="crm",
        event_id="e-8",
        op="u",
        before={"id": "C1", "code": "KH0001", "name": "ABC mới"},
        after={"id": "C1", "code": "KH0001", "name": "ABC mới nhất"},
    )
    put(world, "cdc.acct.customer", b"t1:A1", change(), at_ms=NOW_MS - 3000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_created, at_ms=NOW_MS - 2000)
    put(world, "cdc.crm.customer", b"t1:C1", crm_edited, at_ms=NOW_MS - 1000)
    put(world, "cdc.crm.customer", b"t1:C1", renamed_again, at_ms=NOW_MS - 900)
    worker.run()
    assert worker.counts["held"] == 2, "the second edit waited behind the first"
    names = [c["fields"]["name"] for _, c in sent(world, "commands.acct")]
    assert names == ["ABC mới", "ABC mới nhất"]


def test_a_duplicate_event_id_is_dropped(world, worker):
    """Contract: event ids are unique per change; a redelivered change is processed once."""
    put(world, "cdc.acct.customer", b"t1:A1", change(event_id="e-dup"))
    put(world, "cdc.acct.customer", b"t1:A1", change(event_id="e-dup"))
    renamed = change(
        event_id="e-next",
        op="u",
        before={"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
        after={"id": "A1", "code": "KH0001", "name": "Công ty ABC mới"},
    )
    put(world, "cdc.acct.customer", b"t1:A1", renamed)
    worker.run()
    assert [c["rule"] for _, c in sent(world, "commands.crm")] == ["CUS-6", "CUS-8"]
    assert len(sent(world, "audit.sync")) == 2


def test_a_contract_tenant_gets_contract_commands(world, worker):
    """order_target from tenant settings: the same CRM proposal is CT-4 for a contract tenant."""
    worker.tenants.by_tenant["t2"] = SyncSettings(tenant="t2", order_target="contract")
    order = {"id": "O1", "code": "DH1", "customer_code": "KH1", "revenue_status": "proposed", "lines": []}
    for tenant in ("t1", "t2"):
        put(
            world,
            "cdc.crm.sale_order",
            f"{tenant}:O1".encode(),
            change(
                tenant=tenant,
                system="crm",
                entity="sale_order",
                event_id=f"e-{tenant}",
                action="propose_revenue",
                op="u",
                before=dict(order, revenue_status="draft"),
                after=order,
            ),
        )
    worker.run()
    documents = sorted(
        (c["tenant"], c["rule"], c["entity"]) for _, c in sent(world, "commands.acct") if c["rule"] in ("SO-4", "CT-4")
    )
    assert documents == [("t1", "SO-4", "sale_order"), ("t2", "CT-4", "contract")]


def test_every_change_of_a_tenant_is_routed_to_one_partition_of_the_changes_topic(world, worker):
    for n in range(6):
        put(world, "cdc.acct.customer", f"t1:A{n}".encode(), change(event_id=f"a{n}", after={"id": f"A{n}"}))
        product = change(system="crm", entity="product", event_id=f"p{n}", after={"id": f"P{n}"})
        put(world, "cdc.crm.product", f"t1:P{n}".encode(), product)
        put(
            world,
            "cdc.acct.customer",
            f"t2:A{n}".encode(),
            change(tenant="t2", event_id=f"b{n}", after={"id": f"A{n}"}),
        )
    worker.run()
    partitions: dict[bytes, set[int]] = {}
    for record in world.records("agent-test-changes"):
        if record.key is not None:
            partitions.setdefault(record.key, set()).add(record.partition)
    assert set(partitions) == {b"t1", b"t2"}
    assert all(len(used) == 1 for used in partitions.values()), partitions
    routed = [record for record in world.records("agent-test-changes") if record.key == b"t1"]
    assert routed[0].value == world.records("cdc.acct.customer")[0].value or any(
        r.value == world.records("cdc.acct.customer")[0].value for r in routed
    ), "the original bytes travel, not a re-encoding"
