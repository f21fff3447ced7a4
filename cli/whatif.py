"""``lienthong whatif TENANT --settings FILE``: what a change of a company's sync settings (or of the rule
table) would have done to its retained history, before it is made.

The tenant's change events and results still on Kafka (``ops.retained``) are replayed, in the order
they reached Kafka, through the core twice from an empty state (``streams.replay``): with the settings
and rules in force and with the proposed ones. Nothing is written to a topic or sent to a system.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.command import Args, add, argument, option
from ops.settings import OpsSettings


def _fail(message: object) -> int:
    print(f"lienthong whatif: {message}", file=sys.stderr)
    return 2


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_rule_changes(path: Path) -> Any:
    """The rule table with the rows of ``path`` (JSON array or TOML ``[[rules]]``): a row whose ``id`` is
    a rule's replaces the fields it names; another id adds a rule."""
    from ops.settings_file import read_settings_file
    from streams.core.rule_table import RULE_TABLE
    from streams.core.rules import load_rules

    if path.suffix.lower() == ".json":
        try:
            rows = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise click.BadParameter(f"{path}: {exc}") from None
    else:
        rows = read_settings_file(path).get("rules")
    if not isinstance(rows, list) or not all(isinstance(row, dict) and row.get("id") for row in rows):
        raise click.BadParameter(f"{path}: expected a list of rules, each with its id (JSON array or TOML [[rules]])")
    table = [dict(row) for row in RULE_TABLE]
    by_id = {row["id"]: row for row in table}
    for row in rows:
        if row["id"] in by_id:
            by_id[row["id"]].update(row)
        else:
            table.append(dict(row))
    return load_rules(table)


def _whatif(args: Args, settings: OpsSettings) -> int:
    from ops.deadletters import parse_moment
    from ops.operations import TenantError, settings_in_force
    from ops.retained import HistoryError, read_history
    from ops.settings_file import load_settings_file
    from streams.core.rules import RuleTableError, load_rules
    from streams.core.sync_settings import SettingsError
    from streams.replay import whatif

    if not args.settings_file and not args.rules:
        return _fail("give the proposed --settings FILE, --rules FILE, or both")
    rules = load_rules()
    try:
        since_ms = parse_moment(args.since) if args.since else None
        until_ms = parse_moment(args.until) if args.until else None
        in_force = settings_in_force(settings.kafka, args.tenant)
        proposed_rules = load_rule_changes(Path(args.rules)) if args.rules else rules
        proposed = (
            load_settings_file(
                Path(args.settings_file),
                args.tenant,
                proposed_rules,
                revision=in_force.revision + 1,
                extensions=settings.connector_extensions,
            )
            if args.settings_file
            else in_force
        )
    except (SettingsError, RuleTableError, click.BadParameter, HistoryError, TenantError, ValueError) as exc:
        return _fail(exc.format_message() if isinstance(exc, click.BadParameter) else exc)

    with _progress(sys.stderr.isatty() and not args.json) as progress:
        reading = progress.add_task("reading the history", total=None)
        try:
            messages, retention = read_history(
                settings.kafka,
                args.tenant,
                since_ms=since_ms,
                until_ms=until_ms,
                timeout=settings.kafka.broker_timeout,
                progress=lambda done, total: progress.update(reading, completed=done, total=total),
            )
        except HistoryError as exc:
            return _fail(exc)
        replaying = progress.add_task("replaying it twice", total=len(messages))
        report, counts = whatif(
            messages,
            rules_in_force=rules,
            settings_in_force=in_force,
            rules_proposed=proposed_rules,
            settings_proposed=proposed,
            default_order_target=settings.default_order_target,
            topic_prefix=settings.kafka.topic_prefix,
            examples_per_rule=args.examples,
            progress=lambda done: progress.update(replaying, completed=done),
        )
    gone = retention.gone(since_ms)
    oldest = retention.oldest_complete_ms()
    document = {
        "tenant": args.tenant,
        "settings": {"in_force": in_force.document(), "proposed": proposed.document()},
        "since_ms": since_ms,
        "until_ms": until_ms,
        "history": {
            "change_events": counts.events,
            "results": counts.results,
            "bad_input": counts.bad_input,
            "whole": not gone,
            "whole_since_ms": oldest,
        },
        **report.to_json(),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    out = Console(file=sys.stdout, soft_wrap=False, width=200 if not sys.stdout.isatty() else None)
    out.print(
        f"tenant {args.tenant}: {counts.events} change event(s) and {counts.results} result(s) replayed"
        + (f" from {_when(since_ms)}" if since_ms else "")
        + (f" until {_when(until_ms)}" if until_ms else "")
        + f", settings revision {in_force.revision} against the proposed {proposed.revision}"
    )
    if gone and oldest is not None:
        out.print(
            f"[bold]note:[/] history before {_when(oldest)} is no longer retained (topic retention, "
            'docs/operations.md "Retention"): changes made before then are not in this preview'
        )
    if report.unchanged:
        out.print("no command would differ")
        return 0
    out.print(
        f"{report.events_differing} change(s) would decide differently; commands: "
        f"{report.commands_in_force} in force, {report.commands_proposed} proposed"
    )
    table = Table(title="per rule")
    for column in ("rule", "added", "removed", "changed"):
        table.add_column(column, justify="left" if column == "rule" else "right")
    for row in document["rules"]:
        table.add_row(row["rule"], str(row["added"]), str(row["removed"]), str(row["changed"]))
    out.print(table)
    examples = Table(title="examples")
    for column in ("rule", "what", "target record", "fields (in force → proposed)", "because of"):
        examples.add_column(column, overflow="fold")
    for example in document["examples"]:
        fields = "; ".join(
            f"{name}: {_shown(change['in_force'])} → {_shown(change['proposed'])}"
            for name, change in example["fields"].items()
        )
        examples.add_row(
            example["rule"],
            f"{example['kind']} {example['op']}",
            f"{example['target']} {example['entity']} {example['key']}",
            fields or "—",
            f"{example['event']}, {_when(example['ts_ms'])} ({example['event_id']})",
        )
    out.print(examples)
    return 0


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 40 else text[:39] + "…"


def _progress(shown: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        disable=not shown,
    )


def add_whatif_command() -> None:
    add(
        "whatif",
        OpsSettings,
        _whatif,
        "what proposed sync settings (or rules) would change, replayed on the tenant's retained history",
        argument("tenant", "the tenant (as in LIENTHONG_CRM_CREDENTIALS)"),
        option(
            "--settings",
            "settings_file",
            metavar="FILE",
            help="the proposed settings, TOML or JSON (docs/sync-settings.md)",
        ),
        option("--rules", metavar="FILE", help="changed rules: JSON array or TOML [[rules]], replacing rows by id"),
        option("--since", help="replay from: 2h, 30m, 7d, 2026-11-28, 2026-11-28T09:30 (default: all retained)"),
        option("--until", help="replay until (same forms; default: now)"),
        option("--examples", type=int, default=3, show_default=True, help="examples shown per rule and kind"),
        option("--json", is_flag=True, help="the report as a JSON document"),
        broker=True,
    )
