"""The rule table against the original sync table it encodes, and ``load_rules`` refusing a broken table.

The original specification is not part of the repository: it lives beside a clone, in
``../shared/spec/``, where it is checked out (CI has it). The comparisons with it are skipped
elsewhere; everything else here needs only the repository.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.names import System
from streams.core.contract import Action, Op
from streams.core.matrix_doc import CROSS_CUTTING_RULES
from streams.core.rule_table import RULE_TABLE
from streams.core.rules import Effect, RuleTableError, load_rules

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared/spec/sync-matrix.md"
needs_spec = pytest.mark.skipif(
    not SPEC.is_file(),
    reason="../shared/spec/sync-matrix.md is not beside this clone: the rule table is compared with the "
    "spec only where the spec is (CI has it)",
)
SPEC_ROW = re.compile(r"^\| ((CUS|CAT|PRD|PP|QUO|SO|CT|INV|X)-\d+) ", re.MULTILINE)


def spec_ids() -> list[str]:
    ids = [m.group(1) for m in SPEC_ROW.finditer(SPEC.read_text(encoding="utf-8"))]
    assert ids, f"no rule rows found in {SPEC}: has its table format changed?"
    return ids


@needs_spec
def test_the_spec_names_each_rule_once() -> None:
    ids = spec_ids()
    twice = sorted({i for i in ids if ids.count(i) > 1})
    assert not twice, f"rule IDs used twice in {SPEC.name}: {', '.join(twice)}"


@needs_spec
def test_docs_matrix_describes_exactly_the_cross_cutting_rules_of_the_spec() -> None:
    in_spec = sorted(i for i in spec_ids() if i.startswith("X-"))
    documented = sorted(name.split()[0] for name, _ in CROSS_CUTTING_RULES)
    assert in_spec, f"{SPEC.name} names no cross-cutting (X-*) rule"
    assert documented == in_spec


@needs_spec
def test_every_matrix_rule_has_a_row_in_the_rule_table_and_no_more() -> None:
    in_spec = {i for i in spec_ids() if not i.startswith("X-")}
    in_table = [row["id"] for row in RULE_TABLE]
    missing = sorted(in_spec - set(in_table))
    extra = sorted(set(in_table) - in_spec)
    assert not missing, f"rules of {SPEC.name} with no row in RULE_TABLE: {', '.join(missing)}"
    assert not extra, f"rules in RULE_TABLE that {SPEC.name} does not define: {', '.join(extra)}"


@needs_spec
def test_the_rule_table_keeps_the_order_of_the_spec() -> None:
    in_spec = [i for i in spec_ids() if not i.startswith("X-")]
    assert [row["id"] for row in RULE_TABLE] == in_spec


def test_the_shipped_table_loads() -> None:
    book = load_rules()
    assert len(book.rules) == len(RULE_TABLE)
    assert book.by_id("SO-1").when is not None


def test_none_rules_write_nothing_and_write_rules_say_where() -> None:
    for rule in load_rules().rules:
        if rule.effect is Effect.NONE:
            assert (rule.target, rule.op, rule.set_fields, rule.only_fields) == (None, None, {}, None), rule.id
        elif rule.effect is not Effect.DERIVED:
            assert rule.target and rule.target_entity and rule.op, rule.id
            assert rule.target is not rule.source or rule.id in ("CUS-10", "PP-2"), rule.id


# --- load_rules refuses a broken table, naming the rule ----------------------------------------


def broken(rule_id: str, change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    table = copy.deepcopy(RULE_TABLE)
    row = next(r for r in table if r["id"] == rule_id)
    change(row)
    return table


def _drop_target(row: dict[str, Any]) -> None:
    row.pop("target")


@pytest.mark.parametrize(
    ("table", "names", "says"),
    [
        pytest.param(broken("CUS-3", lambda r: r.update(entity="widget")), "CUS-3", "widget", id="unknown entity"),
        pytest.param(
            broken("CAT-1", lambda r: r.update(target_entity="warehouse")),
            "CAT-1",
            "warehouse",
            id="unknown target entity",
        ),
        pytest.param(
            broken("CUS-4", lambda r: r.update(actions={Action.DELETE, Action.UPDATE})),
            "CUS-4",
            "CUS-3",
            id="overlapping actions",
        ),
        pytest.param(
            broken("SO-5", lambda r: r.update(order_target=None)), "CT-5", "SO-5", id="overlap across order targets"
        ),
        pytest.param(broken("PRD-1", _drop_target), "PRD-1", "target", id="write rule without target"),
        pytest.param(
            broken("QUO-2", lambda r: r.update(target=System.ACCT, op=Op.UPSERT)),
            "QUO-2",
            "writes nothing",
            id="none rule with a target",
        ),
        pytest.param(
            broken("INV-4", lambda r: r.update(set_fields={Action.REJECT: {"status": "rejected"}})),
            "INV-4",
            "reject",
            id="set_fields for an action not taken",
        ),
        pytest.param(broken("INV-2", lambda r: r.update(actions=set())), "INV-2", "action", id="no action"),
        pytest.param(broken("SO-3", lambda r: r.update(id="SO-1")), "SO-1", "twice", id="duplicate id"),
        pytest.param(broken("CT-3", lambda r: r.update(id="CT3")), "CT3", "id", id="malformed id"),
        pytest.param(broken("CT-4", lambda r: r.update(colour="red")), "CT-4", "colour", id="unknown key"),
    ],
)
def test_load_rules_names_the_faulty_rule(table: list[dict[str, Any]], names: str, says: str) -> None:
    with pytest.raises(RuleTableError) as caught:
        load_rules(table)
    message = str(caught.value)
    assert f"rule {names}:" in message, message
    assert says in message, message


def test_load_rules_does_not_change_the_shipped_table() -> None:
    before = copy.deepcopy(RULE_TABLE)
    with pytest.raises(RuleTableError):
        load_rules(broken("CUS-3", lambda r: r.update(entity="widget")))
    assert before == RULE_TABLE


def _first_dependency_sent_by(rule_id: str) -> Callable[[list[dict[str, Any]]], None]:
    def change(table: list[dict[str, Any]]) -> None:
        # the documents' dependencies are one tuple the rows share: QUO-1, the first of them, is named
        next(r for r in table if r["id"] == "SO-1")["dependencies"][0]["rule"] = rule_id

    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(lambda t: t[5].pop("id"), "rule #6: id: Field required", id="a row without id"),
        pytest.param(
            lambda t: t[5].update(when={"field": "x", "values": [{}]}),
            "rule CUS-6: when.values.0: Input should be a valid string",
            id="where in the row",
        ),
        pytest.param(
            lambda t: next(r for r in t if r["id"] == "CUS-3").update(entity="widget"),
            "rule CUS-3: (rule): Value error, entity 'widget' is not an entity of crm",
            id="the row as a whole",
        ),
        pytest.param(
            lambda t: next(r for r in t if r["id"] == "SO-3").update(id="SO-1"),
            "rule SO-1: defined twice (rows 22 and 24)",
            id="the rows of a twice-defined rule",
        ),
        pytest.param(
            lambda t: next(r for r in t if r["id"] == "SO-4").update(
                actions=set(next(r for r in t if r["id"] == "SO-5")["actions"])
            ),
            "rule SO-5: action(s) ['withdraw_revenue'] on crm sale_order already belong to rule SO-4",
            id="overlap within one order target",
        ),
        pytest.param(
            _first_dependency_sent_by("CUS-99"),
            "rule QUO-1: dependency customer is sent by rule CUS-99, which must write customer to acct",
            id="a dependency sent by no rule",
        ),
        pytest.param(
            _first_dependency_sent_by("CUS-6"),
            "rule QUO-1: dependency customer is sent by rule CUS-6, which must write customer to acct",
            id="a dependency sent to the other system",
        ),
        pytest.param(
            _first_dependency_sent_by("PRD-1"),
            "rule QUO-1: dependency customer is sent by rule PRD-1, which must write customer to acct",
            id="a dependency sent as another entity",
        ),
    ],
)
def test_the_start_up_error_of_a_broken_table_says_exactly_what_is_wrong(
    change: Callable[[list[dict[str, Any]]], None], says: str
) -> None:
    table = copy.deepcopy(RULE_TABLE)
    change(table)
    with pytest.raises(RuleTableError) as caught:
        load_rules(table)
    assert str(caught.value) == says


def test_the_rule_book_says_what_it_holds_and_a_rule_without_a_target_cannot_write() -> None:
    book = load_rules()
    assert repr(book) == f"RuleBook({len(RULE_TABLE)} rules: {RULE_TABLE[0]['id']} … {RULE_TABLE[-1]['id']})"
    with pytest.raises(RuleTableError) as caught:
        book.by_id("CUS-1").write_target()
    assert str(caught.value) == "rule CUS-1: effect none needs target, target_entity and op"
    # an entity no rule takes any action on: only its lifecycle actions mean something
    assert book.actions_for(System.CRM, "no_such_entity") == frozenset()
    assert not book.accepts(System.CRM, "no_such_entity", Action.PULL)
