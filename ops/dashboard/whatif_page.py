"""A saved ``lienthong whatif --json`` report on the operator's page: ``lienthong dashboard --whatif FILE``.

The report (cli/whatif.py) is read once when the page starts; ``/whatif/{n}`` renders the n-th one (from 1)
for a company's administrator: what was replayed and whether the history was whole, what would differ per
rule, and the examples with the fields that would change. Plain HTML, no script (the page's CSP).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

REPORT_KEYS = ("tenant", "settings", "history", "rules", "examples")


class ReportError(ValueError):
    """A file that is not a saved ``whatif --json`` report; the message says which and what to do."""


@dataclass(frozen=True)
class SavedReport:
    """One saved report: the file it came from and its document."""

    path: str
    document: dict[str, Any]

    @property
    def tenant(self) -> str:
        return str(self.document.get("tenant", ""))

    @property
    def revisions(self) -> tuple[int, int]:
        settings = self.document.get("settings") or {}
        return (
            int((settings.get("in_force") or {}).get("revision", 0)),
            int((settings.get("proposed") or {}).get("revision", 0)),
        )


def load_report(path: Path) -> SavedReport:
    """Read one saved report; ``ReportError`` (one line) for a file that cannot be read or is not one."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ReportError(f"--whatif {path}: cannot be read ({exc.strerror or exc})") from None
    except orjson.JSONDecodeError:
        raise ReportError(f"--whatif {path}: is not JSON; save the report with `lienthong whatif … --json`") from None
    if not isinstance(document, dict) or any(key not in document for key in REPORT_KEYS):
        raise ReportError(
            f"--whatif {path}: is not a whatif report (it needs {', '.join(REPORT_KEYS)}); "
            "save one with `lienthong whatif TENANT --settings FILE --json > FILE`"
        )
    return SavedReport(str(path), document)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(value: Any) -> str:
    if value is None:
        return "—"
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def report_link(n: int) -> str:
    return f"/whatif/{n}"


def list_html(reports: list[SavedReport]) -> str:
    """The page's section listing the saved reports (empty when none was given)."""
    if not reports:
        return ""
    items = "".join(
        f'<li data-testid="whatif-link"><a href="{report_link(n)}">{_e(r.tenant)}: settings revision '
        f"{r.revisions[0]} against the proposed {r.revisions[1]}</a> "
        f'<span class="muted">({_e(r.path)})</span></li>'
        for n, r in enumerate(reports, start=1)
    )
    return f'<h2 id="whatif">Saved whatif reports</h2><ul data-testid="whatif-reports">{items}</ul>'


def _settings_html(settings: dict[str, Any]) -> str:
    """What the proposed settings say, in words (docs/sync-settings.md)."""
    lines = []
    if settings.get("order_target"):
        lines.append(f"a CRM order becomes a {_e(settings['order_target'])} in accounting")
    if settings.get("rules_off"):
        lines.append("rules off: " + ", ".join(_e(rule) for rule in settings["rules_off"]))
    for mapping in settings.get("field_mappings") or []:
        source = (
            f"the fixed value {_e(mapping['value'])}"
            if "value" in mapping
            else f"{_e(mapping.get('system'))} {_e(mapping.get('entity'))}'s {_e(mapping.get('source_field'))}"
        )
        lines.append(f"{source} written to {_e(mapping.get('target_field'))} ({_e(mapping.get('type', 'text'))})")
    items = "".join(f'<li data-testid="whatif-setting">{line}</li>' for line in lines)
    return f"<ul>{items}</ul>" if items else '<p class="muted">the default settings</p>'


def render_report(report: SavedReport, n: int, style: str) -> str:
    """``/whatif/{n}``: one saved report as a page."""
    doc = report.document
    history = doc.get("history") or {}
    in_force, proposed = report.revisions
    commands = doc.get("commands") or {}
    window = "".join(
        (
            f" from {_when(doc.get('since_ms'))}" if doc.get("since_ms") else "",
            f" until {_when(doc.get('until_ms'))}" if doc.get("until_ms") else "",
        )
    )
    if history.get("whole", True):
        whole = '<p data-testid="whatif-whole">The history replayed is whole: nothing of the period was lost.</p>'
    else:
        whole = (
            '<p class="err" data-testid="whatif-whole">History before '
            f"{_e(_when(history.get('whole_since_ms')))} is no longer retained (topic retention): changes made "
            "before then are not in this preview.</p>"
        )
    rule_rows = [
        f'<tr data-testid="whatif-rule" data-rule="{_e(row["rule"])}"><td>{_e(row["rule"])}</td>'
        + "".join(f'<td class="n">{_e(row[kind])}</td>' for kind in ("added", "removed", "changed"))
        + "</tr>"
        for row in doc.get("rules") or []
    ]
    example_rows = []
    for example in doc.get("examples") or []:
        fields = "".join(
            f"<li><b>{_e(name)}</b>: {_e(_value(change.get('in_force')))} → {_e(_value(change.get('proposed')))}</li>"
            for name, change in (example.get("fields") or {}).items()
        )
        example_rows.append(
            f'<tr data-testid="whatif-example" data-rule="{_e(example["rule"])}" data-kind="{_e(example["kind"])}">'
            f"<td>{_e(example['rule'])}</td><td>{_e(example['kind'])} {_e(example['op'])}</td>"
            f"<td>{_e(example['target'])} {_e(example['entity'])} {_e(example['key'])}</td>"
            f"<td><ul>{fields}</ul></td>"
            f"<td>{_e(example['event'])}, {_e(_when(example.get('ts_ms')))} ({_e(example['event_id'])})</td></tr>"
        )
    empty = "no command would differ"
    header = "".join(f"<th>{h}</th>" for h in ("rule", "added", "removed", "changed"))
    table = (
        f'<table data-testid="whatif-rules"><tr>{header}</tr>'
        + ("".join(rule_rows) or f'<tr><td colspan="4" class="muted">{empty}</td></tr>')
        + "</table>"
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("rule", "what", "target record", "fields (in force → proposed)", "because of (the change replayed)")
    )
    examples = (
        f'<table class="wide" data-testid="whatif-examples"><tr>{head}</tr>'
        + ("".join(example_rows) or f'<tr><td colspan="5" class="muted">{empty}</td></tr>')
        + "</table>"
    )
    title = f"what the proposed settings of {report.tenant} would change"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{style}</style>'
        f"</head><body><p><a href='/'>← operations</a></p>"
        f'<h1 data-testid="whatif-title">{_e(title)}</h1>'
        f'<p class="muted">saved report {n}: <code>{_e(report.path)}</code></p>'
        f'<p data-testid="whatif-header">tenant <b>{_e(report.tenant)}</b>: '
        f"{_e(history.get('change_events', 0))} change event(s) and {_e(history.get('results', 0))} result(s) "
        f"replayed{_e(window)}, settings revision <b>{in_force}</b> (in force) against the proposed "
        f"<b>{proposed}</b>.</p>"
        + whole
        + "<h2>The proposed settings</h2>"
        + _settings_html((doc.get("settings") or {}).get("proposed") or {})
        + "<h2>What would differ, per rule</h2>"
        + f'<p data-testid="whatif-summary">{_e(doc.get("events_differing", 0))} change(s) would decide '
        f"differently; commands: {_e(commands.get('in_force', 0))} in force, {_e(commands.get('proposed', 0))} "
        "proposed. <b>added</b>: a write that would now be made; <b>removed</b>: one that would no longer be "
        "made; <b>changed</b>: the same write with other values.</p>"
        + table
        + "<h2>Examples</h2>"
        + '<p class="note">A few per rule and kind (<code>lienthong whatif --examples N</code> for more): the '
        "record the write goes to, each field that would differ (— : not written), and the change that caused "
        "it.</p>"
        + examples
        + '<p class="muted">Nothing was written by this preview. <code>lienthong tenant set TENANT --file FILE'
        "</code> makes the settings the ones in force (docs/sync-settings.md).</p>"
        "</body></html>"
    )
