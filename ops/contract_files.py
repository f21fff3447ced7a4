"""``docs/contract/``: the AsyncAPI document and the JSON Schemas of the wire contract, written from the code.

``lienthong contract generate`` writes them (``streams.contract_schemas`` builds them) and renders the
AsyncAPI HTML page with the AsyncAPI CLI's HTML template; ``lienthong contract check`` says which files
are stale; ``lienthong contract validate`` runs ``asyncapi validate`` on the document. The Node tools are
installed by ``deploy/tools.sh`` into ``.tools/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streams.contract_schemas import SCHEMA_DIR, asyncapi_document, schemas

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_DIR = ROOT / "docs" / "contract"
ASYNCAPI_FILE = "asyncapi.yaml"
HTML_DIR = "html"  # under CONTRACT_DIR; not committed (a 4 MB page, the template's own build)
TOOLS = ROOT / ".tools"
ASYNCAPI_CLI = TOOLS / "asyncapi-cli" / "node_modules" / ".bin" / "asyncapi"
HTML_TEMPLATE = TOOLS / "asyncapi-html" / "node_modules" / "@asyncapi" / "html-template"
ANALYTICS_CONFIG = TOOLS / "asyncapi-analytics.json"

HEADER = (
    "# The wire contract of lienthong as AsyncAPI 3: generated from the code by `lienthong contract generate`\n"
    "# (streams/contract_schemas.py); do not edit. docs/contract.md says what each field means.\n"
)


class ToolMissing(RuntimeError):
    """The AsyncAPI CLI or its HTML template is not installed (``deploy/tools.sh``)."""


def rendered() -> dict[str, str]:
    """Every file of ``docs/contract/`` (but the HTML page) by its path there, as text."""
    import yaml  # type: ignore[import-untyped]  # PyYAML (no types): a developer's tool, not the services'

    files = {
        ASYNCAPI_FILE: HEADER
        + yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    }
    for name, schema in schemas().items():
        files[f"{SCHEMA_DIR}/{name}"] = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
    return files


def stale(directory: Path = CONTRACT_DIR) -> list[str]:
    """The files of ``directory`` that differ from what the code makes now (missing ones too), and schema
    files the code no longer makes."""
    files = rendered()
    out = [name for name, text in files.items() if _read(directory / name) != text]
    schema_dir = directory / SCHEMA_DIR
    if schema_dir.is_dir():
        made = (path.relative_to(directory).as_posix() for path in sorted(schema_dir.rglob("*.json")))
        out += [name for name in made if name not in files]
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write(directory: Path = CONTRACT_DIR) -> list[str]:
    """Write every file that changed, remove schema files no longer made; the paths written or removed."""
    files = rendered()
    changed = stale(directory)
    for name in changed:
        path = directory / name
        if name in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


@dataclass
class Outcome:
    ok: bool
    output: str


def _environment() -> dict[str, str]:
    """The CLI's environment: its metrics kept off, by a config of the project's (``deploy/tools.sh``)."""
    if not ANALYTICS_CONFIG.exists():
        ANALYTICS_CONFIG.parent.mkdir(parents=True, exist_ok=True)
        ANALYTICS_CONFIG.write_text(
            '{"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "lienthong"}\n', encoding="utf-8"
        )
    return {**os.environ, "ASYNCAPI_METRICS_CONFIG_PATH": str(ANALYTICS_CONFIG), "CI": "true"}


def _cli() -> str:
    if shutil.which("node") is None:
        raise ToolMissing("node is not installed (Debian: apt-get install nodejs npm), then run: bash deploy/tools.sh")
    if not ASYNCAPI_CLI.exists():
        raise ToolMissing(f"the AsyncAPI CLI is not installed ({ASYNCAPI_CLI}): run bash deploy/tools.sh")
    return str(ASYNCAPI_CLI)


def validate(directory: Path = CONTRACT_DIR, timeout: float = 300) -> Outcome:
    """``asyncapi validate`` on the document (its references to the schemas resolved from ``directory``)."""
    done = subprocess.run(
        [_cli(), "validate", ASYNCAPI_FILE, "--fail-severity", "warn"],
        cwd=directory,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode == 0, (done.stdout + done.stderr).strip())


def render_html(directory: Path = CONTRACT_DIR, timeout: float = 600) -> Path:
    """The AsyncAPI HTML template's page of the document, one self-contained file: ``html/index.html``."""
    cli = _cli()
    if not HTML_TEMPLATE.exists():
        raise ToolMissing(f"the AsyncAPI HTML template is not installed ({HTML_TEMPLATE}): run bash deploy/tools.sh")
    out = directory / HTML_DIR
    done = subprocess.run(
        [
            *(cli, "generate", "fromTemplate", ASYNCAPI_FILE, str(HTML_TEMPLATE)),
            *("--output", str(out), "--use-new-generator", "--no-interactive", "--force-write"),
            *("--param", "singleFile=true"),
        ],
        cwd=directory,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    page = out / "index.html"
    if done.returncode != 0 or not page.exists():
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the AsyncAPI HTML template failed: {last[0]}")
    return page
