"""The pure tier: streams.core with in-memory fakes; no Kafka broker, no faust app."""

from __future__ import annotations

import pytest

from streams.core.rules import RuleBook, load_rules


@pytest.fixture(scope="session")
def rules() -> RuleBook:
    return load_rules()
