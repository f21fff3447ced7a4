"""Tenant isolation, proven over any tenant strings (hypothesis).

An event of tenant A never produces a command, an audit record or a table entry keyed for another
tenant: everything the processor builds is keyed ``<A>:…``, and a tenant string that could reach
past that prefix (one with ``:``, control characters, anything but the documented tenant id) is
refused at the edge before anything is built from it.
"""

from __future__ import annotations

import itertools

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
from streams.core.contract import decode_change_event
from streams.core.decide import decide
from streams.core.errors import BadInput
from streams.core.rules import load_rules
from streams.core.validation import TENANT_ID
from streams.tables.state import in_memory_state
from tests.fakes import TS_MS

RULES = load_rules()

tenant_ids = st.from_regex(TENANT_ID, fullmatch=True)
any_tenants = st.one_of(tenant_ids, st.text(max_size=70), st.sampled_from(["T:evil", "a:b:c", "x\x00", "T", "T:"]))
# Record ids as the edge accepts them (their own checks are in test_validation.py).
ids = st.one_of(
    st.text(min_size=1, max_size=12).filter(str.isprintable), st.integers(min_value=-(10**6), max_value=10**6)
)


def templates(record_id, other_id) -> list[tuple[str, str, dict]]:
    """(system, entity, event fields) of changes that touch links, memory, aggregates and dependencies."""
    customer = {"id": record_id, "code": f"KH{record_id}", "name": "ABC"}
    order = {
        "id": record_id,
        "code": f"DH{record_id}",
        "customer_code": f"KH{other_id}",
        "total_amount": "100",
        "revenue_status": "proposed",
        "lines": [
            {"line_id": "L1", "product_code": f"SP{other_id}", "quantity": 1, "unit_price": "100", "amount": "100"}
        ],
    }
    return [
        ("acct", "customer", {"op": "c", "after": customer}),
        ("crm", "customer", {"op": "c", "origin": "sync", "after": {**customer, "id": other_id}}),
        ("crm", "customer", {"op": "u", "before": customer, "after": {**customer, "name": "ABC 2"}}),
        ("crm", "product", {"op": "c", "after": {"id": record_id, "code": f"SP{record_id}", "name": "Bút"}}),
        ("crm", "sale_order", {"op": "c", "after": order}),
        ("acct", "sale_order", {"op": "c", "after": {**order, "crm_id": other_id}}),
        ("acct", "receipt", {"op": "c", "after": {"id": other_id, "order_id": record_id, "amount": "40"}}),
        (
            "acct",
            "price_policy",
            {
                "op": "c",
                "after": {"id": record_id, "code": f"CSG{record_id}", "category_codes": ["LH1", "LH2"], "prices": []},
            },
        ),
        ("acct", "customer", {"op": "c", "action": "pull", "after": {"id": record_id, "codes": [f"KH{other_id}"]}}),
    ]


def run(tenant: str, record_id, other_id) -> tuple[list[str], list[str], list[str], int]:
    """Every key the processor built for the changes (commands' message keys, audit keys, table keys),
    and how many changes were refused."""
    state = in_memory_state()
    command_keys, audit_keys, refused = [], [], 0
    for n, (system, entity, fields) in enumerate(templates(record_id, other_id)):
        record = fields.get("after") or fields.get("before")
        event = {"schema_version": 1, "event_id": f"e{n}", "tenant": tenant, "system": system, "entity": entity,
                 "ts_ms": TS_MS, "before": None, **fields}  # fmt: skip
        try:
            change = decode_change_event(orjson.dumps(event), topic_system=system, topic_entity=entity,
                                         key=f"{tenant}:{record['id']}".encode())  # fmt: skip
        except BadInput:
            refused += 1
            continue
        if change.system is System.ACCT and change.entity in AGGREGATE_ENTITIES:
            try:
                check_document(change)  # as the CDC agent does before re-keying
            except BadInput:
                refused += 1
                continue
            decisions = []
            for key, document, _part in aggregate_inputs(change):
                stored = state.get("orders", key)
                aggregate = OrderAggregate.from_json(stored) if stored else OrderAggregate(tenant, key.split(":", 1)[1])
                decisions.append(decide_for_order(document, aggregate, state, RULES, now_ms=0))
                state.set("orders", key, aggregate.to_json())
        else:
            decisions = [decide(change, state, RULES, now_ms=0)]
        for decision in decisions:
            state.apply_decision(decision)
            command_keys += [command.message_key for command in decision.commands]
            audit_keys.append(decision.audit.message_key)
    table_keys = [key for _name, key, _value in state.changes()]
    return command_keys, audit_keys, table_keys, refused


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tenant=any_tenants, other=any_tenants, record_id=ids, other_id=ids)
def test_an_event_of_one_tenant_never_builds_a_key_of_another(tenant, other, record_id, other_id) -> None:
    command_keys, audit_keys, table_keys, refused = run(tenant, record_id, other_id)
    built = command_keys + audit_keys + table_keys
    if not TENANT_ID.fullmatch(tenant):
        assert built == [], f"tenant {tenant!r} is not a tenant id, yet keys were built: {built[:3]}"
        assert refused == len(templates(record_id, other_id))
        return
    assert audit_keys, "a valid tenant's changes were all refused: nothing was tested"
    for key in built:
        assert key.startswith(f"{tenant}:"), (tenant, key)
        if other != tenant:
            assert not key.startswith(f"{other}:"), (tenant, other, key)


@settings(max_examples=200, deadline=None)
@given(tenant=tenant_ids, record_id=ids, other_id=ids)
def test_no_two_tenants_share_a_key(tenant, record_id, other_id) -> None:
    """The same records under two tenants whose names differ only by what follows a prefix."""
    first = set(itertools.chain(*run(tenant, record_id, other_id)[:3]))
    second = set(itertools.chain(*run(tenant + "x", record_id, other_id)[:3]))
    assert first and second and not first & second
