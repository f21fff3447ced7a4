"""The chaos tier: its numbers are printed at the end of the run whether or not pytest captures output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

REPORTS: list[tuple[str, dict[str, Any]]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the chaos suite (its own broker, kill -9, faults; docs/reliability.md)")


@pytest.fixture(scope="module")
def chaos_report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    def add(report: dict[str, Any]) -> None:
        REPORTS.append((request.node.nodeid, report))

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for nodeid, report in REPORTS:
        terminalreporter.section(f"chaos report: {nodeid}")
        terminalreporter.write_line(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
