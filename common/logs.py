"""Logging of every lienthong service: JSON lines (one object a line) or human-readable text.

``setup_logging(settings.log, service)`` is called once by the command line before any service starts
(``cli/main.py``); it replaces the root logger's handlers with one handler on stderr, so that
the project's own loggers, faust's and aiokafka's all write through it. librdkafka (the
confluent-kafka clients) writes through it too: ``setup_logging`` adds ``"logger": kafka_logger()``
to every client configuration ``common.kafka_config.confluent_config`` builds, so its lines become
records of the ``librdkafka`` logger (delivered by the client's ``poll()``) instead of raw ``%4|…``
lines on stderr.

A line about a record says which one: ``record_context(tenant=…, entity=…, record_id=…, rule=…,
command_id=…)`` sets those fields for every line logged inside it (a context variable, so each
asyncio task keeps its own); ``bind_record(…)`` sets them for the rest of the current asyncio task (a task per record);
``log.info(..., extra=about(...))`` sets them for one line.

``LIENTHONG_LOG_FORMAT``: ``json``, ``text`` or ``auto`` (the default: text when stderr is a
terminal, JSON otherwise, e.g. in a container or under systemd).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, TYPE_CHECKING, Any, Literal

from pythonjsonlogger.json import JsonFormatter

from common import kafka_config

if TYPE_CHECKING:
    from common.settings import LogSettings

#: The fields that name a record, in the order the text format shows them.
RECORD_FIELDS = ("tenant", "entity", "record_id", "rule", "command_id")

#: The logger librdkafka's lines are records of (``librdkafka_config()``).
KAFKA_LOGGER = "librdkafka"

_record: ContextVar[dict[str, str]] = ContextVar("lienthong_log_record", default={})  # noqa: B039 (never mutated)


def about(
    *,
    tenant: str | None = None,
    entity: str | None = None,
    record_id: str | None = None,
    rule: str | None = None,
    command_id: str | None = None,
) -> dict[str, str]:
    """The fields naming a record, for ``extra=`` of one log call (None fields are left out)."""
    given = {"tenant": tenant, "entity": entity, "record_id": record_id, "rule": rule, "command_id": command_id}
    return {name: str(value) for name, value in given.items() if value is not None and value != ""}


def about_key(key: bytes | None, *, entity: str | None = None) -> dict[str, str]:
    """The fields of an input message keyed ``<tenant>:<record id>`` (a change event, or an order's
    document for the aggregates), for ``extra=`` of a line about it; an unreadable key names nothing."""
    tenant, colon, record_id = (key or b"")[:1024].decode("utf-8", "replace").partition(":")
    return about(tenant=tenant if colon else None, entity=entity, record_id=record_id if colon else None)


@contextmanager
def record_context(
    *,
    tenant: str | None = None,
    entity: str | None = None,
    record_id: str | None = None,
    rule: str | None = None,
    command_id: str | None = None,
) -> Iterator[None]:
    """Every line logged inside (in this task) names this record; nested contexts add fields."""
    fields = about(tenant=tenant, entity=entity, record_id=record_id, rule=rule, command_id=command_id)
    token = _record.set({**_record.get(), **fields})
    try:
        yield
    finally:
        _record.reset(token)


def bind_record(
    *,
    tenant: str | None = None,
    entity: str | None = None,
    record_id: str | None = None,
    rule: str | None = None,
    command_id: str | None = None,
) -> None:
    """Name this record on every later line of the current asyncio task (a task runs in a copy of
    its creator's context, so nothing leaks into other tasks): for a task that handles one record."""
    fields = about(tenant=tenant, entity=entity, record_id=record_id, rule=rule, command_id=command_id)
    _record.set({**_record.get(), **fields})


class RecordFields(logging.Filter):
    """Copies the record context onto each log record (``extra=`` given to the call wins), and
    splits librdkafka's ``FAC [client] text`` into ``kafka_facility``, ``kafka_client`` and the text."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _record.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "service"):
            record.service = self.service
        if record.name == KAFKA_LOGGER and isinstance(record.args, tuple) and len(record.args) == 3:
            facility, client, text = record.args
            record.kafka_facility, record.kafka_client = str(facility), str(client)
            record.msg, record.args = str(text), ()
        return True


class TextFormatter(logging.Formatter):
    """``[time] LEVEL logger: message  tenant=… entity=…`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        named = [f"{name}={getattr(record, name)}" for name in RECORD_FIELDS if hasattr(record, name)]
        if hasattr(record, "kafka_client"):
            named.append(f"kafka={record.kafka_client}/{getattr(record, 'kafka_facility', '')}")
        if not named:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first}  {' '.join(named)}{newline}{rest}"


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time, level, logger, message, service, the record's fields, and
    ``exc_info`` (the traceback as text) when there is one."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 in UTC, with microseconds
        json_ensure_ascii=False,
    )


def resolve_format(log_format: str, stream: IO[str]) -> Literal["json", "text"]:
    if log_format == "json":
        return "json"
    if log_format == "text":
        return "text"
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(settings: LogSettings, service: str, *, stream: IO[str] | None = None) -> Literal["json", "text"]:
    """Route every logger of the process through one stderr handler in the format of
    ``LIENTHONG_LOG_FORMAT``, at ``LIENTHONG_LOG_LEVEL``; returns the format chosen."""
    stream = stream or sys.stderr
    chosen = resolve_format(settings.log_format, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter() if chosen == "json" else TextFormatter())
    handler.addFilter(RecordFields(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(str(settings.log_level).upper())
    # a one-shot command quiets librdkafka's retry lines (cli/operator.py); a service set up
    # after it in the same process (the tests run many) hears them again
    logging.getLogger(KAFKA_LOGGER).setLevel(logging.NOTSET)
    logging.captureWarnings(True)
    # every confluent-kafka client built from common.kafka_config logs through this handler too
    if _librdkafka_hook not in kafka_config.CONFLUENT_HOOKS:
        kafka_config.CONFLUENT_HOOKS.append(_librdkafka_hook)
    return chosen


def _librdkafka_hook(config: dict[str, Any]) -> dict[str, Any]:
    return librdkafka_config()


def kafka_logger() -> logging.Logger:
    """The Python logger librdkafka writes through (give it as a client's ``logger`` setting)."""
    return logging.getLogger(KAFKA_LOGGER)


def librdkafka_config() -> dict[str, Any]:
    """What every confluent-kafka client's configuration adds so that librdkafka logs through
    ``setup_logging``'s handler (its lines are delivered by the client's ``poll()``)."""
    return {"logger": kafka_logger()}
