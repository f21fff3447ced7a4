"""Fuzzing the edge: whatever bytes, keys and headers arrive, decoding and deciding raise nothing but
``BadInput`` (a dead letter with its reason), and what is accepted can be decided.

Hypothesis generates raw bytes, JSON documents, change events with any field replaced or missing,
hostile amounts and ids, and Debezium envelopes with any headers. About 10,000 cases a run (the
agent-level fuzz in tests/agents/test_fuzz_agent.py adds the batch loop and the dead-letter topic).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.names import System
from streams.core.aggregates import (
    AGGREGATE_ENTITIES,
    OrderAggregate,
    aggregate_inputs,
    check_document,
    decide_for_order,
)
from streams.core.contract import ENTITY_NAMES, ChangeEvent, decode_change_event, dumps
from streams.core.decide import decide
from streams.core.errors import BadInput
from streams.core.rules import load_rules
from streams.tables.state import in_memory_state
from tests.fakes import TS_MS

RULES = load_rules()
FUZZ = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
hostile_amounts = (
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999", "١٢٣", "abc", "", " 1", "1,5", "0x10", "-0", "1" * 40])
    | json_values
)
hostile_ids = st.sampled_from(["", "a\nb", "x" * 300, "T:evil", "\x00"]) | json_values
systems = st.sampled_from(["crm", "acct", "erp", ""])
entities = st.sampled_from([*sorted(ENTITY_NAMES["crm"] | ENTITY_NAMES["acct"]), "widget", ""])
FIELDS = ("id", "code", "crm_id", "order_id", "customer_code", "amount", "total_amount", "unit_price", "lines",
          "category_codes", "prices", "revenue_status", "status", "codes", "revenue_entries", "name")  # fmt: skip


@st.composite
def records(draw: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": draw(st.one_of(st.text(min_size=1, max_size=8), st.integers(-(2**63), 2**63 - 1), hostile_ids))
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        if name in ("amount", "total_amount", "unit_price"):
            record[name] = draw(hostile_amounts)
        elif name == "lines":
            record[name] = draw(st.lists(st.fixed_dictionaries(
                {"line_id": st.text(max_size=4), "product_code": hostile_ids, "quantity": hostile_amounts,
                 "amount": hostile_amounts}), max_size=3))  # fmt: skip
        else:
            record[name] = draw(json_values)
    return record


@st.composite
def change_events(draw: Any) -> tuple[bytes, str, str, bytes | None, dict[str, bytes] | None]:
    """(raw bytes, topic system, topic entity, message key, headers)."""
    system, entity = draw(systems), draw(entities)
    after = draw(st.none() | records())
    event: dict[str, Any] = {
        "schema_version": draw(st.sampled_from([1, 1, 1, 2, "1", True, None])),
        "event_id": draw(st.text(min_size=1, max_size=10) | hostile_ids),
        "tenant": draw(st.sampled_from(["t1", "t2"]) | hostile_ids),
        "system": draw(st.sampled_from([system, system, "crm", "acct", None])),
        "entity": draw(st.sampled_from([entity, entity, "customer", None])),
        "op": draw(st.sampled_from(["c", "u", "d", "r", "x", None])),
        "action": draw(st.sampled_from([None, None, "update", "pull", "approve", "fly", "propose_revenue"])),
        "origin": draw(st.sampled_from(["user", "user", "sync", "other"])),
        "ts_ms": draw(st.sampled_from([TS_MS, TS_MS, -1, "now", None])),
        "before": draw(st.none() | records()),
        "after": after,
    }
    for name in draw(st.lists(st.sampled_from(sorted(event)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del event[name]
        else:
            event[name] = draw(json_values)
    if draw(st.booleans()):  # as Debezium sends it
        raw = orjson.dumps({"payload": {k: event.get(k) for k in ("op", "before", "after")} | {
            "source": {"ts_ms": TS_MS, "lsn": draw(st.integers(0, 9))}}})  # fmt: skip
        headers = draw(
            st.dictionaries(
                st.sampled_from(["tenant", "event_id", "action", "origin"]),
                st.binary(max_size=12) | st.sampled_from([b"t1", b"t2"]),
                max_size=4,
            )
        )
    else:
        raw = orjson.dumps(event)
        headers = None
    record_id = (after or {}).get("id") if isinstance(after, dict) else None
    key = draw(st.sampled_from([f"{event.get('tenant')}:{record_id}".encode(), None, b"", b"t1:other"])
               | st.binary(max_size=20))  # fmt: skip
    return raw, system, entity, key, headers


def decide_as_the_agents_do(change: ChangeEvent) -> None:
    state = in_memory_state()
    if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
        check_document(change)
        decisions = []
        for key, document, _part in aggregate_inputs(change):
            aggregate = OrderAggregate(change.tenant, key.split(":", 1)[1])
            decisions.append(decide_for_order(document, aggregate, state, RULES, now_ms=0))
            aggregate.to_json()
    else:
        decisions = [decide(change, state, RULES, now_ms=0)]
    for decision in decisions:
        state.apply_decision(decision)
        for command in decision.commands:
            # the agent dead-letters what cannot be written as JSON (unserializable); nothing else may happen
            with contextlib.suppress(orjson.JSONEncodeError, TypeError):
                dumps(command)
        dumps(decision.audit)


def decode(raw: bytes, system: str, entity: str, key: bytes | None, headers: dict | None) -> ChangeEvent:
    return decode_change_event(raw, topic_system=system, topic_entity=entity, topic=f"cdc.{system}.{entity}",
                               partition=0, offset=0, headers=headers, key=key)  # fmt: skip


@FUZZ
@given(raw=st.binary(max_size=300), system=systems, entity=entities, key=st.none() | st.binary(max_size=12))
def test_any_bytes_are_decoded_or_refused_as_bad_input(raw, system, entity, key) -> None:
    try:
        decode(raw, system, entity, key, None)
    except BadInput as bad:
        assert bad.kind and bad.message


@FUZZ
@given(case=change_events())
def test_any_change_event_is_decided_or_refused_as_bad_input(case) -> None:
    try:
        change = decode(*case)
        decide_as_the_agents_do(change)
    except BadInput as bad:
        assert bad.kind and bad.message


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    amounts=st.lists(hostile_amounts, min_size=1, max_size=3),
    order_first=st.booleans(),
)
def test_a_bad_document_never_poisons_its_order(amounts, order_first) -> None:
    """A receipt refused at the edge is never held for its order; a good order and a good receipt
    after it are decided whatever came before."""
    state = in_memory_state()
    order = {"schema_version": 1, "event_id": "o", "tenant": "t1", "system": "acct", "entity": "sale_order",
             "op": "c", "ts_ms": TS_MS, "after": {"id": "AO1", "code": "DH1", "crm_id": "O1",
                                                  "total_amount": "100", "lines": []}}  # fmt: skip
    receipts = [{"schema_version": 1, "event_id": f"r{n}", "tenant": "t1", "system": "acct", "entity": "receipt",
                 "op": "c", "ts_ms": TS_MS, "after": {"id": f"R{n}", "order_id": "AO1", "amount": amount}}
                for n, amount in enumerate([*amounts, "40"])]  # fmt: skip
    events = [order, *receipts] if order_first else ([*receipts[:-1], order, receipts[-1]])
    aggregate = OrderAggregate("t1", "AO1")
    derived = []
    for event in events:
        key = f"t1:{event['after']['id']}".encode()
        try:
            change = decode_change_event(orjson.dumps(event), topic_system="acct", topic_entity=event["entity"],
                                         key=key)  # fmt: skip
            check_document(change)
        except BadInput:
            continue
        decision = decide_for_order(change, aggregate, state, RULES, now_ms=0)
        derived += [command.fields for command in decision.commands if command.rule == "SO-10"]
    assert aggregate.kind == "sale_order", "the good order was not taken"
    assert derived, "the good receipt derived nothing"
    last = derived[-1]
    assert last["remaining_receivable"] == str(100 - int(last["receipted_amount"]))
