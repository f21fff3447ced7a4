"""The pure tier: streams.core with in-memory fakes; no Kafka broker, no faust app."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # so ``tests.fakes`` imports however pytest was started
    sys.path.insert(0, str(REPO))

from streams.core.rules import RuleBook, load_rules  # noqa: E402


@pytest.fixture(scope="session")
def rules() -> RuleBook:
    return load_rules()
