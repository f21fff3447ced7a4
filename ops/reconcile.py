"""``lienthong reconcile``: compare a tenant's linked records in CRM and accounting, and repair drift.

Both systems are read through the connectors' API clients (``amis/crm_client.py``,
``amis/acct_client.py``) with the connectors' credentials, and mapped to the contract's names
by their mapping tables. What can be compared is what both public APIs can list: customers and
products (and, against the sandboxes, product categories). Accounting documents (orders, vouchers,
receipts) come back from ACT only through callbacks, so they are not reconciled here.

**Linked records** are paired as the processor links them (X-3, ``docs/state.md``): an accounting
record that carries ``crm_id`` is paired with that CRM record, else records are paired by business
code.

**Which fields** are compared is the rule table's: the rule that carries an update of the entity
from the *source* system to the other one (``--source``, accounting by default: customers are
created there, CUS-1/CUS-6) says which fields travel (``mapped_fields`` of ``streams.core.commands``,
renames and value maps included); only fields the target's API can hold are compared.

**Repair** builds, for each drifted record, the command that rule would send, with the core's
``build_command``, and writes it to ``commands.<target>`` (the connector applies it as any other)
with an audit record on ``audit.sync``. The command's cause (its ``event_id``) is a digest of the
tenant, the record, the fields to write and the target record's version (``modified_date``), so
running ``--repair`` again before the connector applied it sends the same ``command_id`` (the
connector answers ``duplicate``), and once it is applied there is no drift and nothing is sent.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from amis import acct_mapping, crm_mapping
from amis.acct_client import ActClient
from amis.credentials import acct_app_id, acct_credentials, crm_credentials
from amis.crm_client import CrmClient, listed_as_deleted
from amis.errors import ProtocolError, Refused, Transient
from amis.mapping import RecordMap
from amis.settings import AmisSettings
from common.names import AUDIT, System, commands_topic
from common.settings import KafkaSettings
from streams.core.commands import audit_record, build_command, mapped_fields
from streams.core.contract import Action, AuditRecord, ChangeEvent, Command, CommandKey, Op, dumps
from streams.core.rules import Effect, Rule, RuleBook, load_rules

LISTED_ENTITIES = ("customer", "product")  # what both public APIs list
SANDBOX_ENTITIES = ("product_category",)  # listed by the sandboxes only (extensions)


class ReconcileError(RuntimeError):
    """A user's mistake or an unreachable system; the message says what to do."""


@dataclass(frozen=True)
class Side:
    """One record as a system shows it, in the contract's names; ``version`` is its ``modified_date``."""

    record: dict[str, Any]
    version: str

    @property
    def id(self) -> str:
        return str(self.record.get("id") or "")

    @property
    def code(self) -> str:
        return str(self.record.get("code") or "")


@dataclass(frozen=True)
class Drift:
    entity: str
    code: str
    kind: str  # "differs", "missing_in_crm", "missing_in_acct"
    field: str = ""
    crm: Any = None
    acct: Any = None
    rule: str = ""  # the rule a repair follows ("" when none can repair it)
    note: str = ""


@dataclass
class Report:
    tenant: str
    source: System
    compared: dict[str, int] = field(default_factory=dict)  # entity -> linked pairs compared
    drift: list[Drift] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def same(a: Any, b: Any) -> bool:
    """Equal as the contract means it: empty is empty, numbers and decimal strings by value."""
    if _empty(a) and _empty(b):
        return True
    if a == b:
        return True
    return str(a) == str(b)


def repair_rule(rules: RuleBook, entity: str, source: System) -> Rule | None:
    """The rule that carries an update of ``entity`` from ``source`` to the other system."""
    target = System.CRM if source is System.ACCT else System.ACCT
    for rule in rules.rules:
        if (
            rule.effect is Effect.WRITE
            and rule.source is source
            and rule.entity == entity
            and rule.target is target
            and rule.target_entity == entity
            and Action.UPDATE in rule.actions
        ):
            return rule
    return None


def target_map(system: System, entity: str) -> RecordMap:
    if system is System.CRM:
        return crm_mapping.RESOURCES[entity].record
    return acct_mapping.DICTIONARIES[entity].record


def compared_fields(rule: Rule, record: dict[str, Any], source: System) -> dict[str, Any]:
    """What ``rule`` writes for ``record``, as the target's API will give it back."""
    write = rule.write_target()
    fields = mapped_fields(rule, write, Action.UPDATE, record, source)
    shape = target_map(write.system, write.entity)
    kept = {name: value for name, value in fields.items() if shape.field(name) is not None and name != "id"}
    return shape.normalize(kept)


def cause_id(tenant: str, entity: str, source: Side, target: Side | None, fields: dict[str, Any], rule: str) -> str:
    digest = hashlib.sha256(
        orjson.dumps(
            [
                tenant,
                entity,
                rule,
                source.id,
                source.code,
                target.id if target else None,
                target.version if target else None,
                fields,
            ],
            option=orjson.OPT_SORT_KEYS,
        )
    ).hexdigest()
    return f"reconcile-{digest[:40]}"


def _pair_code(pair: tuple[Side | None, Side | None]) -> str:
    crm_side, acct_side = pair
    side = acct_side or crm_side
    return side.code if side is not None else ""


def compare(
    tenant: str,
    entity: str,
    crm: list[Side],
    acct: list[Side],
    *,
    source: System,
    rules: RuleBook,
    now_ms: int,
) -> tuple[int, list[Drift], list[Command], list[AuditRecord]]:
    """Pair the records, compare what the rule from ``source`` writes, and the commands that repair it."""
    crm_by_id = {side.id: side for side in crm if side.id}
    crm_by_code = {side.code: side for side in crm if side.code}
    paired_crm: set[str] = set()
    pairs: list[tuple[Side | None, Side | None]] = []
    for record in acct:
        crm_id = str(record.record.get("crm_id") or "")
        match = crm_by_id.get(crm_id) if crm_id else None
        match = match or crm_by_code.get(record.code)
        if match is not None:
            paired_crm.add(match.id)
        pairs.append((match, record))
    pairs += [(side, None) for side in crm if side.id not in paired_crm]

    rule = repair_rule(rules, entity, source)
    target = System.CRM if source is System.ACCT else System.ACCT
    drift: list[Drift] = []
    commands: list[Command] = []
    audits: list[AuditRecord] = []
    compared = 0
    for crm_side, acct_side in sorted(pairs, key=_pair_code):
        from_side = acct_side if source is System.ACCT else crm_side
        to_side = crm_side if source is System.ACCT else acct_side
        code = _pair_code((crm_side, acct_side))
        if from_side is None:
            missing = f"missing_in_{source.value}"
            drift.append(Drift(entity, code, missing, note=f"only in {target.value}; {source.value} is the source"))
            continue
        if rule is None:
            if to_side is None:
                drift.append(Drift(entity, code, f"missing_in_{target.value}", note="no rule carries it"))
            continue
        fields = compared_fields(rule, from_side.record, source)
        if to_side is None:
            repairable = rule.write_target().op is Op.UPSERT and not rule.requires_link
            drift.append(
                Drift(
                    entity,
                    code,
                    f"missing_in_{target.value}",
                    rule=rule.id if repairable else "",
                    note="" if repairable else f"{rule.id} updates linked records only",
                )
            )
            if not repairable:
                continue
            differing = sorted(fields)
        else:
            compared += 1
            differing = [name for name, value in sorted(fields.items()) if not same(value, to_side.record.get(name))]
            for name in differing:
                values = {source: fields[name], target: to_side.record.get(name)}
                drift.append(Drift(entity, code, "differs", name, values[System.CRM], values[System.ACCT], rule.id))
        if not differing:
            continue
        write = rule.write_target()
        event = ChangeEvent(
            schema_version=1,
            event_id=cause_id(tenant, entity, from_side, to_side, fields, rule.id),
            tenant=tenant,
            system=source,
            entity=entity,
            op="u",
            action=Action.UPDATE,
            origin="user",
            ts_ms=now_ms,
            after=from_side.record,
        )
        command = build_command(
            rule,
            write,
            event=event,
            key=CommandKey(id=to_side.id if to_side else None, code=from_side.code or None),
            fields=mapped_fields(rule, write, Action.UPDATE, from_side.record, source),
            now_ms=now_ms,
        )
        commands.append(command)
        audits.append(audit_record(event, Action.UPDATE, rules=[rule.id], commands=[command], notes=[], now_ms=now_ms))
    return compared, drift, commands, audits


# --- reading the systems -------------------------------------------------------------------------


def side(record: RecordMap, row: dict[str, Any]) -> Side:
    """A listed row in the contract's names, versioned by its ``modified_date``."""
    return Side(record.from_wire(row), str(row.get("modified_date") or ""))


async def read_crm(client: CrmClient, tenant: str, entity: str) -> list[Side]:
    spec = crm_mapping.RESOURCES[entity]
    # a row still listed as deleted (is_deleted) is not a record CRM has
    return [
        side(spec.record, row) async for row in client.every_row(tenant, spec.resource) if not listed_as_deleted(row)
    ]


async def read_acct(client: ActClient, tenant: str, entity: str) -> list[Side]:
    spec = acct_mapping.DICTIONARIES[entity]
    rows = client.every_dictionary_row(tenant, spec.data_type)
    return [side(spec.record, row) async for row in rows if spec.holds(row)]


def check_credentials(amis: AmisSettings, tenant: str) -> None:
    crm, acct = crm_credentials(amis), acct_credentials(amis)
    missing = [
        name
        for name, known in (("LIENTHONG_CRM_CREDENTIALS", crm), ("LIENTHONG_ACCT_CREDENTIALS", acct))
        if tenant not in known
    ]
    if missing:
        known = sorted(set(crm) | set(acct))
        raise ReconcileError(
            f"unknown tenant {tenant!r}: it has no credentials in {' and '.join(missing)} "
            f"(tenants with credentials: {', '.join(known) or 'none'}); add them (README, 'Credentials')"
        )
    if not acct_app_id(amis):
        raise ReconcileError("LIENTHONG_ACCT_APP_ID is not set: the accounting API needs the integration's app_id")


async def reconcile(
    amis: AmisSettings,
    tenant: str,
    *,
    entities: tuple[str, ...] = LISTED_ENTITIES,
    source: System = System.ACCT,
    rules: RuleBook | None = None,
    timeout: float = 10.0,
) -> Report:
    """Read both systems for ``tenant`` and compare; the report holds the drift and the repairs."""
    check_credentials(amis, tenant)
    listed = LISTED_ENTITIES + SANDBOX_ENTITIES
    unknown = [e for e in entities if e not in listed]
    if unknown:
        raise ReconcileError(
            f"cannot reconcile {', '.join(unknown)}: only {', '.join(listed)} are listed by both "
            "systems' APIs (accounting documents come back only by callback)"
        )
    rules = rules or load_rules()
    report = Report(tenant, source)
    now_ms = int(time.time() * 1000)
    async with aiohttp.ClientSession() as session:
        crm = CrmClient(amis.crm_url.rstrip("/") + "/api/v2", session, crm_credentials(amis), timeout=timeout)
        acct = ActClient(amis.acct_url, session, acct_app_id(amis), acct_credentials(amis), timeout=timeout)
        for entity in entities:
            try:
                crm_sides = await read_crm(crm, tenant, entity)
            except (Transient, Refused, ProtocolError) as exc:
                raise ReconcileError(f"could not read CRM {entity}s of {tenant} at {amis.crm_url}: {exc}") from None
            try:
                acct_sides = await read_acct(acct, tenant, entity)
            except (Transient, Refused, ProtocolError) as exc:
                raise ReconcileError(
                    f"could not read accounting {entity}s of {tenant} at {amis.acct_url}: {exc}"
                ) from None
            compared, drift, commands, audits = compare(
                tenant, entity, crm_sides, acct_sides, source=source, rules=rules, now_ms=now_ms
            )
            report.compared[entity] = compared
            report.drift += drift
            report.commands += commands
            report.audits += audits
    return report


def publish_repairs(kafka: KafkaSettings, report: Report, timeout: float = 30.0) -> int:
    """Write the report's commands to ``commands.<target>`` and their audit records; returns how many."""
    from confluent_kafka import KafkaException

    if not report.commands:
        return 0
    from ops.lag import LagError
    from ops.publishing import Publisher

    audit_topic = kafka.topic_prefix + AUDIT
    try:
        publisher = Publisher(
            kafka, [audit_topic, *{kafka.topic_prefix + commands_topic(c.target) for c in report.commands}]
        )
    except LagError as exc:
        raise ReconcileError(str(exc)) from None
    try:
        for command in report.commands:
            publisher.produce(
                kafka.topic_prefix + commands_topic(command.target),
                command.message_key.encode(),
                dumps(command),
            )
        for audit in report.audits:
            publisher.produce(audit_topic, audit.message_key.encode(), dumps(audit))
    except KafkaException as exc:
        raise ReconcileError(f"could not write the repairs: {exc}") from None
    problem = publisher.unacknowledged(timeout)
    if problem is not None:
        raise ReconcileError(
            f"the broker at {kafka.bootstrap_servers} did not take the repairs "
            f"({problem}): is it running (lienthong kafka status) and were the "
            "topics created (lienthong topics create)?"
        )
    return len(report.commands)
