"""Shared pieces of the agent tier: the app under test with captured sends, and event builders."""

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
    # No config.tenants reader runs here: tenant settings are set directly in tenants.by_tenant.
    built.tenants.current_as_of_ms = 2**62
    sends = {}
    for name in ("commands.crm", "commands.acct", "audit.sync", "dlq.cdc", "aggregate_inputs"):
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
        "schema_version": 1,
        "event_id": "e-1",
        "tenant": "t1",
        "system": "acct",
        "entity": "customer",
        "op": "c",
        "origin": "user",
        "ts_ms": 1,
        "before": None,
        "after": {"id": "A1", "code": "KH0001", "name": "Công ty ABC"},
    }
    event.update(overrides)
    return orjson.dumps(event)
