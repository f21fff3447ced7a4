"""The settings of every service as docs/operations.md lists them (between its markers), generated from
the settings classes the commands read (``add(name, SettingsClass, ...)`` of each command in ``cli/main.py``).

    python -m cli.settings_doc           rewrite that section of docs/operations.md
    python -m cli.settings_doc --check   only say whether it is current (exit 1 when it is not)

tests/test_settings.py regenerates it and compares.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import SecretStr
from pydantic.fields import FieldInfo

import cli.main  # noqa: F401  (adds every command to the group)
from cli.command import Command, lienthong
from common.settings import EnvSettings, ServiceSettings, block_type, env_name, holds_secret

DOC = Path(__file__).resolve().parents[1] / "docs" / "operations.md"
BEGIN = "<!-- settings: generated from the settings classes by `python -m cli.settings_doc`; do not edit -->"
END = "<!-- end of the generated settings -->"
REGENERATE = "python -m cli.settings_doc"


def services() -> dict[type[ServiceSettings], list[str]]:
    """Each service's settings class and the commands that read it, in the command line's order."""
    found: dict[type[ServiceSettings], list[str]] = {}
    for name, command in lienthong.commands.items():
        if isinstance(command, Command):
            found.setdefault(command.settings, []).append(name)
    return found


def settings_markdown() -> str:
    """The generated section: a table per service of the variables it reads itself, then a table per
    block that several services hold (the Kafka connection, the log settings, the AMIS APIs)."""
    lines = [
        BEGIN,
        "",
        "Every setting is an environment variable. A service reads only the variables listed for it (and for the",
        "blocks it holds); a variable several services read has the same type, default and check in each. An",
        "invalid value stops the command with exit code 2 and a line naming the variable.",
    ]
    blocks: dict[type[EnvSettings], list[str]] = {}
    for cls, commands in services().items():
        own = {name: field for name, field in cls.model_fields.items() if block_type(field) is None}
        held = [block for field in cls.model_fields.values() if (block := block_type(field)) is not None]
        for block in held:
            blocks.setdefault(block, []).append(_title(cls))
        lines += ["", f"### {_title(cls)}", ""]
        links = [_link(block) for block in held]
        with_blocks = f", with {', '.join(links[:-1])} and {links[-1]}" if len(links) > 1 else f", with {links[0]}"
        lines.append(
            f"Read by `lienthong {'`, `lienthong '.join(commands)}` (`{cls.__name__}`, `{_where(cls)}`)"
            + (with_blocks if links else "")
            + "."
        )
        if own:
            lines += ["", *_markdown_table(own)]
    every = len(services())
    for block, holders in blocks.items():
        held_by = "every service" if len(holders) == every else ", ".join(h[0].lower() + h[1:] for h in holders)
        lines += ["", f"### {_title(block)}", ""]
        lines += [f"`{block.__name__}` (`{_where(block)}`), held by {held_by}.", "", *_markdown_table(block)]
    return "\n".join([*lines, "", END])


def _markdown_table(fields: type[EnvSettings] | dict[str, FieldInfo]) -> list[str]:
    if isinstance(fields, type):
        fields = {name: field for name, field in fields.model_fields.items() if block_type(field) is None}
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, field in fields.items():
        cells = [f"`{env_name(name)}`", _type(field), _default(field), field.description or ""]
        rows.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return rows


def _title(cls: type[EnvSettings]) -> str:
    """The first line of the class's docstring: a short title."""
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".").replace("``", "`")


def _link(block: type[EnvSettings]) -> str:
    title = _title(block)
    anchor = "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")
    return f"[{title[0].lower() + title[1:]}](#{anchor})"


def _where(cls: type) -> str:
    return cls.__module__.replace(".", "/") + ".py"


def _type(field: FieldInfo) -> str:
    said = _type_name(field.annotation)
    for constraint in field.metadata:  # Field(ge=..., le=...): annotated_types' Ge, Gt, Le, Lt
        for bound, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(constraint, bound, None) is not None:
                said += f", {sign} {getattr(constraint, bound)}"
    return said


def _type_name(annotation: Any) -> str:
    if annotation is SecretStr:
        return "secret"
    if annotation is Path:
        return "path"
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " or ".join(f"`{argument}`" for argument in arguments)
    if origin in (Union, types.UnionType):
        named = [_type_name(argument) for argument in arguments if argument is not type(None)]
        return " or ".join(named) + (", optional" if type(None) in arguments else "")
    if origin is dict:
        value = arguments[1]
        kind = "secret" if value is SecretStr else "object" if isinstance(value, type) else "number"
        return f"JSON object of {kind}s" + (" (secret)" if holds_secret(value) and value is not SecretStr else "")
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):  # a default is no secret
        value = value.get_secret_value()
    if isinstance(value, bool):
        value = str(value).lower()
    if value == "":
        return "empty"
    return f"`{value}`"


def write(doc: Path = DOC) -> bool:
    """Put the generated section between the markers of ``doc``; whether anything changed."""
    text = doc.read_text(encoding="utf-8")
    updated = _updated(text)
    if updated != text:
        doc.write_text(updated, encoding="utf-8")
    return updated != text


def current(doc: Path = DOC) -> bool:
    """Whether the section of ``doc`` is what the settings classes say now."""
    text = doc.read_text(encoding="utf-8")
    return _updated(text) == text


def _updated(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"the markers of the generated settings are missing: {BEGIN} ... {END}")
    before, rest = text.split(BEGIN, 1)
    return before + settings_markdown() + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.settings_doc", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/operations.md is stale")
    args = parser.parse_args(argv)
    if args.check:
        if current():
            return 0
        print(f"{DOC} is stale: run `{REGENERATE}`", file=sys.stderr)
        return 1
    print(f"{DOC}: {'updated' if write() else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
