"""The operator's subcommands of ``lienthong``: ``reconcile``, ``lag``, ``dlq list|show|replay``, ``backfill``.

Added to the command line by ``cli.main`` (``add_operator_commands``). Tables and progress
bars are drawn with ``rich``. A user's mistake (an unknown tenant, a broker that does not answer, a
bad file, an unknown topic) is one line on stderr saying what was wrong and what to do, and exit
code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.command import SECONDS, Args, add, argument, json_option, option, print_json
from common.names import DLQ_CDC, DLQ_COMMANDS, ERROR_KIND, System
from ops.settings import OpsSettings


def _out() -> Console:
    # the stream of the moment (tests capture it), never wrapped: a table is read by people and by grep
    return Console(file=sys.stdout, soft_wrap=False, width=200 if not sys.stdout.isatty() else None)


def _quiet_clients() -> None:
    """A one-shot command reports a broker it cannot reach in one line (below); librdkafka's own retry
    lines (``Connect to … failed`` every few milliseconds) would bury it."""
    import logging

    logging.getLogger("librdkafka").setLevel(logging.CRITICAL)


def _fail(command: str, message: object) -> int:
    print(f"lienthong {command}: {message}", file=sys.stderr)
    return 2


def _progress(description: str, total: int | None) -> Progress:
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=False,
        disable=not sys.stderr.isatty(),
    )


def _working(description: str) -> Any:
    """A spinner on stderr while work of unknown length runs (on a terminal only: none in a pipe or a log)."""
    import contextlib

    if not sys.stderr.isatty():
        return contextlib.nullcontext()
    return Console(file=sys.stderr).status(description)


def _short(value: Any, width: int = 60) -> str:
    text = "—" if value is None or value == "" else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --- reconcile -------------------------------------------------------------------------------------


def _reconcile(args: Args, settings: OpsSettings) -> int:
    _quiet_clients()
    from ops.reconcile import LISTED_ENTITIES, ReconcileError, publish_repairs, reconcile

    entities = tuple(args.entity or LISTED_ENTITIES)
    try:
        with _working(f"reading {', '.join(entities)} of tenant {args.tenant} in both systems"):
            report = asyncio.run(reconcile(settings.amis, args.tenant, entities=entities, source=System(args.source)))
    except ReconcileError as exc:
        return _fail("reconcile", exc)
    if args.as_json:
        return _reconcile_json(args, settings, report)
    out = _out()
    compared = ", ".join(f"{n} {entity} pair(s)" for entity, n in report.compared.items())
    if not report.drift:
        out.print(f"tenant {args.tenant}: no drift ({compared} compared, source {report.source.value})")
        return 0
    table = Table(title=f"drift of tenant {args.tenant} (source of truth: {report.source.value})")
    for column in ("entity", "code", "drift", "field", "crm", "acct", "repair"):
        table.add_column(column)
    for drift in report.drift:
        table.add_row(
            drift.entity,
            drift.code or "—",
            drift.kind,
            drift.field or "—",
            _short(drift.crm),
            _short(drift.acct),
            drift.rule or drift.note or "—",
        )
    out.print(table)
    out.print(f"{len(report.drift)} difference(s); {compared} compared; {len(report.commands)} command(s) would repair")
    if not args.repair:
        if report.commands:
            out.print("run again with --repair to send them through commands.<system> (the connectors apply them)")
        return 1
    try:
        sent = publish_repairs(settings.kafka, report)
    except ReconcileError as exc:
        return _fail("reconcile", exc)
    for command in report.commands:
        out.print(
            f"sent {command.rule} {command.op.value} {command.target.value} {command.entity} "
            f"{command.key.code or command.key.id}  [{command.command_id[:12]}]"
        )
    out.print(f"{sent} repair command(s) on {settings.kafka.topic_prefix}commands.*, each audited on audit.sync")
    return 0


def _reconcile_json(args: Args, settings: OpsSettings, report: Any) -> int:
    """``reconcile --json``: the report (and with --repair, what was sent) as one document; the same exit status."""
    from dataclasses import asdict

    from ops.reconcile import ReconcileError, publish_repairs

    sent = 0
    if args.repair and report.commands:
        try:
            sent = publish_repairs(settings.kafka, report)
        except ReconcileError as exc:
            return _fail("reconcile", exc)
    print_json(
        {
            "tenant": report.tenant,
            "source": report.source.value,
            "compared": report.compared,
            "drift": [asdict(drift) for drift in report.drift],
            "commands": [
                {
                    "rule": command.rule,
                    "op": command.op.value,
                    "target": command.target.value,
                    "entity": command.entity,
                    "key": command.key.code or command.key.id,
                    "command_id": command.command_id,
                }
                for command in report.commands
            ],
            "sent": sent,
        }
    )
    return 0 if not report.drift or args.repair else 1


# --- lag -------------------------------------------------------------------------------------------


def lag_table(rows: list[Any], title: str) -> Table:
    table = Table(title=title)
    for column, justify in (
        ("group", "left"),
        ("topic", "left"),
        ("partition", "right"),
        ("committed", "right"),
        ("end", "right"),
        ("lag", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(
            row.group,
            row.topic,
            str(row.partition),
            "—" if row.committed is None else str(row.committed),
            str(row.end),
            str(row.lag),
        )
    return table


def groups_table(groups: list[Any]) -> Table:
    """Each group's state and members (``ops.lag.describe_groups``); plainly when a group has none."""
    table = Table(title="consumer groups: state and members")
    for column in ("group", "state", "members", "member (client id @ host)", "assigned partitions"):
        table.add_column(column)
    for group in groups:
        if not group.members:
            table.add_row(group.group, group.state, "0", "none: nothing consumes for this group", "—")
        for n, member in enumerate(group.members):
            assigned: dict[str, list[int]] = {}
            for topic, partition in member.partitions:
                assigned.setdefault(topic, []).append(partition)
            table.add_row(
                group.group if n == 0 else "",
                group.state if n == 0 else "",
                str(len(group.members)) if n == 0 else "",
                f"{member.client_id} @ {member.host.lstrip('/')}",
                "; ".join(f"{topic} {','.join(map(str, parts))}" for topic, parts in assigned.items()) or "none",
            )
    return table


def _lag(args: Args, settings: OpsSettings) -> int:
    _quiet_clients()
    from rich.console import Group
    from rich.live import Live

    from ops.lag import LagError, describe_groups, read_lag

    def table() -> Group:
        rows = read_lag(settings.kafka, list(args.group) or None)
        if args.nonzero:
            rows = [row for row in rows if row.lag]
        described = describe_groups(settings.kafka, list(args.group) or sorted({row.group for row in rows}))
        total = sum(row.lag for row in rows)
        title = f"consumer lag on {settings.kafka.bootstrap_servers}: {total} in all ({time.strftime('%X')})"
        return Group(lag_table(rows, title), groups_table(described))

    try:
        if args.as_json:
            if args.watch:
                raise LagError("--json prints one look; leave out --watch (or loop in your script)")
            rows = read_lag(settings.kafka, list(args.group) or None)
            if args.nonzero:
                rows = [row for row in rows if row.lag]
            described = describe_groups(settings.kafka, list(args.group) or sorted({row.group for row in rows}))
            print_json(
                {
                    "bootstrap_servers": settings.kafka.bootstrap_servers,
                    "lag": sum(row.lag for row in rows),
                    "partitions": [
                        {
                            "group": row.group,
                            "topic": row.topic,
                            "partition": row.partition,
                            "committed": row.committed,
                            "end": row.end,
                            "lag": row.lag,
                        }
                        for row in rows
                    ],
                    "groups": [
                        {
                            "group": group.group,
                            "state": group.state,
                            "members": [
                                {
                                    "member_id": member.member_id,
                                    "client_id": member.client_id,
                                    "host": member.host,
                                    "partitions": [{"topic": t, "partition": p} for t, p in member.partitions],
                                }
                                for member in group.members
                            ],
                        }
                        for group in described
                    ],
                }
            )
            return 0
        first = table()
        if not args.watch:
            _out().print(first)
            return 0
        with Live(first, console=_out(), auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(table(), refresh=True)
    except LagError as exc:
        return _fail("lag", exc)
    except KeyboardInterrupt:
        return 0


# --- dlq -------------------------------------------------------------------------------------------


def _filters(args: Args) -> Any:
    from ops.deadletters import Filters, parse_moment

    return Filters(
        kind=args.kind,
        tenant=args.tenant,
        since_ms=parse_moment(args.since) if args.since else None,
        until_ms=parse_moment(args.until) if args.until else None,
    )


def _dlq(args: Args, settings: OpsSettings) -> int:
    _quiet_clients()
    from datetime import UTC, datetime

    from ops.deadletters import (
        DLQ_TOPICS,
        DeadLetterError,
        check_topic,
        dead_letter,
        describe_letter,
        every_dead_letter,
        parse_where,
    )
    from ops.deadletters import replay as replay_letters

    out = _out()
    try:
        if args.action == "show":
            if not args.where:
                raise DeadLetterError("which one? `lienthong dlq show TOPIC:PARTITION:OFFSET` (as `dlq list` shows)")
            topic, partition, offset = parse_where(args.where, args.topic)
            shown = describe_letter(dead_letter(settings.kafka, topic, partition, offset))
            import orjson

            if args.as_json:
                print_json(shown)
            else:
                out.print_json(orjson.dumps(shown).decode())
            return 0
        if args.where:
            raise DeadLetterError(f"`dlq {args.action}` takes no position; filter with --kind, --tenant, --since")
        topics = [check_topic(args.topic)] if args.topic else list(DLQ_TOPICS)
        topic = ", ".join(settings.kafka.topic_prefix + t for t in topics)
        letters = list(every_dead_letter(settings.kafka, topics, _filters(args)))
        if args.as_json and args.action == "replay":
            raise DeadLetterError(
                "--json is for `dlq list` and `dlq show`; `dlq replay --dry-run` lists what it would send"
            )
        if args.as_json:
            print_json([describe_letter(letter) for letter in letters])
            return 0
        if args.action == "list":
            table = Table(title=f"dead letters on {topic}: {len(letters)}")
            for column in ("where", "failed at (UTC)", "kind", "tenant", "key", "message"):
                table.add_column(column)
            for letter in letters:
                when = letter.failed_at_ms
                table.add_row(
                    letter.where,
                    datetime.fromtimestamp(when / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if when else "—",
                    letter.kind,
                    letter.tenant or "—",
                    _short(letter.key.decode("utf-8", "replace") if letter.key else None, 40),
                    _short(letter.message, 100),
                )
            out.print(table)
            return 0
        # replay
        if args.dry_run:
            for letter in letters:
                out.print(f"would replay {letter.where} ({letter.kind}) -> {letter.origin}")
            out.print(f"{len(letters)} dead letter(s) to replay from {topic}")
            return 0
        with _progress(f"replaying {topic}", len(letters)) as bar:
            task = bar.add_task("replay", total=len(letters))
            replayed, skipped = replay_letters(settings.kafka, letters, progress=lambda _letter: bar.advance(task))
        for reason in skipped:
            out.print(f"skipped {reason}")
        out.print(f"{replayed} dead letter(s) replayed from {topic} to their origin topics")
        return 0
    except DeadLetterError as exc:
        return _fail("dlq", exc)


# --- backfill --------------------------------------------------------------------------------------


def _backfill(args: Args, settings: OpsSettings) -> int:
    _quiet_clients()
    from ops.backfill import BackfillError, Snapshot, publish, read_system, snapshot, system_entities

    system = System(args.system)
    try:
        if args.from_file:
            from ops.backfill import from_file

            snapshots = from_file(Path(args.from_file), args.tenant, system, args.entity)
        else:
            entities = [args.entity] if args.entity else system_entities(system)

            async def collect() -> list[Snapshot]:
                found: list[Snapshot] = []
                now = int(time.time() * 1000)
                async for entity, record in read_system(settings.amis, args.tenant, system, entities):
                    where = f"{system} {entity} {record.get('code') or record.get('id')}"
                    try:
                        found.append(snapshot(args.tenant, system, entity, record, ts_ms=now, where=where))
                    except BackfillError as exc:
                        print(f"skipped {exc}", file=sys.stderr)
                return found

            snapshots = asyncio.run(collect())
        with _progress(f"backfill {args.tenant} {system}", len(snapshots)) as bar:
            task = bar.add_task("publish", total=len(snapshots))
            count = publish(settings.kafka, snapshots, progress=lambda _item: bar.advance(task))
    except BackfillError as exc:
        return _fail("backfill", exc)
    per_topic: dict[str, int] = {}
    for item in snapshots:
        per_topic[item.topic] = per_topic.get(item.topic, 0) + 1
    for topic, n in sorted(per_topic.items()):
        print(f"{n:6} -> {settings.kafka.topic_prefix}{topic}")
    print(f"{count} snapshot event(s) (op r) of tenant {args.tenant} published; re-running publishes the same ids")
    return 0


# --- the commands ------------------------------------------------------------------------------------


def add_operator_commands() -> None:
    """Add ``reconcile``, ``lag``, ``dlq`` and ``backfill`` to the ``lienthong`` command group."""
    add(
        "reconcile",
        OpsSettings,
        _reconcile,
        "compare a tenant's linked records in both systems; --repair sends the fixing commands",
        option("--tenant", required=True, help="the tenant (as in LIENTHONG_CRM_CREDENTIALS)"),
        option(
            "--entity",
            multiple=True,
            help="customer, product (default both); product_category against sandboxes (repeat)",
        ),
        option(
            "--source",
            type=click.Choice([System.ACCT.value, System.CRM.value]),
            default=System.ACCT.value,
            help="the system whose values win (default acct: master data is created there)",
        ),
        option("--repair", is_flag=True, help="send the commands that fix the drift"),
        json_option(),
        broker=lambda args: args.repair,
    )
    add(
        "lag",
        OpsSettings,
        _lag,
        "committed offset, end offset and lag per group, topic and partition; each group's state and members",
        option("--group", multiple=True, help="only this consumer group (repeat); default every group"),
        option("--nonzero", is_flag=True, help="only partitions that lag"),
        option("--watch", is_flag=True, help="refresh until Ctrl-C"),
        option("--interval", type=SECONDS, default=2.0, show_default=True, help="seconds between two --watch looks"),
        json_option(),
        broker=True,
    )
    add(
        "dlq",
        OpsSettings,
        _dlq,
        "dead letters: list, show one whole, replay to their origin topics",
        argument(
            "action",
            "list: the letters (filtered); show: one whole; replay: back to their origin topics",
            type=click.Choice(["list", "show", "replay"]),
        ),
        argument("where", "show: TOPIC:PARTITION:OFFSET, as list prints it", required=False),
        option("--topic", default=None, help=f"only {DLQ_CDC} or {DLQ_COMMANDS} (default: every dead-letter topic)"),
        option("--kind", help=f"only letters with this {ERROR_KIND} (decode, schema, key, http_400, …)"),
        option("--tenant", help="only this tenant's letters"),
        option("--since", help="only letters dead-lettered since: 2h, 30m, 7d, 2026-11-28, 2026-11-28T09:30"),
        option("--until", help="only letters dead-lettered until then (same forms)"),
        option("--dry-run", is_flag=True, help="replay: list what would be replayed"),
        json_option(),
        broker=True,
    )
    add(
        "backfill",
        OpsSettings,
        _backfill,
        "publish a tenant's records as op=r snapshot change events",
        option("--tenant", required=True, help="the tenant (as in LIENTHONG_CRM_CREDENTIALS)"),
        option("--system", required=True, type=click.Choice([system.value for system in System]), help="crm or acct"),
        option("--entity", help="only this entity (default: every entity the system's API lists)"),
        option("--from-file", metavar="F.jsonl", help="records from a JSON-lines file, not the system"),
        broker=True,
    )
