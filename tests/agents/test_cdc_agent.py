"""Agent tier: the CDC agent under ``agent.test_context()`` (no broker; sends captured)."""

from __future__ import annotations

import asyncio

from unittest.mock import AsyncMock

import orjson
import pytest
from faust.types import TP

from streams.app import create_app
from streams.settings import Settings


@pytest.fixture()
def built(tmp_path, monkeypatch):
    built = create_app(Settings(store="memory://", web_enabled=False, data_dir=tmp_path, app_id="agent-test"))
    app = built.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    # Table writes go to changelog topics through the producer; with no broker, the producer only
    # has to pick a partition (global tables have one) and buffer the message.
    monkeypatch.setattr(app.producer, "key_partition", lambda topic, key: TP(topic, 0))
    sends = {}
    for name in ("commands.crm", "commands.acct", "audit.sync", "dlq.cdc"):
        mock = AsyncMock(side_effect=_delivered)
        monkeypatch.setattr(built.topics[name], "send", mock)
        sends[name] = mock
    built.sends = sends
    return built


def _delivered(*args, **kwargs) -> asyncio.Future:
    """What ``topic.send`` returns: a future that resolves when the broker has the message."""
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class OnTopic:
    """``agent.put`` as if the message came from one named topic of the agent's multi-topic source.

    faust's test wrapper names the message's topic only for single-topic agents ("<internal>"
    otherwise); the CDC agent reads system and entity from the topic name.
    """

    def __init__(self, agent) -> None:
        self.agent = agent

    async def put(self, topic: str, value: bytes, key: bytes, headers=None):
        original = type(self.agent).to_message

        def to_message(agent_self, *args, **kwargs):
            message = original(agent_self, *args, **kwargs)
            message.topic = topic
            message.tp = TP(topic, message.partition)
            return message

        self.agent.to_message = to_message.__get__(self.agent)
        return await self.agent.put(value, key=key, headers=headers)


def sent(mock: AsyncMock) -> list[tuple[bytes, dict]]:
    return [(call.kwargs["key"], orjson.loads(call.kwargs["value"])) for call in mock.await_args_list]


def change(**overrides):
    event = {
        "schema_version": 1, "event_id": "e-1", "tenant": "t1", "system": "acct", "entity": "customer",
        "op": "c", "origin": "user", "ts_ms": 1, "before": None,
        "after": {"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
    }
    event.update(overrides)
    return orjson.dumps(event)


async def test_acct_customer_create_becomes_a_cus6_command(built):
    async with built.agents["cdc"].test_context() as wrapper:
        agent = OnTopic(wrapper)
        await agent.put("cdc.acct.customer", change(), key=b"t1:A1")
    commands = sent(built.sends["commands.crm"])
    assert len(commands) == 1
    key, command = commands[0]
    assert key == b"t1:customer:KH0001"
    assert command["rule"] == "CUS-6"
    assert command["op"] == "upsert"
    assert command["fields"]["name"] == "Công ty ABC"
    assert "id" not in command["fields"]
    assert not built.sends["commands.acct"].await_args_list
    (_, audit), = sent(built.sends["audit.sync"])
    assert audit["rules"] == ["CUS-6"]
    assert audit["commands"][0]["command_id"] == command["command_id"]


async def test_crm_customer_create_is_audited_without_command(built):
    raw = change(system="crm", event_id="e-2", after={"id": "C1", "code": "KH0002", "name": "X"})
    async with built.agents["cdc"].test_context() as wrapper:
        agent = OnTopic(wrapper)
        await agent.put("cdc.crm.customer", raw, key=b"t1:C1")
    assert not built.sends["commands.acct"].await_args_list
    assert not built.sends["commands.crm"].await_args_list
    (key, audit), = sent(built.sends["audit.sync"])
    assert key == b"t1:customer:C1"
    assert audit["rules"] == ["CUS-1"]
    assert audit["commands"] == []
    assert "CUS-1" in audit["reason"]


async def test_bad_input_goes_to_the_dead_letter_topic_and_the_agent_goes_on(built):
    async with built.agents["cdc"].test_context() as wrapper:
        agent = OnTopic(wrapper)
        await agent.put("cdc.acct.customer", b"{not json", key=b"t1:A9")
        await agent.put("cdc.acct.customer", change(schema_version=2, event_id="e-3"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(action="fly", event_id="e-4"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(event_id="e-5"), key=b"t1:A1")
    letters = built.sends["dlq.cdc"].await_args_list
    assert [call.kwargs["headers"]["error.kind"] for call in letters] == [b"decode", b"schema_version", b"unknown_action"]
    first = letters[0].kwargs
    assert first["value"] == b"{not json" and first["key"] == b"t1:A9"
    assert set(first["headers"]) == {"error.kind", "error.message", "origin.topic", "origin.partition",
                                     "origin.offset", "failed.at_ms"}
    # the good event after the bad ones still produced its command
    assert [c["rule"] for _, c in sent(built.sends["commands.crm"])] == ["CUS-6"]


async def test_tables_remember_links_for_the_next_event(built):
    """An acct customer teaches the link by code, so a CRM update of that code is CUS-3, not none."""
    async with built.agents["cdc"].test_context() as wrapper:
        agent = OnTopic(wrapper)
        await agent.put("cdc.acct.customer", change(), key=b"t1:A1")
        crm_created = change(system="crm", event_id="e-6", after={"id": "C1", "code": "KH0001", "name": "ABC"})
        await agent.put("cdc.crm.customer", crm_created, key=b"t1:C1")
        crm_updated = change(system="crm", event_id="e-7", op="u",
                             before={"id": "C1", "code": "KH0001", "name": "ABC"},
                             after={"id": "C1", "code": "KH0001", "name": "ABC mới"})
        await agent.put("cdc.crm.customer", crm_updated, key=b"t1:C1")
    (key, command), = sent(built.sends["commands.acct"])
    assert command["rule"] == "CUS-3"
    assert command["key"] == {"id": "A1", "code": "KH0001"}
    assert command["fields"]["name"] == "ABC mới"


async def test_a_duplicate_event_id_is_dropped(built):
    """Contract: event ids are unique per change; a redelivered change is processed once."""
    async with built.agents["cdc"].test_context() as wrapper:
        agent = OnTopic(wrapper)
        await agent.put("cdc.acct.customer", change(event_id="e-dup"), key=b"t1:A1")
        await agent.put("cdc.acct.customer", change(event_id="e-dup"), key=b"t1:A1")
        renamed = change(event_id="e-next", op="u", before={"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
                         after={"id": "A1", "code": "KH0001", "name": "Công ty ABC mới"})
        await agent.put("cdc.acct.customer", renamed, key=b"t1:A1")
    assert [c["rule"] for _, c in sent(built.sends["commands.crm"])] == ["CUS-6", "CUS-8"]
    assert len(built.sends["audit.sync"].await_args_list) == 2
