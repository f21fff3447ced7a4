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


def _history(args: Args, settings: OpsSettings) -> int:
    from cli.operator import _quiet_clients

    _quiet_clients()

    from ops.history import HistoryIndex, HistoryIndexError, format_history, history, index_path

    name = args.command  # history, or explain: its old name
    err = Console(stderr=True, highlight=False)
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
