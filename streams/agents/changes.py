"""The owner of a tenant decides its changes: read → look up state → call the core → stage.

Every message of the changes topic (``streams.agents.route``) is one of:

* a **change event** of ``cdc.<system>.<entity>``: decoded from its original bytes, dropped if its
  ``event_id`` was seen for that record, then decided by the sync matrix (``streams.core.decide``);
  an accounting order, contract, sales voucher or receipt also updates the aggregate of the order
  it belongs to and derives the statuses CRM shows (``streams.core.aggregates``). Its commands go
  to ``commands.<system>``, one audit record to ``audit.sync``;
* a **result** of ``results.<system>``: an applied write teaches the link to the target's id (X-3);
  a refused one makes X-2 forget what it wrote;

A change whose decision rests on an absent record is held until every input has passed its time
(``time_order``).

**Decided where it is read.** A change read by the worker that also owns its tenant's partition is
decided at once, in the same batch (``direct``), instead of being routed and read back: one hop, not
two. Unless it would be held (it rests on an absence, or its record has held changes): then it is
routed as any other (``Deferred``), and its record's later changes follow it there until the owner
has read it back (``DeferredChanges``).

Bad input is dead-lettered to ``dlq.cdc`` with the reason in headers, under its
original key and bytes and where it was first read; a bug on one input dead-letters that input
(``internal``) and the stream goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from common.logs import about
from common.names import (
    ORIGIN_KEY,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TIMESTAMP,
    ORIGIN_TOPIC,
    System,
    parse_cdc_topic,
    results_topic,
)
from streams.agents.batch import Batch, Unstageable, count_decision, count_event
from streams.agents.time_order import HeldChange, HeldChanges, InputsPassed, held_key
from streams.core.aggregates import (
    AGGREGATE_ENTITIES,
    OrderAggregate,
    aggregate_inputs,
    check_document,
    decide_for_order,
)
from streams.core.commands import command_key_text
from streams.core.contract import ChangeEvent, CommandKey, Result, Where, decode_change_event
from streams.core.decide import Decision, LinkUpdate, decide, link_family, resolve_action
from streams.core.errors import BadInput
from streams.core.rules import RuleBook
from streams.outputs import OutputMessage
from streams.tables.state import PartitionState

log = logging.getLogger(__name__)

# Headers the router added: not the original's, so not handed to the decoder or kept in a dead letter.
ROUTING_HEADERS = frozenset({ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET, ORIGIN_KEY, ORIGIN_TIMESTAMP})


@dataclass(frozen=True, slots=True)
class Routed:
    """One message of the changes topic: the original's bytes and headers, and where it came from."""

    tenant: str
    value: bytes
    headers: list[tuple[str, bytes]]  # the original's, routing headers removed
    where: Where  # where the original was read
    original_key: bytes | None
    timestamp_ms: int  # when the original reached Kafka
    offset: int  # its own offset on the changes topic

    @classmethod
    def of(cls, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]], offset: int) -> Routed:
        routing: dict[str, bytes] = {}
        original = []
        for name, header in headers:
            if name in ROUTING_HEADERS:
                routing[name] = header
            else:
                original.append((name, header))

        def text(name: str) -> str:
            return routing.get(name, b"").decode("utf-8", "replace")

        return cls(
            tenant=(key or b"").decode("utf-8", "replace"),
            value=value,
            headers=original,
            where=Where(text(ORIGIN_TOPIC), int(text(ORIGIN_PARTITION) or -1), int(text(ORIGIN_OFFSET) or -1)),
            original_key=routing.get(ORIGIN_KEY),
            timestamp_ms=int(text(ORIGIN_TIMESTAMP) or 0),
            offset=offset,
        )

    @classmethod
    def read_directly(cls, tenant: bytes, message: Any) -> Routed:
        """An input message (``confluent_kafka.Message``) decided where it was read, unrouted."""
        return cls(
            tenant=tenant.decode("utf-8", "replace"),
            value=message.value(),
            headers=message.headers() or [],
            where=Where(message.topic(), message.partition(), message.offset()),
            original_key=message.key(),
            timestamp_ms=message.timestamp()[1],
            offset=-1,  # never on the changes topic: never held
        )

    @classmethod
    def of_held(cls, tenant: str, held: HeldChange) -> Routed:
        return cls.of(tenant.encode(), held.value, held.headers, held.offset)

    def header_map(self) -> dict[str, bytes]:
        return dict(self.headers)


class DeferredChanges:
    """Changes of an owned partition's tenants routed instead of decided at once (``Deferred``), by
    where they were read, until the owner reads them back from the changes topic: their records'
    later changes are routed behind them."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, int, int], str] = {}  # where read -> record key
        self._per_record: Counter[str] = Counter()

    def add(self, where: Where, record_key: str) -> None:
        self.records[(where.topic, where.partition, where.offset)] = record_key
        self._per_record[record_key] += 1

    def read_back(self, where: Where) -> None:
        record_key = self.records.pop((where.topic, where.partition, where.offset), None)
        if record_key is not None:
            self._per_record[record_key] -= 1
            if not self._per_record[record_key]:
                del self._per_record[record_key]

    def holds(self, record_key: str) -> bool:
        return record_key in self._per_record

    def clear(self) -> None:
        self.records.clear()
        self._per_record.clear()


@dataclass
class Owned:
    """What the owner keeps of one partition besides its store: how far the inputs have passed,
    the changes held until they do, and those routed rather than decided where they were read."""

    inputs: InputsPassed
    held: HeldChanges
    deferred: DeferredChanges = field(default_factory=DeferredChanges)


class Held(Exception):
    """The change rests on an absence and the inputs have not passed its time yet."""


class Deferred(Exception):
    """A change read directly would be held: it is routed instead (nothing of it was staged)."""

    def __init__(self, record_key: str) -> None:
        super().__init__(record_key)
        self.record_key = record_key


def decide_routed(batch: Batch, state: PartitionState, owned: Owned, routed: Routed, *, direct: bool = False) -> None:
    """Stage one routed message (``direct``: one read where it was written, unrouted): its decision,
    what it teaches, its hold, or its dead letter. Raises ``Deferred`` for a direct one that would be
    held."""
    prefix = batch.processing.topic_prefix
    topic = routed.where.topic
    try:
        if topic in (prefix + results_topic(System.CRM), prefix + results_topic(System.ACCT)):
            learn_from_result(batch, state, routed)
            return
        change = decode(routed, prefix)
        _decide_change(batch, state, owned, routed, change, releasing=False, direct=direct)
    except Deferred:
        raise
    except BadInput as bad:
        batch.dead_letter(routed.original_key, routed.value, bad.kind, bad.message, routed.where)
    except Unstageable as failed:
        batch.dead_letter(routed.original_key, routed.value, failed.kind, failed.message, routed.where)
    except Exception as exc:  # a bug must not stop the stream: the input is kept with the reason
        log.exception("failed on %s@%s:%s", topic, routed.where.partition, routed.where.offset)
        batch.dead_letter(routed.original_key, routed.value, "internal", f"{type(exc).__name__}: {exc}", routed.where)


def release_held(batch: Batch, state: PartitionState, owned: Owned, max_wait_ms: int) -> None:
    """Decide the held changes whose time every input has passed, or that waited ``max_wait_ms``."""
    if not owned.held.by_record:
        return
    prefix = batch.processing.topic_prefix
    for first in owned.held.due(owned.inputs.passed_ms, batch.now_ms - max_wait_ms):
        change: HeldChange | None = first
        while change is not None:
            routed = Routed.of_held(change.held_key.partition(":")[0], change)
            waited = batch.now_ms - change.held_at_ms
            must = owned.inputs.passed(change.timestamp_ms) or waited >= max_wait_ms
            try:
                event = change.event if change.event is not None else decode(routed, prefix)
                _decide_change(batch, state, owned, routed, event, releasing=True, must_decide=must)
            except Held:
                break  # still waiting, and so is every later change of its record
            except BadInput as bad:  # not expected (it was decoded once), but never lost
                batch.dead_letter(routed.original_key, routed.value, bad.kind, bad.message, routed.where)
            except Unstageable as failed:
                batch.dead_letter(routed.original_key, routed.value, failed.kind, failed.message, routed.where)
            except Exception as exc:
                log.exception("failed on held change %s", change.held_key)
                batch.dead_letter(
                    routed.original_key, routed.value, "internal", f"{type(exc).__name__}: {exc}", routed.where
                )
            if must and waited >= max_wait_ms and not owned.inputs.passed(change.timestamp_ms):
                log.warning(
                    "decided a change held for %.1f s before every input passed its time (LIENTHONG_ORDER_MAX_WAIT)",
                    waited / 1000,
                    extra=about(tenant=routed.tenant),
                )
            owned.held.release(state, change)
            queue = owned.held.by_record.get(change.record_key)
            change = queue[0] if queue else None


def decode(routed: Routed, prefix: str) -> ChangeEvent:
    names = parse_cdc_topic(routed.where.topic, prefix)
    if names is None:
        raise BadInput("unknown_topic", f"{routed.where.topic} is not a cdc.<system>.<entity> topic")
    return decode_change_event(
        routed.value,
        topic_system=names[0],
        topic_entity=names[1],
        headers=routed.header_map(),
        topic=routed.where.topic,
        partition=routed.where.partition,
        offset=routed.where.offset,
        key=routed.original_key,
    )


def _decide_change(
    batch: Batch,
    state: PartitionState,
    owned: Owned,
    routed: Routed,
    change: ChangeEvent,
    *,
    releasing: bool,
    must_decide: bool = False,
    direct: bool = False,
) -> None:
    """Decide one change event (raises ``Held`` when releasing a change that must still wait, and
    ``Deferred`` for a direct one that would be held)."""
    if change.tenant != routed.tenant:
        raise BadInput(
            "schema", f"event {change.event_id!r} of tenant {change.tenant!r} was routed as {routed.tenant!r}"
        )
    record_key = f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}"
    if direct and (owned.held.holds(record_key) or owned.deferred.holds(record_key)):
        raise Deferred(record_key)  # behind its record's held or routed changes
    if not releasing and owned.held.holds(record_key):
        _hold(batch, state, owned, routed, record_key, change)  # behind its record's held changes
        return
    decided = decide_change(state, change, batch.processing.rules, batch.now_ms)
    if decided is None:
        _duplicate(batch, change, record_key)
        return
    decisions, values, remember = decided.decisions, decided.values, decided.remember
    rests_on_absence = any(decision.rests_on_absence for decision in decisions)
    if rests_on_absence and not must_decide and not owned.inputs.passed(routed.timestamp_ms):
        if releasing:
            raise Held()
        if direct:
            raise Deferred(record_key)
        _hold(batch, state, owned, routed, record_key, change)
        return
    messages: list[OutputMessage] = []
    for decision in decisions:
        messages += batch.decision_messages(decision, change.ts_ms)
    batch.stage(messages, remember, state_values=values)
    batch.count("decided")
    for decision in decisions:
        count_decision(batch, change, decision)


@dataclass(frozen=True, slots=True)
class Decided:
    """One change event's decisions, what they will store (``values``: checked for size before staging)
    and how to remember them in the state once they are durable (``remember``)."""

    decisions: list[Decision]
    values: list[Any]
    remember: Callable[[], None]


def decide_change(state: PartitionState, change: ChangeEvent, rules: RuleBook, now_ms: int) -> Decided | None:
    """Decide one change event against ``state`` without changing it: the worker stages the decisions
    and remembers them once the batch is committed; a replay (``streams.replay``) remembers them at once.
    None for a duplicate (an ``event_id`` the record, or every order it counts for, has seen). Raises
    ``BadInput``."""
    if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
        resolve_action(change, rules)
        check_document(change)
        return _decide_documents(state, change, rules, now_ms)
    record_key = f"{change.tenant}:{change.system}:{change.entity}:{change.record_id}"
    if state.is_duplicate(record_key, change.event_id):
        return None
    decision = decide(change, state, rules, now_ms=now_ms)
    values = [record.record for record in decision.crm_records if record.record is not None]
    values += [written.fields for written in decision.written.values()]

    def remember() -> None:
        state.apply_decision(decision)
        state.mark_seen(record_key, change.event_id)

    return Decided([decision], values, remember)


def _decide_documents(state: PartitionState, change: ChangeEvent, rules: RuleBook, now_ms: int) -> Decided | None:
    """An accounting document's decisions, one per order it counts for (a voucher moved to another
    order leaves the first), and how to remember them; None when every order has seen it."""
    decisions: list[Decision] = []
    stored: list[tuple[str, dict[str, Any]]] = []
    for key, document, _part in aggregate_inputs(change):
        value = state.get("orders", key)
        tenant, _, order_id = key.partition(":")
        aggregate = OrderAggregate.from_json(value) if value else OrderAggregate(tenant=tenant, order_id=order_id)
        if change.event_id in aggregate.seen:
            continue
        decisions.append(decide_for_order(document, aggregate, state, rules, now_ms=now_ms))
        stored.append((key, aggregate.to_json()))
    if not decisions:
        return None

    def remember() -> None:
        for decision in decisions:
            state.apply_decision(decision)
        for key, value in stored:
            state.set("orders", key, value)

    return Decided(decisions, [value for _key, value in stored], remember)


def _duplicate(batch: Batch, change: ChangeEvent, record_key: str) -> None:
    log.info(
        "dropped duplicate event %s of %s",
        change.event_id,
        record_key,
        extra=about(tenant=change.tenant, entity=change.entity, record_id=change.record_id),
    )
    batch.count("duplicate")
    count_event(batch, change.system.value, change.entity, "duplicate")


def _hold(
    batch: Batch, state: PartitionState, owned: Owned, routed: Routed, record_key: str, change: ChangeEvent
) -> None:
    held = HeldChange(
        held_key=held_key(routed.tenant, routed.offset),
        record_key=record_key,
        timestamp_ms=routed.timestamp_ms,
        held_at_ms=batch.now_ms,
        value=routed.value,
        headers=[*routed.headers, *_routing_headers(routed)],
        offset=routed.offset,
        event=change,
    )
    owned.held.hold(state, held)
    batch.count("held")


def _routing_headers(routed: Routed) -> list[tuple[str, bytes]]:
    """The routing headers of ``routed`` again, so that a held change is read back as it came."""
    where = routed.where
    headers = [
        (ORIGIN_TOPIC, where.topic.encode()),
        (ORIGIN_PARTITION, str(where.partition).encode()),
        (ORIGIN_OFFSET, str(where.offset).encode()),
        (ORIGIN_TIMESTAMP, str(routed.timestamp_ms).encode()),
    ]
    if routed.original_key is not None:
        headers.append((ORIGIN_KEY, routed.original_key))
    return headers


# --- results -------------------------------------------------------------------------------------


def link_from_result(result: Result) -> LinkUpdate | None:
    """An applied (or already applied) write tells the target's id for the record's business code."""
    if result.status not in ("applied", "duplicate") or not result.target_id:
        return None
    return LinkUpdate(
        tenant=result.tenant,
        family=link_family(result.target, result.entity),
        code=result.code,
        ids={result.target.value: result.target_id},
    )


def forget_unwritten(state: PartitionState, result: Result) -> None:
    """A command the target refused or never got did not write its fields: X-2 must not count them.

    Only when the memory still holds that very command (a later write may have replaced it).
    """
    if result.status not in ("rejected", "failed") or not (result.code or result.target_id):
        return
    # The command's record, named as the command named it: by code, else by id.
    key = command_key_text(
        result.tenant, result.target, result.entity, CommandKey(code=result.code, id=result.target_id)
    )
    remembered = state.get("written", key)
    if remembered and remembered.get("command_id") == result.command_id:
        state.delete("written", key)


def learn_from_result(batch: Batch, state: PartitionState, routed: Routed) -> None:
    try:
        result = Result.model_validate(orjson.loads(routed.value))
    except (orjson.JSONDecodeError, ValidationError, TypeError) as exc:
        batch.dead_letter(routed.original_key, routed.value, "schema", f"not a result: {exc}", routed.where)
        return
    if result.tenant != routed.tenant:
        batch.dead_letter(
            routed.original_key,
            routed.value,
            "schema",
            f"a result of tenant {result.tenant!r} under a key of tenant {routed.tenant!r}",
            routed.where,
        )
        return
    count_event(batch, result.target.value, result.entity, "result")
    batch.count("result")
    link = link_from_result(result)
    if link is not None:
        state.apply_links([link])
    forget_unwritten(state, result)
