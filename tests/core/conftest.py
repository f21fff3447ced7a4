"""The pure tier: streams.core with in-memory fakes; no Kafka broker, no faust app."""

from __future__ import annotations

import pytest

from streams.core.rules import RuleBook, load_rules

# The rule tests' shared checks (assert_command, assert_none, check_case) report what differed, as
# an assert in a test module does.
pytest.register_assert_rewrite("tests.core.rule_cases")


@pytest.fixture(scope="session")
def rules() -> RuleBook:
    return load_rules()
