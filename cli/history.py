"""``lienthong history TENANT ENTITY ID-OR-CODE`` (and ``explain``, its old name): a record's whole story on
both sides, from the history index (``ops.history``), as a timeline or ``--json``."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.command import NOT_IN_ORDER, OK, USER_ERROR, Args, add, argument, option
from ops.settings import OpsSettings

HELP = (
    "a record's whole story on both sides: every version of it and of its linked record, who changed what, "
    "the rules, the commands sent and what became of each"
)


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


def _outcome(outcome: Any) -> str:
    from ops.explain import _outcome_text

    return str(_outcome_text(outcome))


def _decision_lines(change: Any) -> list[str]:
    audit = change.audit
    rules = ", ".join(audit.get("rules") or []) or "no rule"
    lines = [
        f"    decided: rules {rules}"
        + (f" (settings revision {audit['settings_revision']})" if audit.get("settings_revision") else "")
    ]
    for outcome in change.outcomes:
        command = outcome.command
        lines.append(
            f"    -> {command.get('rule')}: {command.get('op')} {command.get('target')} {command.get('entity')} "
            f"{command.get('key')}  [{str(command.get('command_id', ''))[:12]}]  {_outcome(outcome)}"
        )
    if audit.get("reason"):
        lines.append(f"    {audit['reason']}")
    return lines


def format_history(story: Any) -> list[str]:
    """The story for people: one entry per version (or decision), oldest first (plain text lines)."""
    from ops.explain import Change
    from ops.history import time_text

    explanation = story.explanation
    records = ", ".join(f"{system} {record_id}" for system, record_id in explanation.records) or "no decided change"
    lines = [
        f"{explanation.entity} {explanation.query} of {explanation.tenant}: {records}; "
        f"known as {', '.join(explanation.identifiers)} (UTC times)"
    ]
    note = story.gone_note()
    if note:
        lines.append(f"note: {note}")
    for entry in story.timeline():
        if isinstance(entry, Change):
            audit = entry.audit
            where = f"via {entry.via} {audit.get('record_id')}" if entry.via else f"{audit.get('record_id')}"
            lines.append(
                f"{time_text(int(audit.get('ts_ms') or 0))}  {audit.get('system')} {where} {audit.get('action')} "
                f"(event {audit.get('event_id')}, origin {audit.get('origin')}; its change event is not shown)"
                f"  rules: {', '.join(audit.get('rules') or []) or 'no rule'}"
            )
            lines += _decision_lines(entry)[1:]
            continue
        record, event = entry.record, entry.event
        code = f" ({record['code']})" if record.get("code") and str(record.get("code")) != str(record.get("id")) else ""
        for_order = f" of order {record['order_id']}" if entry.role == "document" and record.get("order_id") else ""
        action = (
            event.get("action") or (entry.decision.audit.get("action") if entry.decision else None) or event.get("op")
        )
        lines.append(
            f"{time_text(entry.ts_ms)}  {event.get('system')} {event.get('entity')} {record.get('id')}{code}"
            f"{for_order} "
            f"{action} by {entry.who}  [event {event.get('event_id')}]"
        )
        if event.get("op") in ("c", "r") or not event.get("before"):
            shown = {k: v for k, v in record.items() if k != "id" and v not in (None, "", [])}
            lines.append("    " + ", ".join(f"{k} = {_short(v, 40)}" for k, v in shown.items()))
        else:
            for name, (old, new) in entry.diff.items():
                lines.append(f"    {name}: {_short(old)} -> {_short(new)}")
        if entry.derived:
            values = ", ".join(f"{k} = {_short(v, 50)}" for k, v in entry.derived["values"].items() if v is not None)
            lines.append(f"    order's derived values: {values}")
            made = [
                f"voucher {v['code'] or v['id']} ({', '.join(f'{line}: {q}' for line, q in v['quantities'].items())}; "
                f"{v['amount']}{', invoiced' if v['invoiced'] else ''})"
                for v in entry.derived["vouchers"]
            ] + [f"receipt {r['code'] or r['id']} ({r['amount']})" for r in entry.derived["receipts"]]
            lines.append(
                f"    made of (order total {entry.derived['order_total']}): {'; '.join(made) or 'no document'}"
            )
        if entry.decision is not None:
            lines += _decision_lines(entry.decision)
        else:
            lines.append("    no decision on audit.sync (not decided yet, dropped as a repeat, or dead-lettered)")
    return lines


def _history(args: Args, settings: OpsSettings) -> int:
    from cli.operator import _quiet_clients

    _quiet_clients()

    from ops.history import HistoryIndex, HistoryIndexError, history, index_path

    name = args.command  # history, or explain: its old name
    err = Console(stderr=True)
    progress: Progress | None = None
    task = None

    def show(read: int, behind: int) -> None:
        nonlocal progress, task
        if progress is None:
            if behind < 20000:
                return
            err.print(
                f"indexing {behind:,} retained message(s) for history (the index is kept in LIENTHONG_DATA_DIR) …"
            )
            progress = Progress(
                TextColumn("indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            progress.start()
            task = progress.add_task("indexing", total=behind)
        assert task is not None
        progress.update(task, completed=read)

    try:
        with HistoryIndex(settings.kafka, index_path(settings.data_dir, settings.kafka)) as index:
            try:
                story = history(index, args.tenant, args.entity, args.id, progress=show)
            finally:
                if progress is not None:
                    progress.stop()
    except HistoryIndexError as exc:
        print(f"lienthong {name}: {exc}", file=sys.stderr)
        return USER_ERROR
    if args.json:
        print(orjson.dumps(story.as_json(), option=orjson.OPT_INDENT_2).decode())
    if not story.found:
        print(
            f"lienthong {name}: no {args.entity} {args.id!r} of tenant {args.tenant} on "
            f"{settings.kafka.topic_prefix}cdc.* or audit.sync: no change of it under that code, CRM id or "
            "accounting id "
            "is retained",
            file=sys.stderr,
        )
        return NOT_IN_ORDER
    if not args.json:
        out = Console(soft_wrap=True, highlight=False)
        for line in format_history(story):
            out.print(escape(line))
    return OK


def _params() -> list[Any]:
    return [
        argument("tenant", "the tenant (as in LIENTHONG_CRM_CREDENTIALS)"),
        argument("entity", "the entity: customer, product, sale_order, invoice, ..."),
        argument("id", "the record's business code (KH0001), its CRM id or its accounting id"),
        option("--json", is_flag=True, help="the story as one JSON document (versions, decisions, results)"),
    ]


def add_history_commands() -> None:
    add("history", OpsSettings, _history, HELP, *_params())
    add("explain", OpsSettings, _history, "the same as `lienthong history` (its old name)", *_params())
