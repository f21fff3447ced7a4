"""Fuzzing the edge: whatever bytes, keys and headers arrive, decoding and deciding raise nothing but
``BadInput`` (a dead letter with a reason the contract lists), and what is accepted is decided as the
rule table says: every command names a rule of the table for the event's system, entity and action,
goes where that rule writes, for the event's tenant, and deciding the same event again decides the same.

Hypothesis generates raw bytes, JSON documents, change events with any field replaced or missing,
hostile amounts and ids, Debezium envelopes with any headers, and well-formed events of every entity
with the values the rules read. The examples are the same on every run (the "ci" profile of
tests/conftest.py); ``LIENTHONG_FUZZ_SEED=<n>`` explores others. Inputs that once crashed the
processor are kept below as ``@example``s.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from common.names import System
from streams.core.aggregates import (
    AGGREGATE_ENTITIES,
    OrderAggregate,
    aggregate_inputs,
    check_document,
    decide_for_order,
)
from streams.core.contract import ENTITY_NAMES, Action, ChangeEvent, Note, decode_change_event, dumps
from streams.core.decide import Decision, decide
from streams.core.errors import BadInput
from streams.core.rules import Effect, load_rules
from streams.tables.state import PartitionState, in_memory_state
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


def decide_as_the_agents_do(change: ChangeEvent, state: PartitionState | None = None) -> list[Decision]:
    state = in_memory_state() if state is None else state
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
    return decisions


def decode(raw: bytes, system: str, entity: str, key: bytes | None, headers: dict | None) -> ChangeEvent:
    return decode_change_event(raw, topic_system=system, topic_entity=entity, topic=f"cdc.{system}.{entity}",
                               partition=0, offset=0, headers=headers, key=key)  # fmt: skip


# error.kind of a dead letter on dlq.cdc (docs/contract.md, "Dead letters") that the core may give a
# change event; too_large and unserializable are the agents', and internal is a bug, never a verdict.
REFUSAL_KINDS = frozenset(
    {"decode", "schema", "schema_version", "unknown_entity", "unknown_action", "topic_mismatch", "key",
     "unknown_topic", "unknown_system"}
)  # fmt: skip


def assert_refused_as_the_contract_says(bad: BadInput) -> None:
    assert bad.kind in REFUSAL_KINDS, f"dead-letter kind {bad.kind!r} is not one of the contract's: {bad.message}"
    assert bad.message


def assert_decided_as_the_table_says(change: ChangeEvent, decisions: list[Decision]) -> None:
    """What a user checks of an accepted event's decision, whatever the event."""
    assert decisions, "an accepted event was not decided"
    for decision in decisions:
        audit = decision.audit
        assert (audit.tenant, audit.system) == (change.tenant, change.system)
        # a document moved to another order is decided for its old order too, as "<event_id>:moved-from:<order>"
        assert audit.event_id.split(":moved-from:")[0] == change.event_id
        action = Action(audit.action)
        matched = RULES.by_id(audit.rule) if audit.rule is not None else None
        if matched is not None and matched.effect is Effect.DERIVED:
            # any document of an order moves its aggregates (the first rule is then a derived one)
            assert matched.source is change.system and change.entity in AGGREGATE_ENTITIES
        elif matched is not None:
            assert (matched.source, matched.entity) == (change.system, audit.entity), (
                f"{matched.id} is a rule of {matched.source} {matched.entity}, not of {change.system} {audit.entity}"
            )
            assert action in matched.actions, f"{matched.id} does not take {action}"
            assert RULES.match(change.system, audit.entity, action, "sale_order") == matched
        # X-4 (a document's customer and products first) and the derived rules of the order's aggregates
        may_send = {matched.id} if matched is not None else set()
        if matched is not None:
            may_send |= {dependency.rule for dependency in matched.dependencies}
        may_send |= {rule.id for rule in RULES.derived["sale_order"] if rule.source is change.system}
        if "X-4" in audit.rules or audit.has(Note.DEPENDENCY_COMPLETED):
            may_send |= {rule for senders in RULES.dependency_senders.values() for rule in senders}
        assert [c.command_id for c in audit.commands] == [c.command_id for c in decision.commands]
        for command in decision.commands:
            rule = RULES.by_id(command.rule)
            assert command.rule in may_send, f"{command.rule} answered {change.system} {change.entity} {action}"
            assert command.rule in audit.rules or command.rule in may_send - {audit.rule}
            assert command.tenant == change.tenant, "a command for another tenant"
            write = rule.write_target()
            assert (command.target, command.entity) == (write.system, write.entity), (
                f"{command.rule} writes {write.system} {write.entity}, not {command.target} {command.entity}"
            )
            assert command.source.event_id.split(":moved-from:")[0] == change.event_id
            if change.origin == "sync" and rule.effect is not Effect.DERIVED:
                assert command.rule != audit.rule, f"X-1: {command.rule} answered this integration's own write"


def contract_case(
    system: str, entity: str, after: dict[str, Any] | None, before: dict[str, Any] | None = None, **event: Any
) -> tuple[bytes, str, str, bytes | None, None]:
    """A contract event as the fuzz tests take it, with the right key: only its record is hostile."""
    record = after if after is not None else before or {}
    op = "c" if before is None else "u"
    document = {"schema_version": 1, "event_id": "e1", "tenant": "t1", "system": system, "entity": entity,
                "op": op, "ts_ms": TS_MS, "before": before, "after": after, **event}  # fmt: skip
    return orjson.dumps(document), system, entity, f"t1:{record.get('id')}".encode(), None


# Inputs that once crashed the processor (TypeError: unhashable type, 'int' object is not iterable),
# and their kin: a list or an object wherever a rule's condition, the action a change means, or a
# rule's walk over a list reads. Each is refused as schema (test_a_non_scalar_state_is_refused below).
CRASHED = [
    contract_case("crm", "invoice", {"id": "0", "status": []}),
    contract_case("crm", "invoice", {"id": "0", "status": {"a": 1}}),
    contract_case("crm", "invoice", {"id": "0", "status": "draft"}, {"id": "0", "status": ["proposed"]}),
    contract_case("crm", "sale_order", {"id": "0", "revenue_status": []}),
    contract_case("crm", "sale_order", {"id": "0", "revenue_status": {}}, {"id": "0", "revenue_status": "draft"}),
    contract_case("acct", "sale_order", {"id": "0", "revenue_status": [1]}, {"id": "0"}),
    contract_case("acct", "contract", {"id": "0", "status": {}}, {"id": "0"}),
    contract_case("acct", "invoice", {"id": "0", "status": {"a": 1}}, {"id": "0", "status": "proposed"}),
    contract_case(
        "acct",
        "contract",
        {"id": "0", "revenue_entries": [{"id": "a", "status": []}]},
        {"id": "0", "revenue_entries": [{"id": "a", "status": "proposed"}]},
    ),
    contract_case("acct", "contract", {"id": "0", "revenue_entries": [{"id": "a"}]}, {"id": "0", "revenue_entries": 5}),
    contract_case("acct", "contract", {"id": "0", "revenue_entries": [5]}, {"id": "0"}),
    contract_case("acct", "sales_voucher", {"id": "0", "order_id": "1", "einvoice_published": {}}, {"id": "0"}),
    contract_case("acct", "sales_voucher", {"id": "0", "order_id": "1", "invoice_no": ["1"]}, {"id": "0"}),
    contract_case("acct", "sales_voucher", {"id": "0", "order_id": "1", "lines": 5}),
    contract_case("acct", "sales_voucher", {"id": "0", "order_id": "1", "lines": [5]}),
    contract_case("acct", "customer", {"id": "0", "codes": 5}, action="pull"),
    contract_case("acct", "customer", {"id": "0", "codes": [[1]]}, action="pull"),
    contract_case("acct", "customer", {"id": "0", "codes": [{"code": "KH1"}]}, action="pull"),
    contract_case("acct", "price_policy", {"id": "0", "category_codes": 5}),
    contract_case("acct", "price_policy", {"id": "0", "category_codes": [None]}),
    contract_case("acct", "price_policy", {"id": "0", "prices": 5}),
    contract_case("acct", "price_policy", {"id": "0", "prices": ["x"]}),
    contract_case("crm", "sale_order", {"id": "0", "lines": {"product_code": "SP1"}}),
    contract_case("acct", "receipt", {"id": "0", "order_id": [1], "amount": "1"}),
    contract_case("acct", "receipt", {"id": "0", "order_id": {"id": 1}, "amount": "1"}),
]


@FUZZ
@given(raw=st.binary(max_size=300), system=systems, entity=entities, key=st.none() | st.binary(max_size=12))
def test_any_bytes_are_decoded_or_refused_as_bad_input(raw, system, entity, key) -> None:
    try:
        decode(raw, system, entity, key, None)
    except BadInput as bad:
        assert_refused_as_the_contract_says(bad)


def _with_examples(test: Any) -> Any:
    for case in reversed(CRASHED):
        test = example(case=case)(test)
    return test


@FUZZ
@given(case=change_events())
@_with_examples
def test_any_change_event_is_decided_or_refused_as_bad_input(case) -> None:
    try:
        change = decode(*case)
        decisions = decide_as_the_agents_do(change)
    except BadInput as bad:
        assert_refused_as_the_contract_says(bad)
    else:
        assert_decided_as_the_table_says(change, decisions)


@pytest.mark.parametrize("case", CRASHED, ids=lambda case: orjson.loads(case[0])["entity"])
def test_an_input_that_once_crashed_is_refused_as_schema(case) -> None:
    with pytest.raises(BadInput) as refused:
        decide_as_the_agents_do(decode(*case))
    assert refused.value.kind == "schema", refused.value.message


NON_SCALARS = [[], ["proposed"], {}, {"status": "proposed"}]
CONDITIONS = sorted(
    {(rule.source.value, rule.entity, rule.when.field) for rule in RULES.rules
     if rule.when is not None and rule.effect is not Effect.DERIVED}
)  # fmt: skip


def test_the_table_has_conditions_to_check() -> None:
    assert ("crm", "invoice", "status") in CONDITIONS and ("crm", "sale_order", "revenue_status") in CONDITIONS


@pytest.mark.parametrize("value", NON_SCALARS, ids=repr)
@pytest.mark.parametrize(("system", "entity", "field"), CONDITIONS)
@pytest.mark.parametrize("side", ["after", "before"])
def test_a_condition_never_reads_an_object_or_a_list(system, entity, field, side, value) -> None:
    """Every field a rule's condition reads: a list or object there is a schema dead letter naming it."""
    good, bad = {"id": "R1", field: "proposed"}, {"id": "R1", field: value}
    case = contract_case(system, entity, bad, good) if side == "after" else contract_case(system, entity, good, bad)
    with pytest.raises(BadInput) as refused:
        decide_as_the_agents_do(decode(*case))
    assert refused.value.kind == "schema"
    assert f"{side}.{field} = " in refused.value.message


# Well-formed events of every entity, with the values the rules read: most are accepted, and then
# their decisions are checked against the table, not only for not crashing.
STATES = ["draft", "proposed", "recorded", "rejected", "not_recorded", "not_started", "in_progress",
          "fully_delivered", "completed", "cancelled", "approved", "issued", "issue_refused"]  # fmt: skip
codes = st.sampled_from(["KH1", "KH2", "SP1", "SP2", "LH1", "DH1", 7])
money_text = st.sampled_from(["0", "100", "250000", "-12.5", "99999999999999999999.9999999999", 40])


@st.composite
def well_formed_records(draw: Any, record_id: str) -> dict[str, Any]:
    optional = {
        "name": st.text(max_size=8),
        "crm_id": st.sampled_from(["C1", "C2", 3]),
        "customer_code": codes,
        "category_code": codes,
        "order_id": st.sampled_from(["A1", "A2"]),
        "status": st.sampled_from(["proposed", *STATES]) | st.none(),
        "revenue_status": st.sampled_from(["proposed", *STATES]) | st.none(),
        "total_amount": money_text,
        "amount": money_text,
        "unit_price": money_text,
        "invoice_no": st.sampled_from([None, "", "0001"]),
        "einvoice_published": st.booleans(),
        "codes": st.lists(codes, max_size=3),
        "category_codes": st.lists(codes, max_size=3),
        "lines": st.lists(st.fixed_dictionaries({"line_id": st.sampled_from(["1", "2"]), "product_code": codes,
                                                 "quantity": money_text, "amount": money_text}), max_size=3),
        "prices": st.lists(st.fixed_dictionaries({"product_code": codes, "category_code": codes, "price": money_text}),
                           max_size=2),
        "revenue_entries": st.lists(st.fixed_dictionaries({"id": st.sampled_from(["e1", "e2"]), "amount": money_text,
                                                           "status": st.sampled_from(STATES)}), max_size=2),
    }  # fmt: skip
    names = draw(st.lists(st.sampled_from(sorted(optional)), max_size=8, unique=True))
    # a code mostly: a record without one (and not linked yet) cannot be addressed in the other system
    code = draw(st.none() | codes | codes | codes)
    return {"id": record_id} | ({} if code is None else {"code": code}) | {name: draw(optional[name]) for name in names}


@st.composite
def well_formed_events(draw: Any, tenant: str) -> tuple[bytes, str, str, bytes | None, None]:
    system = draw(st.sampled_from(["crm", "acct"]))
    entity = draw(st.sampled_from(sorted(ENTITY_NAMES[system])))
    actions = sorted(action.value for action in RULES.actions_for(System(system), entity))
    op = draw(st.sampled_from(["c", "u", "u", "d", "r"]))
    record_id = draw(st.sampled_from(["R1", "R2", "A1"]))
    before = None if op in ("c", "r") else draw(well_formed_records(record_id))
    after = None if op == "d" else draw(well_formed_records(record_id))
    event = {"schema_version": 1, "event_id": f"e{draw(st.integers(0, 10**6))}", "tenant": tenant, "system": system,
             "entity": entity, "op": op, "origin": draw(st.sampled_from(["user", "user", "sync"])), "ts_ms": TS_MS,
             "before": before, "after": after}  # fmt: skip
    action = draw(st.sampled_from([None, None, None, *actions]))
    if action is not None:
        event["action"] = action
    return orjson.dumps(event), system, entity, f"{tenant}:{record_id}".encode(), None


@settings(FUZZ, max_examples=1000)  # runs of up to 4 events, each run twice
@given(cases=st.lists(well_formed_events("t1") | well_formed_events("t2"), min_size=1, max_size=4))
def test_what_is_accepted_is_decided_as_the_table_says_and_the_same_twice(cases) -> None:
    """A run of events through one partition's state: each accepted one is decided as the table says,
    each refused one is a dead letter of the contract's kinds; the same run again decides the same."""

    def run() -> list[bytes]:
        state, outputs = in_memory_state(), []
        for case in cases:
            try:
                change = decode(*case)
                decisions = decide_as_the_agents_do(change, state)
            except BadInput as bad:
                assert_refused_as_the_contract_says(bad)
                outputs.append(f"{bad.kind}: {bad.message}".encode())
                continue
            assert_decided_as_the_table_says(change, decisions)
            for decision in decisions:
                outputs += [dumps(command) for command in decision.commands]
                outputs.append(dumps(decision.audit))
        return outputs

    assert run() == run(), "the same events decided differently"


@FUZZ
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
