"""The pure tier: streams.core with in-memory fakes; no Kafka broker, no faust app."""

from __future__ import annotations

import os

import pytest

from streams.core.rules import RuleBook, load_rules

# The rule tests' shared checks (assert_command, assert_none, check_case) report what differed, as
# an assert in a test module does.
pytest.register_assert_rewrite("tests.core.rule_cases")


# Under mutmut (docs/mutation.md) the rule book is built for each test: mutmut maps a mutant of
# load_rules or RuleBook to the tests that called them, and a session's book is built in one test only.
@pytest.fixture(scope="function" if "MUTANT_UNDER_TEST" in os.environ else "session")
def rules() -> RuleBook:
    return load_rules()
