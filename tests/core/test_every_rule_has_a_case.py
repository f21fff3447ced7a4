"""Every rule of the rule table has a test: a row of a case table, a scenario test or a derived-rule test."""

from __future__ import annotations

from streams.core.rules import RuleBook
from tests.core.rule_cases import EXPECT_KEYS, NONE, REQUIRED_KEYS
from tests.core.test_acct_contract_rules import CONTRACT_CASES
from tests.core.test_customer_rules import CUSTOMER_CASES
from tests.core.test_derived_rules import DERIVED_RULES
from tests.core.test_invoice_rules import INVOICE_CASES
from tests.core.test_product_and_price_policy_rules import CATALOGUE_CASES
from tests.core.test_quote_and_sales_order_rules import QUOTE_CASES, SALES_ORDER_CASES

CASE_TABLES = [*CUSTOMER_CASES, *CATALOGUE_CASES, *QUOTE_CASES, *SALES_ORDER_CASES, *CONTRACT_CASES, *INVOICE_CASES]

# The rules tested by scenario tests rather than by a case table: CUS-5, CUS-10 (test_customer_rules.py),
# PP-1, PP-2 (test_product_and_price_policy_rules.py), CT-7 (test_acct_contract_rules.py).
SCENARIO_RULES = {"CUS-5", "CUS-10", "PP-1", "PP-2", "CT-7"}


def test_every_rule_of_the_table_has_a_case(rules: RuleBook) -> None:
    """The case tables, the scenario tests and the derived-rule tests name every rule of RULE_TABLE."""
    named = {p.values[0] for p in CASE_TABLES} | SCENARIO_RULES | set(DERIVED_RULES)
    assert {r.id for r in rules.rules} - named == set()


def test_every_case_names_the_whole_command_or_none() -> None:
    """A case says exactly what comes out: every field of the command, or that there is none; a case
    that checks only some fields let wrong values through (issue 24), and the runner refuses one."""
    loose = [
        p.id
        for p in CASE_TABLES
        if not p.values[4].get(NONE) and not (REQUIRED_KEYS <= set(p.values[4]) <= EXPECT_KEYS)
    ]
    assert loose == []
