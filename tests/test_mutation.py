"""The CI slice of mutation testing (docs/mutation.md): a fixed sample of the pure core's mutants, run
by mutmut against the fast tiers as ``[tool.mutmut]`` configures it, must all be killed, but for the
equivalent mutants docs/mutation.md lists with their reason. So a change that leaves a sampled
mutant alive (a test weakened, a branch no test reaches) fails CI, and so does a list of equivalent
mutants that no longer matches the code.

The whole run (``mutmut run --max-children 2``, docs/mutation.md) takes many minutes; this sample
takes well under two on two cores.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Whole functions (every mutant of each), chosen across the four files: the interpreter (decide.py,
# rules.py), the aggregates and validation. Patterns, not numbers: they still name the same code
# after an edit elsewhere in the file.
SAMPLE = (
    "streams.core.decide.x_resolve_action__mutmut_*",
    "streams.core.decide.x__revert_policy__mutmut_*",
    "streams.core.rules.xǁConditionǁholds__mutmut_*",
    "streams.core.rules.xǁDependencyǁcodes__mutmut_*",
    "streams.core.rules.xǁRuleBookǁaccepts__mutmut_*",
    "streams.core.aggregates.x_money__mutmut_*",
    "streams.core.aggregates.x_order_key_of__mutmut_*",
    "streams.core.validation.x_check_tenant__mutmut_*",
    "streams.core.validation.x__check_amount__mutmut_*",
)
# What the copy needs: the code the tests import, the fast tiers and the configuration.
COPIED = ("pyproject.toml", "streams", "common", "amis", "tests/__init__.py", "tests/conftest.py", "tests/fakes.py")
COPIED_TIERS = ("tests/core", "tests/agents")
MUTANT = re.compile(r"`(streams\.core\.\S+?__mutmut_\d+)`")


def equivalent_mutants() -> set[str]:
    """The mutants docs/mutation.md lists as equivalent (each with its reason)."""
    text = (REPO / "docs" / "mutation.md").read_text()
    return set(MUTANT.findall(text.split("## Equivalent mutants", 1)[1]))


def test_a_sample_of_the_cores_mutants_is_killed_by_the_fast_tiers(tmp_path: Path) -> None:
    pytest.importorskip("mutmut", reason="mutmut is in the dev extra (pip install -e '.[test,dev]')")
    work = tmp_path / "repo"
    for name in COPIED + COPIED_TIERS:
        source, target = REPO / name, work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(source, target)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", "2", *SAMPLE],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    listed = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    status = dict(re.findall(r"^\s*(streams\.core\.\S+): (.+)$", listed, re.MULTILINE))
    sampled = {name: state for name, state in status.items() if any(re.fullmatch(_regex(p), name) for p in SAMPLE)}
    assert len(sampled) >= 150, f"the sample names {len(sampled)} mutants: is the code it names still there?"
    unchecked = sorted(name for name, state in sampled.items() if state == "not checked")
    assert not unchecked, unchecked
    equivalent = equivalent_mutants()
    alive = sorted(name for name, state in sampled.items() if state != "killed" and name not in equivalent)
    assert not alive, (
        f"mutants of the core no test kills ({len(alive)}): add a test that tells them apart, or list them "
        f"in docs/mutation.md with the reason they cannot change behaviour: {alive}"
    )
    stale = sorted(name for name in equivalent if name in sampled and sampled[name] == "killed")
    assert not stale, f"docs/mutation.md lists as equivalent mutants that tests now kill: {stale}"
    print(f"mutmut ran {len(sampled)} sampled mutants in {took:.0f} s")


def _regex(pattern: str) -> str:
    return re.escape(pattern).replace(r"\*", ".*")
