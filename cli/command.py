"""The frame of the ``lienthong`` command line (click): the group every command is added to, what a
command is (its arguments, the settings class it reads, its handler), and how one is parsed and run.

A command is declared with ``add(name, SettingsClass, handler, help, *params)``: ``params`` are click
arguments and options (``argument(...)``, ``option(...)``: each with its help text). Parsing a command
line gives an ``Args`` (what the user said, as attributes: ``args.tenant``, ``args.system``...) that
names its settings class and handler; ``cli.main.main`` reads the settings once and calls ``handler(args, settings)``,
which returns the exit status (README, "The `lienthong` command"):

    0  done (or nothing to report)
    1  done, and the answer is "not in order" (reconcile found drift, explain found no record, a topic
       with other settings)
    2  nothing done: a mistake a user can fix (a usage error, an invalid setting, a broker or system
       that does not answer, an unknown tenant, entity, record or file), said in one line on stderr
    130  interrupted (Ctrl-C) before the work was done
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import Any

import click

from common.settings import ServiceSettings

OK, NOT_IN_ORDER, USER_ERROR, INTERRUPTED = 0, 1, 2, 130

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


class Args(SimpleNamespace):
    """One parsed command line: ``command`` (its name), ``settings`` (the class it reads), ``func`` (its
    handler), ``bootstrap_server`` (``-b``, or None) and each of the command's parameters by name."""

    command: str
    settings: type[ServiceSettings]
    func: Callable[..., int]
    bootstrap_server: str | None


Handler = Callable[[Args, Any], int]


def program_version() -> str:
    try:
        return version("lienthong")
    except PackageNotFoundError:  # run from a checkout that was never installed (python -m cli)
        return "unknown (not installed)"


class Argument(click.Argument):
    """A positional argument with a help text, listed by ``-h`` (click before 8.5 took none: faust-streaming
    asks for click<8.4)."""

    def __init__(self, decls: Sequence[str], help: str, **kwargs: Any) -> None:
        super().__init__(decls, **kwargs)
        self.help = help


def argument(name: str, help: str, **kwargs: Any) -> Argument:
    return Argument([name], help=help, **kwargs)


def option(*decls: str, help: str, **kwargs: Any) -> click.Option:
    return click.Option(list(decls), help=help, **kwargs)


def bootstrap_option() -> click.Option:
    return option(
        "-b",
        "--bootstrap-server",
        metavar="HOST:PORT[,...]",
        default=None,
        help="the Kafka brokers to connect to (over LIENTHONG_BOOTSTRAP_SERVERS)",
    )


class Command(click.Command):
    """A ``lienthong`` command: parsing it gives its ``Args`` (``cli.main.main`` runs them)."""

    def __init__(
        self, name: str, settings: type[ServiceSettings], handler: Handler, params: list[click.Parameter], **kwargs: Any
    ) -> None:
        if "kafka" in settings.model_fields:  # the Kafka tools' -b/--bootstrap-server, on every command with a broker
            params = [*params, bootstrap_option()]
        super().__init__(name, params=params, context_settings=CONTEXT, **kwargs)
        self.settings = settings
        self.handler = handler

    def invoke(self, ctx: click.Context) -> Args:
        params = dict(ctx.params)
        given = params.pop("bootstrap_server", None)
        root = ctx.find_root().params.get("bootstrap_server")
        return Args(
            command=self.name, settings=self.settings, func=self.handler, bootstrap_server=given or root, **params
        )

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not hasattr(click.Command, "format_arguments"):  # click 8.5 lists arguments' help itself
            rows = [(p.human_readable_name, p.help) for p in self.get_params(ctx) if isinstance(p, Argument)]
            if rows:
                with formatter.section("Positional arguments"):
                    formatter.write_dl(rows)
        super().format_options(ctx, formatter)


class Group(click.Group):
    """The commands in the order they were added (the services first), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    cls=Group,
    context_settings=CONTEXT,
    help="Keep AMIS CRM and AMIS Kế toán in sync. `lienthong COMMAND -h` says what a command takes.",
    epilog="Exit status: 0 done; 1 done, and not in order (drift, no record, other settings); "
    "2 a mistake said in one line (usage, setting, broker, tenant, file); 130 interrupted.",
)
@click.version_option(program_version(), "-V", "--version", prog_name="lienthong", message="%(prog)s %(version)s")
@click.option(
    "-b",
    "--bootstrap-server",
    metavar="HOST:PORT[,...]",
    default=None,
    help="the Kafka brokers every command connects to (over LIENTHONG_BOOTSTRAP_SERVERS)",
)
def lienthong(bootstrap_server: str | None) -> None:
    """The group: its -b is read by each command's ``Args`` (a command's own -b wins)."""


def add(name: str, settings: type[ServiceSettings], handler: Handler, help: str, *params: click.Parameter) -> Command:
    """Add the command ``name`` to ``lienthong``: it reads ``settings`` and runs ``handler``."""
    command = Command(name, settings, handler, list(params), help=help, short_help=help)
    lienthong.add_command(command)
    return command


def parse(argv: Sequence[str] | None) -> Args | int:
    """The ``Args`` of a command line, or the exit status when there is nothing to run (``--help``,
    ``--version``). A usage error raises ``click.UsageError``."""
    result = lienthong.main(args=list(argv) if argv is not None else None, prog_name="lienthong", standalone_mode=False)
    if isinstance(result, Args):
        return result
    return result if isinstance(result, int) else OK


def usage_error(exc: click.UsageError) -> str | None:
    """A usage error in one line: what was wrong and where the command's help is."""
    if exc.__class__.__name__ == "NoArgsIsHelpError":  # `lienthong` alone: its help (click >= 8.2 raises this)
        return None
    where = exc.ctx.command_path if exc.ctx is not None else "lienthong"
    message = " ".join(exc.format_message().split())
    return f"{where}: {message} (see '{where} --help')"
