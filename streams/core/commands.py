"""Building the commands a rule sends and the audit record of a decision: one place for both.

``decide()`` (``streams.core.decide``), the derived rules (``streams.core.aggregates``) and the
reconciliation's repairs (``ops.reconcile``) all build their commands and audit records here, so a
command's id, its fields and its audit read the same whoever sent it.
"""

from __future__ import annotations

import re
from typing import Any

from common.names import System
from streams.core.contract import (
    Action,
    AuditCommand,
    AuditNote,
    AuditRecord,
    ChangeEvent,
    Command,
    CommandKey,
    CommandSource,
    Op,
    command_id,
)
from streams.core.rules import Rule, WriteTarget

# Fields that name a record in its own system; never copied to the other system.
LOCAL_FIELDS = frozenset({"id", "crm_id"})
# A system's custom fields (CRM's ``custom_field<N>``): a company's own, they mean nothing in the other
# system under that name; only the company's field mappings (tenant settings) carry them across.
CUSTOM_FIELD = re.compile(r"custom_field[0-9]+")


def copied(record: dict[str, Any], *, leaving: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The fields of ``record`` a copy to the other system carries: all but its own ids, its custom
    fields and ``leaving``."""
    return {
        k: v for k, v in record.items() if k not in LOCAL_FIELDS and k not in leaving and not CUSTOM_FIELD.fullmatch(k)
    }


# acct entities that carry ``crm_id``: the CRM record they came from.
CRM_ID_CARRIERS = frozenset({"sale_order", "contract", "invoice", "quote"})

# Status values differ between the systems (spec "Status vocabularies"): a copy maps them. No rule
# copies an acct revenue_status to CRM (SO-8 and CT-10 set it: reject_revenue := rejected), so CRM
# has no entry for it.
VALUE_MAPS: dict[tuple[System, str], dict[str, str]] = {
    (System.ACCT, "revenue_status"): {"draft": "not_recorded", "rejected": "not_recorded"},
    # CRM orders have no "fully delivered" status; their delivery_status says it (CT-9, CT-11).
    (System.CRM, "status"): {"fully_delivered": "in_progress"},
}


def command_key_text(tenant: str, target: System, entity: str, key: CommandKey) -> str:
    """The key of the target record in the processor's memory (table ``written``)."""
    return f"{tenant}:{target.value}:{entity}:{key.code or key.id or ''}"


def build_command(
    rule: Rule,
    write: WriteTarget,
    *,
    event: ChangeEvent,
    key: CommandKey,
    fields: dict[str, Any],
    now_ms: int,
    op: Op | None = None,
    source_id: str | None = None,
    cause: str | None = None,
    depends_on: list[str] | None = None,
    record_key: str | None = None,
) -> Command:
    """The command a rule sends for an event. Its id is deterministic: the same cause (event, rule,
    target record, op) gives the same id, so a replay is recognised downstream. ``record_key`` names
    the target record in that id when the command key would not name it steadily."""
    op = op or write.op
    tenant = event.tenant
    return Command(
        command_id=command_id(
            tenant=tenant,
            event_id=cause or event.event_id,
            rule=rule.id,
            target=write.system.value,
            entity=write.entity,
            op=op.value,
            key=record_key or command_key_text(tenant, write.system, write.entity, key),
        ),
        tenant=tenant,
        target=write.system,
        entity=write.entity,
        op=op,
        key=key,
        source=CommandSource(
            system=event.system, entity=event.entity, id=source_id or event.record_id, event_id=event.event_id
        ),
        fields=fields,
        read_only=rule.read_only,
        rule=rule.id,
        depends_on=depends_on or [],
        ts_ms=now_ms,
    )


def audit_record(
    event: ChangeEvent,
    action: Action,
    *,
    rules: list[str],
    commands: list[Command],
    notes: list[AuditNote],
    now_ms: int,
    settings_revision: int = 0,
) -> AuditRecord:
    """The audit record of one decision: the rules involved, the commands, and why (``notes``)."""
    return AuditRecord(
        tenant=event.tenant,
        system=event.system,
        entity=event.entity,
        record_id=event.record_id,
        event_id=event.event_id,
        action=action.value,
        origin=event.origin,
        rule=rules[0] if rules else None,
        rules=list(dict.fromkeys(rules)),
        commands=[AuditCommand.of(command) for command in commands],
        reason="; ".join(note.text for note in notes) or None,
        notes=notes,
        settings_revision=settings_revision,
        ts_ms=now_ms,
    )


def _map_values(target: System, fields: dict[str, Any]) -> dict[str, Any]:
    mapped = fields
    for name, value in fields.items():
        table = VALUE_MAPS.get((target, name))
        if table and isinstance(value, str) and value in table:
            if mapped is fields:
                mapped = dict(fields)
            mapped[name] = table[value]
    return mapped


def mapped_fields(
    rule: Rule, write: WriteTarget, action: Action, record: dict[str, Any], source: System
) -> dict[str, Any]:
    """The fields a rule writes, in the target's canonical names and status vocabulary."""
    if rule.only_fields is None:
        fields = copied(record)
        if source is System.CRM and write.system is System.ACCT and write.entity in CRM_ID_CARRIERS:
            fields["crm_id"] = record.get("id")
    else:
        fields = {k: record[k] for k in rule.only_fields if k in record}
    fields = _map_values(write.system, fields)
    for old, new in rule.rename.items():
        if old in fields:
            fields[new] = fields.pop(old)
    extra = rule.set_fields.get(action)
    if extra:
        fields.update(extra)
    return fields
