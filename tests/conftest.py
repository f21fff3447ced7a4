"""Every tier: property-based tests draw the same examples on every run.

A test that fails on one run and passes on the next tells nobody anything, so CI (and a plain
``pytest``) uses the "ci" Hypothesis profile: examples derived from each test's own source, no
example database carried between runs. To explore other examples, give a seed:
``LIENTHONG_FUZZ_SEED=<n>`` (or ``--hypothesis-seed=<n>``); a failure it finds prints the seed and the
falsifying example, which then belongs in the test as an ``@example``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import core, settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)

FUZZ_SEED = os.environ.get("LIENTHONG_FUZZ_SEED")
# Loaded here, on import, before any test module: a test's @settings takes what it does not say from
# the profile loaded when it is defined.
settings.load_profile("explore" if FUZZ_SEED else "ci")


def pytest_configure(config: pytest.Config) -> None:
    seed = FUZZ_SEED or config.getoption("hypothesis_seed", default=None)
    if seed:
        settings.load_profile("explore")
        # what --hypothesis-seed does (hypothesis' pytest plugin): one seed for every test of the run
        core.global_force_seed = int(seed)


def pytest_report_header(config: pytest.Config) -> str:
    seed = FUZZ_SEED or config.getoption("hypothesis_seed", default=None)
    return f"hypothesis: seed {seed} (explore)" if seed else "hypothesis: derandomized (profile ci)"


if "MUTANT_UNDER_TEST" in os.environ:  # under mutmut (docs/mutation.md)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        # mutmut 3 maps tests to the functions they call through ``item._nodeid``, which pytest 9 no
        # longer has (it keeps ``item.nodeid``); give it back to mutmut's collector
        for item in items:
            if not hasattr(item, "_nodeid"):
                item._nodeid = item.nodeid  # type: ignore[attr-defined]
