"""The product category, product and price policy rules (CAT-*, PRD-*, PP-*) through ``decide``:
the case table, and a price policy split into one read-only CRM copy per category (PP-1) whose CRM
edits are answered by the accounting version (PP-2).
"""

from __future__ import annotations

from typing import Any

import pytest

from common.names import System
from streams.core.contract import AuditNote, CommandKey, Note, Op
from streams.core.rules import RuleBook
from tests.core.rule_cases import (
    ACCT_CATEGORY,
    ACCT_PRODUCT,
    CASE_PARAMS,
    CATEGORY,
    POLICY,
    PRODUCT,
    assert_none,
    check_case,
    copied,
    ev_kwargs,
    none,
    only_command,
    run,
)
from tests.fakes import FakeState, event

# --- the case table --------------------------------------------------------------------------


CATALOGUE_CASES = [
    # Category and product
    pytest.param(
        "CAT-1",
        ev_kwargs("crm", "product_category", after={**CATEGORY, "code": "LH2", "id": "cat-2"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH2"},
            "fields": {"code": "LH2", "name": "Đồ uống", "parent_code": None},
        },
        id="CAT-1",
    ),
    pytest.param(
        "CAT-1",
        ev_kwargs("crm", "product_category", "u", before=CATEGORY, after={**CATEGORY, "name": "Nước giải khát"}),
        (("product_category", "LH1", "cat-1", "acat-1"),),
        "sale_order",
        {
            "target": "acct",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": "acat-1", "code": "LH1"},
            "fields": {"code": "LH1", "name": "Nước giải khát", "parent_code": None},
        },
        id="CAT-1/update",
    ),
    pytest.param(
        "CAT-2",
        ev_kwargs("acct", "product_category", after=ACCT_CATEGORY),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH1"},
            "fields": {"code": "LH1", "name": "Đồ uống", "parent_code": None},
        },
        id="CAT-2",
    ),
    pytest.param(
        "CAT-2",
        ev_kwargs("acct", "product_category", "u", before=ACCT_CATEGORY, after={**ACCT_CATEGORY, "name": "Nước"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product_category",
            "op": "upsert",
            "key": {"id": None, "code": "LH1"},
            "fields": {"code": "LH1", "name": "Nước", "parent_code": None},
        },
        id="CAT-2/update",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", after={**PRODUCT, "id": "p-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "fields": copied(PRODUCT, code="SP2"),
        },
        id="PRD-1",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", action="import", after={**PRODUCT, "id": "p-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "fields": copied(PRODUCT, code="SP2"),
        },
        id="PRD-1/import",
    ),
    pytest.param(
        "PRD-1",
        ev_kwargs("crm", "product", "u", before=PRODUCT, after={**PRODUCT, "unit_price": "110000"}),
        (),
        "sale_order",
        {
            "target": "acct",
            "entity": "product",
            "op": "upsert",
            "key": {"id": "ap-1", "code": "SP1"},
            "fields": copied(PRODUCT, unit_price="110000"),
        },
        id="PRD-1/update",
    ),
    pytest.param("PRD-2", ev_kwargs("crm", "product", "d", before=PRODUCT), (), "sale_order", none(), id="PRD-2"),
    pytest.param(
        "PRD-2",
        ev_kwargs("crm", "product", "u", action="merge", before=PRODUCT, after=PRODUCT, merged_ids=["p-9"]),
        (),
        "sale_order",
        none(),
        id="PRD-2/merge",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", after={**ACCT_PRODUCT, "id": "ap-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "fields": copied(ACCT_PRODUCT, code="SP2"),
        },
        id="PRD-3",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", action="import", after={**ACCT_PRODUCT, "id": "ap-2", "code": "SP2"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product",
            "op": "upsert",
            "key": {"id": None, "code": "SP2"},
            "fields": copied(ACCT_PRODUCT, code="SP2"),
        },
        id="PRD-3/import",
    ),
    pytest.param(
        "PRD-3",
        ev_kwargs("acct", "product", "u", before=ACCT_PRODUCT, after={**ACCT_PRODUCT, "unit": "thùng"}),
        (),
        "sale_order",
        {
            "target": "crm",
            "entity": "product",
            "op": "upsert",
            "key": {"id": "p-1", "code": "SP1"},
            "fields": copied(ACCT_PRODUCT, unit="thùng"),
        },
        id="PRD-3/update",
    ),
    pytest.param("PRD-4", ev_kwargs("acct", "product", "d", before=ACCT_PRODUCT), (), "sale_order", none(), id="PRD-4"),
    pytest.param(
        "PRD-4",
        ev_kwargs("acct", "product", "u", action="merge", before=ACCT_PRODUCT, after=ACCT_PRODUCT),
        (),
        "sale_order",
        none(),
        id="PRD-4/merge",
    ),
]


@pytest.mark.parametrize(CASE_PARAMS, CATALOGUE_CASES)
def test_catalogue_rule(
    rule_id: str, kwargs: dict[str, Any], links: tuple, order_target: str, expect: dict[str, Any], rules: RuleBook
) -> None:
    check_case(rule_id, kwargs, links, order_target, expect, rules)


# --- PP-1 / PP-2 price policies ----------------------------------------------------------------


def test_pp1_splits_a_policy_into_one_read_only_crm_copy_per_category(rules: RuleBook) -> None:
    rule = "PP-1"
    policy = {
        **POLICY,
        "category_codes": ["LH1", "LH2", "LH3"],
        "prices": POLICY["prices"] + [{"product_code": "SP3", "category_code": "LH3", "price": "1"}],
    }
    decision = run(event("acct", "price_policy", after=policy), FakeState(), rules)
    assert [c.key for c in decision.commands] == [CommandKey(code=f"CSG1/{c}") for c in ("LH1", "LH2", "LH3")]
    for command, category in zip(decision.commands, ("LH1", "LH2", "LH3"), strict=True):
        assert command.rule == rule
        assert (command.target, command.entity, command.op) == (System.CRM, "price_policy", Op.UPSERT)
        assert command.read_only is True
        assert command.fields == policy_copy(category, [p for p in policy["prices"] if p["category_code"] == category])
        assert command.fields["prices"], "each copy carries its category's prices"
    assert (decision.audit.rule, decision.audit.rules) == (rule, [rule])


def policy_copy(category: str, prices: list[dict[str, str]]) -> dict[str, object]:
    """The CRM copy of policy CSG1 for one category (PP-1): the policy's own fields, renamed for the
    category, with that category's prices only; neither its acct id nor its list of categories."""
    return {
        "code": f"CSG1/{category}",
        "name": f"Giá đại lý / {category}",
        "valid_from": "2025-01-01",
        "valid_to": None,
        "category_code": category,
        "source_policy_code": "CSG1",
        "prices": prices,
    }


def test_pp1_update_rewrites_the_same_copies_and_deletes_a_dropped_category(rules: RuleBook) -> None:
    state = FakeState()
    first = run(event("acct", "price_policy", after=POLICY), state, rules)
    state.apply(first)
    changed = {
        **POLICY,
        "category_codes": ["LH1"],
        "prices": [{"product_code": "SP1", "category_code": "LH1", "price": "85000"}],
    }
    decision = run(event("acct", "price_policy", "u", before=POLICY, after=changed), state, rules)
    upsert, delete = decision.commands
    assert (upsert.rule, upsert.op, upsert.key) == ("PP-1", Op.UPSERT, CommandKey(code="CSG1/LH1"))
    assert upsert.message_key == first.commands[0].message_key
    assert upsert.fields == policy_copy("LH1", [{"product_code": "SP1", "category_code": "LH1", "price": "85000"}])
    assert (delete.rule, delete.op, delete.key, delete.fields) == ("PP-1", Op.DELETE, CommandKey(code="CSG1/LH2"), {})
    assert delete.read_only is True
    assert (decision.audit.rule, decision.audit.rules) == ("PP-1", ["PP-1"])


def test_pp2_a_crm_edit_of_a_copy_is_answered_by_the_acct_version(rules: RuleBook) -> None:
    rule = "PP-2"
    state = FakeState()
    split = run(event("acct", "price_policy", after=POLICY), state, rules)
    state.apply(split)
    acct_version = split.commands[0].fields
    copy = {**acct_version, "id": "crm-pp-1"}
    # the connector's writes come back as CRM changes with origin sync: nothing is sent back
    echo = run(event("crm", "price_policy", after=copy, origin="sync"), state, rules)
    assert echo.commands == []
    state.apply(echo)
    echo = run(event("crm", "price_policy", "u", before=copy, after=copy, origin="sync"), state, rules)
    assert echo.commands == [] and echo.audit.rules == [rule, "X-1"]
    edited = {**copy, "prices": [{"product_code": "SP1", "category_code": "LH1", "price": "1"}]}
    decision = run(event("crm", "price_policy", "u", before=copy, after=edited), state, rules)
    command = only_command(decision)
    assert command.rule == rule
    assert (command.target, command.entity, command.op) == (System.CRM, "price_policy", Op.UPSERT)
    assert command.read_only is True
    assert command.fields == acct_version  # what acct says, not the CRM edit
    assert command.key.code == "CSG1/LH1"
    assert command.message_key == split.commands[0].message_key  # same record, same key
    assert (decision.audit.rule, decision.audit.rules) == (rule, [rule])
    assert "conflict" in decision.audit.reason


def test_pp2_a_crm_policy_that_is_not_a_copy_is_none(rules: RuleBook) -> None:
    own = {"id": "crm-pp-9", "code": "CSG-CRM", "name": "Giá riêng"}
    decision = run(
        event("crm", "price_policy", "u", before=own, after={**own, "name": "Giá riêng 2"}), FakeState(), rules
    )
    assert_none(decision, "PP-2", because="not a copy")


def test_pp1_drops_copies_of_categories_it_no_longer_selects_even_without_before(rules: RuleBook) -> None:
    """A snapshot or an update without ``before``: the processor remembers the categories it split."""
    rule = "PP-1"
    state = FakeState()
    state.apply(run(event("acct", "price_policy", after=POLICY), state, rules))
    narrowed = {**POLICY, "category_codes": ["LH2"], "prices": POLICY["prices"][1:]}
    decision = run(event("acct", "price_policy", "r", after=narrowed), state, rules)
    # LH2's copy is unchanged; LH1's copy is deleted
    assert [(c.rule, c.op, c.key.code, c.fields) for c in decision.commands] == [(rule, Op.DELETE, "CSG1/LH1", {})]
    assert (decision.audit.rule, decision.audit.rules) == (rule, [rule, "X-2"])


def test_pp1_a_policy_without_a_code_or_name_is_named_by_its_id(rules: RuleBook) -> None:
    policy = {k: v for k, v in POLICY.items() if k not in ("code", "name")}
    decision = run(event("acct", "price_policy", after=policy), FakeState(), rules)
    assert [(c.key, c.fields["name"], c.fields["source_policy_code"]) for c in decision.commands] == [
        (CommandKey(code="pp-1/LH1"), "pp-1 / LH1", "pp-1"),
        (CommandKey(code="pp-1/LH2"), "pp-1 / LH2", "pp-1"),
    ]


def test_pp1_a_policy_that_selects_no_category_and_dropped_none_is_none(rules: RuleBook) -> None:
    decision = run(event("acct", "price_policy", after={**POLICY, "category_codes": []}), FakeState(), rules)
    assert_none(decision, "PP-1")
    assert decision.audit.notes == [
        AuditNote(tag=Note.NO_CATEGORY, rule="PP-1", text="PP-1: the policy selects no category and dropped none: none")
    ]


def test_pp1_deletes_the_copies_before_names_even_on_a_worker_that_never_split_the_policy(rules: RuleBook) -> None:
    """The categories ``before`` lists count as split (the memory of another worker, or lost), and so do
    those remembered: a category either names and the update drops is deleted."""
    narrowed = {**POLICY, "category_codes": ["LH1"], "prices": POLICY["prices"][:1]}
    decision = run(event("acct", "price_policy", "u", before=POLICY, after=narrowed), FakeState(), rules)
    assert [(c.op, c.key.code) for c in decision.commands] == [(Op.UPSERT, "CSG1/LH1"), (Op.DELETE, "CSG1/LH2")]
    state = FakeState()
    state.apply(run(event("acct", "price_policy", after=POLICY), state, rules))  # remembers LH1, LH2
    wider_before = {**POLICY, "category_codes": ["LH1", "LH2", "LH3"]}  # LH3 split by an update not seen here
    decision = run(event("acct", "price_policy", "u", before=wider_before, after=narrowed), state, rules)
    assert [(c.op, c.key.code) for c in decision.commands] == [(Op.DELETE, "CSG1/LH2"), (Op.DELETE, "CSG1/LH3")]


def test_pp1_what_one_policy_split_is_not_dropped_by_another(rules: RuleBook) -> None:
    state = FakeState()
    state.apply(run(event("acct", "price_policy", after=POLICY), state, rules))
    other = {**POLICY, "id": "pp-2", "code": "CSG2", "category_codes": ["LH3"], "prices": []}
    decision = run(event("acct", "price_policy", "r", after=other), state, rules)
    assert [(c.op, c.key.code) for c in decision.commands] == [(Op.UPSERT, "CSG2/LH3")]


def test_pp2_notes_say_why_and_the_acct_version_goes_to_the_edited_crm_record(rules: RuleBook) -> None:
    state = FakeState()
    split = run(event("acct", "price_policy", after=POLICY), state, rules)
    state.apply(split)
    copy = {**split.commands[0].fields, "id": "crm-pp-1"}
    edited = {**copy, "name": "sửa tay"}
    decision = run(event("crm", "price_policy", "u", before=copy, after=edited), state, rules)
    command = only_command(decision)
    assert command.key == CommandKey(id="crm-pp-1", code="CSG1/LH1")
    assert decision.audit.notes == [
        AuditNote(
            tag=Note.POLICY_CONFLICT,
            rule="PP-2",
            text="PP-2 conflict: CRM edited read-only copy CSG1/LH1; the acct version is re-sent",
        )
    ]
    # edited again the same way: answered again (the conflict is not "nothing new", X-2), and the
    # copy is still remembered as what acct says
    state.apply(decision)
    again = run(event("crm", "price_policy", "u", before=copy, after=edited), state, rules)
    assert only_command(again).fields == split.commands[0].fields
    state.apply(again)
    thrice = run(event("crm", "price_policy", "u", before=copy, after=edited), state, rules)
    assert only_command(thrice).fields == split.commands[0].fields


def test_pp2_a_crm_policy_without_code_that_is_not_a_copy_is_named_by_its_id(rules: RuleBook) -> None:
    own = {"id": "crm-pp-9", "name": "Giá riêng"}
    decision = run(event("crm", "price_policy", "u", before=own, after={**own, "name": "2"}), FakeState(), rules)
    assert_none(decision, "PP-2")
    assert decision.audit.notes == [
        AuditNote(
            tag=Note.NOT_A_COPY, rule="PP-2", text="PP-2: CRM price policy crm-pp-9 is not a copy from acct: none"
        )
    ]
