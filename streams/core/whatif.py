"""What a change of a tenant's settings (or of the rule table) would change: two runs' decisions compared.

Pure: given, per change event, the commands decided with the settings in force and with the proposed
ones, it says per rule which commands would be added, removed or changed, with examples naming the
fields that differ, the records of both systems and the event that caused each. ``streams.replay``
produces the decisions; ``lienthong whatif`` prints the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from streams.core.contract import ChangeEvent, Command

Kind = Literal["added", "removed", "changed"]


def command_identity(command: Command) -> tuple[str, str, str, str, str]:
    """What makes two runs' commands "the same command": its rule, target record and operation."""
    return (command.rule, command.target.value, command.entity, command.op.value, command.key.as_text())


@dataclass(frozen=True, slots=True)
class Example:
    """One command that differs, and why it exists."""

    kind: Kind
    rule: str
    target: str
    entity: str
    op: str
    key: str  # the target record's code (or id)
    fields: dict[str, tuple[Any, Any]]  # field -> (in force, proposed); absent is None
    event_id: str
    event: str  # "crm sale_order DH1 (Đơn trà) create"
    source_record: str  # the record that changed, in its system: "crm sale_order DH1 (Đơn hàng A)"
    ts_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "target": self.target,
            "entity": self.entity,
            "op": self.op,
            "key": self.key,
            "fields": {name: {"in_force": a, "proposed": b} for name, (a, b) in self.fields.items()},
            "event_id": self.event_id,
            "event": self.event,
            "source_record": self.source_record,
            "ts_ms": self.ts_ms,
        }


@dataclass(slots=True)
class RuleDifference:
    rule: str
    added: int = 0
    removed: int = 0
    changed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.removed + self.changed


@dataclass(slots=True)
class WhatIfReport:
    """Differences per rule (sorted by rule id) and up to ``examples_per_rule`` examples of each kind."""

    events: int = 0
    events_differing: int = 0
    commands_in_force: int = 0
    commands_proposed: int = 0
    rules: dict[str, RuleDifference] = field(default_factory=dict)
    examples: list[Example] = field(default_factory=list)
    examples_per_rule: int = 3
    _shown: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add_event(
        self, event: ChangeEvent, action: str, in_force: Iterable[Command], proposed: Iterable[Command]
    ) -> None:
        """Compare one change event's commands of the two runs (``action``: the one its rules were found by)."""
        self.events += 1
        before = _by_identity(in_force)
        after = _by_identity(proposed)
        self.commands_in_force += sum(len(v) for v in before.values())
        self.commands_proposed += sum(len(v) for v in after.values())
        differs = False
        for identity in sorted(set(before) | set(after)):
            olds, news = before.get(identity, []), after.get(identity, [])
            for index in range(max(len(olds), len(news))):
                old = olds[index] if index < len(olds) else None
                new = news[index] if index < len(news) else None
                if old is not None and new is not None and old.fields == new.fields:
                    continue
                differs = True
                kind: Kind = "added" if old is None else "removed" if new is None else "changed"
                self._count(identity[0], kind)
                self._example(event, action, kind, old, new)
        if differs:
            self.events_differing += 1

    def _count(self, rule: str, kind: Kind) -> None:
        difference = self.rules.setdefault(rule, RuleDifference(rule))
        setattr(difference, kind, getattr(difference, kind) + 1)

    def _example(self, event: ChangeEvent, action: str, kind: Kind, old: Command | None, new: Command | None) -> None:
        command = new or old
        assert command is not None
        if self._shown[(command.rule, kind)] >= self.examples_per_rule:
            return
        self._shown[(command.rule, kind)] += 1
        self.examples.append(
            Example(
                kind=kind,
                rule=command.rule,
                target=command.target.value,
                entity=command.entity,
                op=command.op.value,
                key=command.key.as_text(),
                fields=field_differences(old.fields if old else {}, new.fields if new else {}),
                event_id=event.event_id,
                event=f"{event.system.value} {event.entity} {record_name(event)} {action}",
                source_record=f"{event.system.value} {event.entity} {record_name(event)}",
                ts_ms=event.ts_ms,
            )
        )

    @property
    def unchanged(self) -> bool:
        return not self.rules

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "events_differing": self.events_differing,
            "commands": {"in_force": self.commands_in_force, "proposed": self.commands_proposed},
            "rules": [
                {"rule": d.rule, "added": d.added, "removed": d.removed, "changed": d.changed}
                for d in sorted(self.rules.values(), key=lambda d: _rule_order(d.rule))
            ],
            "examples": [e.to_json() for e in sorted(self.examples, key=lambda e: (_rule_order(e.rule), e.ts_ms))],
        }


def field_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Each field whose value differs (absent on one side: None there), sorted by name."""
    return {
        name: (old.get(name), new.get(name)) for name in sorted(set(old) | set(new)) if old.get(name) != new.get(name)
    }


def record_name(event: ChangeEvent) -> str:
    """How people name the changed record: its code, and its name when it has one."""
    record = event.record
    code = record.get("code")
    name = record.get("name")
    label = str(code) if code not in (None, "") else event.record_id
    return f"{label} ({name})" if isinstance(name, str) and name else label


def _by_identity(commands: Iterable[Command]) -> dict[tuple[str, str, str, str, str], list[Command]]:
    grouped: dict[tuple[str, str, str, str, str], list[Command]] = {}
    for command in commands:
        grouped.setdefault(command_identity(command), []).append(command)
    return grouped


def _rule_order(rule: str) -> tuple[str, int]:
    prefix, _, number = rule.partition("-")
    return (prefix, int(number) if number.isdigit() else 0)
