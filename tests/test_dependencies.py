"""Dependencies point one way: the contracts in pyproject.toml ([tool.importlinter]) hold.

core <- tables/agents <- app <- cli; connectors and capture use the contract only; sandboxes and
the demo stand apart; no import cycle inside a package. Function-level imports count too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    configure()  # what the lint-imports command does before it reads the contracts
    kept = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_logo=True, cache_dir=None)
    assert kept, capsys.readouterr().out


def test_importing_the_core_loads_no_faust_kafka_or_http_client() -> None:
    """Not only the core's own imports: nothing it pulls in transitively loads them either."""
    code = (
        "import sys, streams.core.contract, streams.core.rules, streams.core.decide, streams.core.aggregates; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'faust', 'mode', 'aiokafka', 'confluent_kafka', 'aiohttp', 'rocksdict'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_connector_client_loads_neither_a_sandbox_nor_the_processor() -> None:
    code = (
        "import sys, amis.credentials, connectors.runner; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'faust', 'sandboxes', 'demo'} "
        "or m.startswith(('streams.agents', 'streams.tables', 'streams.app'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
