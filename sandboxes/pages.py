"""What the sandboxes' own pages share: records as tables of their fields, readable by a person.

Each record is a row, each field a column (in the order the records first name them); a record with
more fields than fit (``WIDE``) is a card of its own, a field per line. A list of objects (an order's
lines) is a small table in its cell, an object its ``field: value`` lines, a time ``2026-12-08
00:26:10 +07:00``. Long text wraps inside its cell instead of running off the page.
"""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222}"
    "h1{font-size:1.4em}h2{font-size:1.2em;margin:1.3em 0 .3em;border-bottom:1px solid #ccc}"
    "h3{font-size:1em;margin:1em 0 .3em}small{color:#666;font-weight:normal}"
    "table{border-collapse:collapse;margin:.2em 0}td,th{border:1px solid #ddd;padding:2px 6px;font-size:13px;"
    "vertical-align:top;text-align:left;overflow-wrap:break-word;max-width:28em}"
    "th{background:#f3f3f3;white-space:nowrap}"
    "td table td,td table th{font-size:12px}.scroll{overflow-x:auto}.note{color:#555;font-size:13px}"
    "button{font-size:13px;cursor:pointer}form{margin:0}.cards{display:flex;flex-wrap:wrap;gap:12px;align-items:start}"
    "table.card{margin:0}table.card th{width:1%}table.card td{max-width:40em}"
    "th.title{font-size:14px;background:#e8eef7}"
    "th.title div{display:inline-block;margin-left:1em}</style>"
)


ISO_TIME = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def cell(value: Any) -> str:
    """One field's value as HTML: text, a nested table for a list of objects, ``field: value`` lines."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return fields_table(value)
    if isinstance(value, list):
        return html.escape(", ".join(v if isinstance(v, str) else orjson.dumps(v).decode() for v in value))
    if isinstance(value, dict):
        return "<br>".join(f"{html.escape(str(k))}: {cell(v)}" for k, v in value.items())
    text = str(value)
    moment = ISO_TIME.match(text)
    if moment:  # 2026-12-08T00:25:35.616+07:00 -> 2026-12-08 00:25:35 +07:00
        text = " ".join(part for part in moment.groups() if part)
    return html.escape(text)


def columns(records: list[dict[str, Any]], first: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> list[str]:
    """Every field any record has, ``first`` first, then in the order the records name them."""
    seen: dict[str, None] = dict.fromkeys(f for f in first if any(f in r for r in records))
    for record in records:
        seen.update((name, None) for name in record if name not in skip)
    return [name for name in seen if name not in skip]


WIDE = 8  # records with more fields than this are shown one card each (field | value), not one row each


def fields_table(
    records: list[dict[str, Any]],
    *,
    first: tuple[str, ...] = (),
    skip: tuple[str, ...] = (),
    extra: tuple[str, list[str]] | None = None,
    testid: str = "",
) -> str:
    """The records as a table of their fields, one row each; records with more than ``WIDE`` fields as
    cards, one per record, a field per line, side by side as the width allows. ``extra``: (heading, one
    cell of HTML per record) first, where a button in it is seen however wide the records are."""
    names = columns(records, first, skip)
    mark = f' data-testid="{html.escape(testid)}"' if testid else ""
    if len(names) > WIDE:
        cards = []
        for index, record in enumerate(records):
            title = cell(record.get(names[0]))
            action = f"<div>{extra[1][index]}</div>" if extra else ""
            lines = "".join(
                f"<tr><th>{html.escape(name)}</th><td>{cell(record.get(name))}</td></tr>"
                for name in names[1:]
                if record.get(name) not in (None, "")
            )
            cards.append(
                f'<table class="card"{mark}><tr><th colspan=2 class="title">{html.escape(names[0])} {title}{action}'
                f"</th></tr>{lines}</table>"
            )
        return f'<div class="cards">{"".join(cards)}</div>'
    head = (f"<th>{html.escape(extra[0])}</th>" if extra else "") + "".join(
        f"<th>{html.escape(name)}</th>" for name in names
    )
    rows = []
    for index, record in enumerate(records):
        cells = (f"<td>{extra[1][index]}</td>" if extra else "") + "".join(
            f"<td>{cell(record.get(name))}</td>" for name in names
        )
        rows.append(f"<tr{mark}>{cells}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
