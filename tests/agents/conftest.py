"""Shared pieces of the agent tier: the app under test with its outputs captured, and event builders.

The app is the real one (``create_app``) with a fake producer at its edge: what the agents send is
recorded per topic instead of reaching a broker. Events are fed through ``agent.test_context()``
and each ``put`` waits until the agent has finished the batch holding it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from faust.types import TP

from streams.app import create_app
from streams.settings import TableSettings, WorkerSettings
from streams.tables import WRITER_HEADER


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    partition: int = 0
    offset: int = 0
    acked_in: int = 0  # which acknowledgement round (FakeProducer.rounds) acknowledged it


class DeliveryReport:
    def __init__(self, produced: Produced) -> None:
        self._produced = produced

    def topic(self) -> str:
        return self._produced.topic

    def partition(self) -> int:
        return self._produced.partition

    def offset(self) -> int:
        return self._produced.offset


class FakeProducer:
    """``confluent_kafka.Producer`` as the outputs use it; every message is acknowledged."""

    def __init__(self) -> None:
        self.messages: list[Produced] = []
        self._next_offset: dict[tuple[str, int], int] = {}
        self._callbacks: list[tuple[Callable[[Any, Any], None], Produced]] = []
        # how many times messages were acknowledged: a worker killed after round n had on the broker
        # what was acknowledged up to it
        self.rounds = 0

    def produce(self, topic, value=None, key=None, partition=-1, *, headers=None, on_delivery=None) -> None:
        partition = max(partition, 0)
        offset = self._next_offset.get((topic, partition), 0)
        self._next_offset[(topic, partition)] = offset + 1
        produced = Produced(topic, key, value, dict(headers or []), partition, offset)
        self.messages.append(produced)
        if on_delivery is not None:
            self._callbacks.append((on_delivery, produced))

    def poll(self, timeout: float = 0) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float = 0) -> int:
        callbacks, self._callbacks = self._callbacks, []
        if callbacks:
            self.rounds += 1
        for callback, produced in callbacks:
            produced.acked_in = self.rounds
            callback(None, DeliveryReport(produced))
        return 0


@pytest.fixture()
def built(tmp_path, monkeypatch):
    return build_worker(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def built_for_fuzz(tmp_path_factory):
    """One app for every example of a hypothesis test (function-scoped fixtures are not reset
    between examples); its outputs are cleared by the test."""
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield build_worker(tmp_path_factory.mktemp("fuzz"), monkeypatch)
    finally:
        monkeypatch.undo()


def build_worker(tmp_path, monkeypatch):
    """A worker's app with the fake producer and no broker (``built``; a test can start a second)."""
    producer = FakeProducer()
    built = create_app(
        WorkerSettings(
            tables=TableSettings(store="memory://", data_dir=tmp_path), web_enabled=False, app_id="agent-test"
        ),
        producer=producer,
    )
    app = built.app
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    # Table writes go to changelog topics through faust's producer; with no broker, it only has to
    # pick a partition (global tables have one) and buffer the message, and flushing has nothing to wait for.
    monkeypatch.setattr(app.producer, "key_partition", lambda topic, key: TP(topic, 0))

    async def flushed() -> None:
        return None

    monkeypatch.setattr(app.producer, "flush", flushed)
    # No config.tenants reader runs here: tenant settings are set directly in tenants.by_tenant.
    built.tenants.current_as_of_ms = 2**62
    built.producer = producer
    built.deps.stop_worker = lambda: None  # a failed batch fails the test instead of ending pytest
    # No broker to ask for the global changelogs' end offsets: they end where this worker has read
    # (no other worker writes), unless a test says otherwise (built.changelog_ends).
    built.changelog_ends = {}

    async def end_offsets(tps):
        read = {table.changelog_tp(): table.changelog_read_until() for table in built.tables.global_tables()}
        return {tp: built.changelog_ends.get(tp, read[tp]) for tp in tps}

    built.deps.catch_up.end_offsets = end_offsets
    return built


def produced(built, topic: str) -> list[Produced]:
    """What the agents sent to ``topic`` (``aggregate_inputs``: the internal re-keyed topic)."""
    name = built.deps.topics.aggregate_inputs if topic == "aggregate_inputs" else topic
    return [message for message in built.producer.messages if message.topic == name]


def sent(built, topic: str) -> list[tuple[bytes | None, Any]]:
    """(key, JSON value) of every message sent to ``topic``."""
    return [(message.key, orjson.loads(message.value)) for message in produced(built, topic)]


class Feed:
    """Puts messages into an agent under ``test_context()`` and waits until each batch is done.

    ``topic`` names the source topic of a multi-topic agent: faust's test wrapper names the
    message's topic only for single-topic agents ("<internal>" otherwise), and the CDC agent reads
    system and entity from the topic name.
    """

    def __init__(self, built, wrapper, name: str) -> None:
        self.built = built
        self.wrapper = wrapper
        self.name = name
        self.sent = built.deps.counts[f"{name}.events"]  # what the agent had done before this feed

    async def put(self, *args: Any, key: bytes, headers=None):
        """``put(value, key=…)``, or ``put(topic, value, key=…)`` for the CDC agent."""
        if len(args) == 2:
            topic, value = args
            self._name_topic(topic)
        else:
            (value,) = args
        event = await self.wrapper.put(value, key=key, headers=headers)
        self.sent += 1
        counts = self.built.deps.counts
        for _ in range(500):
            if counts[f"{self.name}.events"] >= self.sent:
                return event
            await asyncio.sleep(0.01)
        raise AssertionError(f"the {self.name} agent did not finish its batch within 5 s")

    async def put_many(self, messages: list[tuple[str, bytes | None, bytes | None, dict | None]]) -> None:
        """(topic, key, value, headers) each, without waiting between them; then until all are done."""
        for topic, key, value, headers in messages:
            self._name_topic(topic)
            await self.wrapper.put(value, key=key, headers=headers, wait=False)
            self.sent += 1
        counts = self.built.deps.counts
        for _ in range(3000):
            if counts[f"{self.name}.events"] >= self.sent:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the {self.name} agent did not finish {len(messages)} messages within 30 s")

    def _name_topic(self, topic: str) -> None:
        wrapper = self.wrapper
        original = type(wrapper).to_message

        def to_message(agent_self, *args, **kwargs):
            message = original(agent_self, *args, **kwargs)
            message.topic = topic
            message.tp = TP(topic, message.partition)
            return message

        wrapper.to_message = to_message.__get__(wrapper)


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


def changelog_events(messages, first_offset: int, writer: bytes | None = None):
    """Changelog messages (``OutputMessage``) as a worker's changelog reader receives them, at offsets
    from ``first_offset``; ``writer`` replaces the worker that wrote them."""
    events = []
    for offset, message in enumerate(messages, start=first_offset):
        tp = TP(message.topic, 0)
        headers = dict(message.headers or ())
        if writer is not None:
            headers[WRITER_HEADER] = writer
        events.append(
            SimpleNamespace(
                message=SimpleNamespace(
                    tp=tp, topic=tp.topic, partition=0, offset=offset, key=message.key, value=message.value
                ),
                headers=headers,
                key=orjson.loads(message.key),
                value=None if message.value is None else orjson.loads(message.value),
            )
        )
    return events
