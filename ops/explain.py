"""Finding one record by code or either id through its audit records and results, and what became of each
command: the search and the join ``lienthong history`` (and ``explain``, its old name) tells the story with
(``ops/history.py``, which reads the messages).

The record is found by whatever the operator has at hand: its business code (``KH0001``), its CRM id
or its accounting id. Audit records are keyed by the changed record's id in its own system
(docs/contract.md, "Audit record"); the identifiers are joined through what the trail itself says:
the key (code, or id) each command named, and the ``target_id`` and ``code`` its result reported
(X-3). So a customer created in accounting, sent to CRM (CUS-6) and edited there is one record, found
by ``KH0001``, by its accounting id or by its CRM id.

Each command's outcome is joined from ``results.*`` exactly as the dashboard's record page joins it
(``ops.dashboard.health.SyncHealth``): ``applied`` / ``duplicate``, ``rejected`` or ``failed`` with
the system's message, ``pending`` while no result came back; ``retried`` when the connector needed
more than one attempt or the command came back more than once (replayed).

``find`` is pure (fed the decoded audit records and results).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.names import ENTITIES, System
from ops.dashboard.health import SyncHealth
from streams.core.decide import link_family


class ExplainError(RuntimeError):
    """The operator's mistake (an unknown tenant or entity) or a broker that cannot be read; one line."""


def entities() -> list[str]:
    return sorted({entity for names in ENTITIES.values() for entity in names})


@dataclass(frozen=True)
class Outcome:
    """What became of one command of an audit record."""

    command: dict[str, Any]
    status: str  # applied, duplicate, rejected, failed, or pending (no result yet)
    error: str | None = None  # "<kind>: <the system's message>"
    target_id: str | None = None
    attempts: int = 0  # API calls of the last result (0: no result)
    results: int = 0  # results seen for this command id (more than one: replayed or re-sent)

    @property
    def retried(self) -> bool:
        return self.attempts > 1 or self.results > 1

    def as_json(self) -> dict[str, Any]:
        return {
            **self.command,
            "status": self.status,
            "error": self.error,
            "target_id": self.target_id,
            "attempts": self.attempts,
            "retried": self.retried,
        }


@dataclass(frozen=True)
class Change:
    """One audit record of the record (or, ``via`` another entity, a change that wrote to it)."""

    audit: dict[str, Any]
    outcomes: list[Outcome]
    via: str | None = None  # the entity of a change of another record that wrote to this one (SO-9 …)

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.audit.items() if k != "commands"},
            "via": self.via,
            "commands": [o.as_json() for o in self.outcomes],
        }


@dataclass
class Explanation:
    tenant: str
    entity: str
    query: str
    records: list[tuple[str, str]] = field(default_factory=list)  # (system, record id) whose trail this is
    identifiers: list[str] = field(default_factory=list)  # every code and id the record is known by
    changes: list[Change] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "entity": self.entity,
            "query": self.query,
            "records": [{"system": s, "record_id": r} for s, r in self.records],
            "identifiers": self.identifiers,
            "changes": [change.as_json() for change in self.changes],
        }


class _Results:
    """The results of one tenant, joined to command ids by ``SyncHealth`` (as on the dashboard)."""

    def __init__(self, results: Iterable[dict[str, Any]]) -> None:
        self.health = SyncHealth()
        self.count: dict[str, int] = {}
        self.last: dict[str, dict[str, Any]] = {}
        for result in results:
            command_id = str(result.get("command_id", ""))
            self.health.result(result)
            self.count[command_id] = self.count.get(command_id, 0) + 1
            self.last[command_id] = result

    def outcome(self, command: dict[str, Any]) -> Outcome:
        command_id = str(command.get("command_id", ""))
        known = self.health.command(command_id)
        if known is None or known.status is None or command_id not in self.last:
            return Outcome(command, "pending")
        last = self.last[command_id]
        return Outcome(
            command,
            known.status,
            error=known.error,
            target_id=str(last["target_id"]) if last.get("target_id") else None,
            attempts=int(last.get("attempts") or 1),
            results=self.count[command_id],
        )


def _family(system: Any, entity: Any) -> str:
    try:
        return link_family(System(str(system)), str(entity))
    except ValueError:
        return str(entity)


def find(
    tenant: str,
    entity: str,
    identifier: str,
    audits: Iterable[dict[str, Any]],
    results: Iterable[dict[str, Any]],
    also: Iterable[str] = (),
) -> Explanation:
    """The trail of ``entity`` ``identifier`` (a code or either system's id) among one tenant's audit
    records and results; ``also``: ids the record is known to have (its change events named them)."""
    joined = _Results(results)
    family = link_family(System.ACCT, entity)  # its family: an acct contract is a CRM sale_order
    own: dict[tuple[str, str], list[dict[str, Any]]] = {}  # (system, record id) -> its audit records
    others: list[dict[str, Any]] = []
    for audit in audits:
        if audit.get("tenant") != tenant:
            continue
        if _family(audit.get("system"), audit.get("entity")) == family:
            own.setdefault((str(audit.get("system")), str(audit.get("record_id"))), []).append(audit)
        else:
            others.append(audit)

    def writes_to_family(command: dict[str, Any]) -> bool:
        return _family(command.get("target"), command.get("entity")) == family

    def names(command: dict[str, Any]) -> set[str]:
        """The identifiers of the target record a command names: its key, and its result's id and code."""
        found = {str(command.get("key") or "")}
        last = joined.last.get(str(command.get("command_id", "")))
        if last:
            found |= {str(last.get("target_id") or ""), str(last.get("code") or "")}
        return found - {""}

    def known_by(record: tuple[str, str], trail: list[dict[str, Any]]) -> set[str]:
        ids = {record[1]}
        for audit in trail:
            for command in audit.get("commands") or []:
                if writes_to_family(command):
                    ids |= names(command)
        return ids

    identifiers = {identifier, *also}
    matched: set[tuple[str, str]] = set()
    grown = True
    while grown:  # the identifiers join records to records until nothing new is learned
        grown = False
        for record, trail in own.items():
            if record in matched:
                continue
            ids = known_by(record, trail)
            if ids & identifiers:
                matched.add(record)
                identifiers |= ids
                grown = True

    changes = [
        Change(audit, [joined.outcome(c) for c in audit.get("commands") or []])
        for record in matched
        for audit in own[record]
    ]
    for audit in others:  # a change of another record that wrote to this one (a voucher's SO-9, …)
        commands = [c for c in audit.get("commands") or [] if writes_to_family(c) and names(c) & identifiers]
        if commands:
            changes.append(Change(audit, [joined.outcome(c) for c in commands], via=str(audit.get("entity"))))
    changes.sort(key=lambda change: int(change.audit.get("ts_ms") or 0))
    return Explanation(tenant, entity, identifier, sorted(matched), sorted(identifiers), changes)


def _outcome_text(outcome: Outcome) -> str:
    text = outcome.status
    if outcome.status in ("rejected", "failed") and outcome.error:
        text += f": {outcome.error}"
    if outcome.target_id and outcome.status in ("applied", "duplicate"):
        text += f" (id {outcome.target_id})"
    if outcome.retried:
        text += f", retried ({outcome.attempts} attempt(s), {outcome.results} result(s))"
    return text
