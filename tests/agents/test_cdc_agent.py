"""Agent tier: the CDC agent under ``agent.test_context()`` (no broker; outputs captured)."""

from __future__ import annotations

import asyncio

from streams.core.decide import LinkUpdate
from streams.tables import BatchState
from tests.agents.conftest import Feed, build_worker, change, changelog_events, produced, sent


async def test_acct_customer_create_becomes_a_cus6_command(built):
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.acct.customer", change(), key=b"t1:A1")
    commands = sent(built, "commands.crm")
    assert len(commands) == 1
    key, command = commands[0]
    assert key == b"t1:customer:KH0001"
    assert command["rule"] == "CUS-6"
    assert command["op"] == "upsert"
    assert command["fields"]["name"] == "Công ty ABC"
    assert "id" not in command["fields"]
    assert not produced(built, "commands.acct")
    ((_, audit),) = sent(built, "audit.sync")
    assert audit["rules"] == ["CUS-6"]
    assert audit["commands"][0]["command_id"] == command["command_id"]


async def test_crm_customer_create_is_audited_without_command(built):
    raw = change(system="crm", event_id="e-2", after={"id": "C1", "code": "KH0002", "name": "X"})
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.crm.customer", raw, key=b"t1:C1")
    assert not produced(built, "commands.acct")
    assert not produced(built, "commands.crm")
    ((key, audit),) = sent(built, "audit.sync")
    assert key == b"t1:customer:C1"
    assert audit["rules"] == ["CUS-1"]
    assert audit["commands"] == []
    assert "CUS-1" in audit["reason"]


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_agent_goes_on(built):
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.acct.customer", b"{not json", key=b"t1:A9")
        await agent.put("cdc.acct.customer", change(schema_version=2, event_id="e-3"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(action="fly", event_id="e-4"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(event_id="e-5"), key=b"t1:A1")
    letters = produced(built, "dlq.cdc")
    assert [call.headers["error.kind"] for call in letters] == [
        b"decode",
        b"schema_version",
        b"unknown_action",
    ]
    first = letters[0]
    assert first.value == b"{not json" and first.key == b"t1:A9"
    assert set(first.headers) == {
        "error.kind",
        "error.message",
        "origin.topic",
        "origin.partition",
        "origin.offset",
        "failed.at_ms",
    }
    # the good event after the bad ones still produced its command
    assert [c["rule"] for _, c in sent(built, "commands.crm")] == ["CUS-6"]


async def test_a_worker_killed_once_a_batch_was_sent_replays_it_knowing_the_links_it_learnt(
    built, tmp_path, monkeypatch
):
    """A worker decides acct customer A1 (CUS-6 sent) and is killed before it remembers having
    processed it. Its replacement reads A1's change again, in one batch behind the CRM copy's
    creation and a salesperson's edit of that copy: the edit is CUS-3 to A1, because the link
    A1 taught was on the broker before the batch's outputs (not "not linked" for good)."""
    async with built.agents["cdc"].test_context() as wrapper:
        await Feed(built, wrapper, "cdc").put("cdc.acct.customer", change(), key=b"t1:A1")
    ((_key, cus6),) = sent(built, "commands.crm")
    # killed right after the broker acknowledged the batch's outputs, before anything later
    outputs_round = next(m.acked_in for m in built.producer.messages if m.topic == "commands.crm")
    on_the_broker = [m for m in built.producer.messages if m.acked_in <= outputs_round]

    replacement = build_worker(tmp_path / "replacement", monkeypatch)
    links = replacement.tables.links
    links_topic = links.changelog_tp().topic
    recovered = [m for m in on_the_broker if m.topic == links_topic]
    links.apply_changelog_batch(changelog_events(recovered, 0, b"the-killed-worker"))
    crm_created, crm_edited = crm_copy_created_and_renamed()
    async with replacement.agents["cdc"].test_context() as wrapper:
        await Feed(replacement, wrapper, "cdc").put_many(
            [
                ("cdc.crm.customer", b"t1:C1", crm_created, None),
                ("cdc.crm.customer", b"t1:C1", crm_edited, None),
                ("cdc.acct.customer", b"t1:A1", change(), None),
            ]
        )
    ((_key, cus3),) = sent(replacement, "commands.acct")
    assert cus3["rule"] == "CUS-3"
    assert cus3["key"] == {"id": "A1", "code": "KH0001"}
    assert cus3["fields"]["name"] == "ABC mới"
    # the replayed CUS-6 has the id the first one had: the connector skips it
    assert [c["command_id"] for _, c in sent(replacement, "commands.crm")] == [cus6["command_id"]]


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


async def test_tables_remember_links_for_the_next_event(built):
    """An acct customer teaches the link by code, so a CRM update of that code is CUS-3, not none."""
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.acct.customer", change(), key=b"t1:A1")
        crm_created, crm_updated = crm_copy_created_and_renamed()
        await agent.put("cdc.crm.customer", crm_created, key=b"t1:C1")
        await agent.put("cdc.crm.customer", crm_updated, key=b"t1:C1")
    ((_key, command),) = sent(built, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A1", "code": "KH0001"}
    assert command["fields"]["name"] == "ABC mới"


async def test_a_duplicate_event_id_is_dropped(built):
    """Contract: event ids are unique per change; a redelivered change is processed once."""
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put("cdc.acct.customer", change(event_id="e-dup"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(event_id="e-dup"), key=b"t1:A1")
        renamed = change(
            event_id="e-next",
            op="u",
            before={"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
            after={"id": "A1", "code": "KH0001", "name": "Công ty ABC mới"},
        )
        await agent.put("cdc.acct.customer", renamed, key=b"t1:A1")
    assert [c["rule"] for _, c in sent(built, "commands.crm")] == ["CUS-6", "CUS-8"]
    assert len(produced(built, "audit.sync")) == 2


async def test_a_contract_tenant_gets_contract_commands(built):
    """order_target from tenant settings: the same CRM proposal is CT-4 for a contract tenant."""
    built.tenants.by_tenant["t2"] = {"schema_version": 1, "tenant": "t2", "order_target": "contract"}
    order = {"id": "O1", "code": "DH1", "customer_code": "KH1", "revenue_status": "proposed", "lines": []}
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        for tenant in ("t1", "t2"):
            await agent.put(
                "cdc.crm.sale_order",
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
                key=f"{tenant}:O1".encode(),
            )
    documents = [
        (c["tenant"], c["rule"], c["entity"]) for _, c in sent(built, "commands.acct") if c["rule"] in ("SO-4", "CT-4")
    ]
    assert documents == [("t1", "SO-4", "sale_order"), ("t2", "CT-4", "contract")]


async def test_a_crm_edit_of_a_customer_another_worker_just_linked_is_sent_once_this_worker_read_the_link(built):
    """Another worker linked acct customer A1 (code KH0001) a moment ago; its changelog message has
    not reached this worker when the CRM copy's creation and a salesperson's edit arrive. The edit
    rests on "not linked": the worker reads the other's write, decides the batch again and sends
    CUS-3 to A1 — one audit record per change, not two."""
    links = built.tables.links
    other_worker = BatchState(built.tables, built.tenants, "sale_order")
    other_worker.apply_links([LinkUpdate("t1", "customer", "KH0001", {"acct": "A1"})])
    their_write = changelog_events(other_worker.changelog(["links"]), links.changelog_read_until(), b"another-worker")
    built.changelog_ends[links.changelog_tp()] = links.changelog_read_until() + len(their_write)

    async def standby_reader_reads_it_later() -> None:
        await asyncio.sleep(0.3)
        links.apply_changelog_batch(their_write)

    crm_created, crm_edited = crm_copy_created_and_renamed()
    reader = asyncio.ensure_future(standby_reader_reads_it_later())
    async with built.agents["cdc"].test_context() as wrapper:
        agent = Feed(built, wrapper, "cdc")
        await agent.put_many(
            [("cdc.crm.customer", b"t1:C1", crm_created, None), ("cdc.crm.customer", b"t1:C1", crm_edited, None)]
        )
    await reader
    ((_key, command),) = sent(built, "commands.acct")
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A1", "code": "KH0001"}
    assert [audit["event_id"] for _, audit in sent(built, "audit.sync")] == ["e-6", "e-7"]
    assert built.deps.counts["cdc.decided_again"] >= 1
    assert built.deps.counts["decided"] == 2
