"""The one interpreter of the rule table: ``decide(event, state) -> Decision``.

Pure: it reads the processor's current state through the ``State`` protocol (faust tables in the
worker, a plain in-memory fake in tests) and returns the commands to send, the audit record and the
state updates the agent must apply. It sends nothing and writes nothing itself.

What makes a rule special is a field of the rule (``streams.core.rules``): its effect, condition,
``requires_link``, ``only_fields``, ``set_fields``, ``rename``, ``dependencies`` (X-4). Commands and
audit records are built in ``streams.core.commands``, here and for the derived rules
(``streams.core.aggregates``) alike; the action an event means is read in ``streams.core.transitions``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.names import System
from streams.core.commands import audit_record, build_command, command_key_text, copied, mapped_fields
from streams.core.contract import (
    Action,
    AuditNote,
    AuditRecord,
    ChangeEvent,
    Command,
    CommandKey,
    Note,
    Op,
    named,
)
from streams.core.errors import BadInput
from streams.core.rules import Effect, Rule, RuleBook, WriteTarget
from streams.core.sync_settings import SyncSettings
from streams.core.transitions import derive_action


def link_family(system: System, entity: str) -> str:
    """Records linked across systems share a family: an acct contract is the CRM order's counterpart."""
    if system is System.ACCT and entity == "contract":
        return "sale_order"
    return entity


@dataclass(frozen=True, slots=True)
class Written:
    """What a command last wrote to one target record (X-2), and the event that caused it."""

    fields: dict[str, Any]
    event_id: str
    command_id: str


class State(Protocol):
    """What ``decide`` may read. Implemented over faust tables (streams/tables) and by test fakes."""

    def order_target(self, tenant: str) -> str: ...

    def sync_settings(self, tenant: str) -> SyncSettings:
        """The tenant's settings (``DEFAULT_SETTINGS`` when it has none): rules off, field mappings."""

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        """The id in ``system`` of the record linked to ``code`` / the counterpart ``other_id``, if known."""

    def last_written(self, key: str) -> Written | None: ...

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        """The last seen CRM record with this code (customers for CUS-10, products for X-4)."""

    def crm_customers(self, tenant: str) -> Iterable[dict[str, Any]]:
        """Every CRM customer the processor has seen for this tenant (CUS-10 without codes)."""


@dataclass(frozen=True, slots=True)
class LinkUpdate:
    tenant: str
    family: str
    code: str | None
    ids: dict[str, str]  # system -> id


@dataclass(frozen=True, slots=True)
class RecordUpdate:
    tenant: str
    entity: str
    code: str
    record: dict[str, Any] | None  # None: deleted


@dataclass(slots=True)
class Decision:
    commands: list[Command]
    audit: AuditRecord
    written: dict[str, Written] = field(default_factory=dict)  # command key -> what it wrote
    links: list[LinkUpdate] = field(default_factory=list)
    crm_records: list[RecordUpdate] = field(default_factory=list)
    # X-2 memory to drop: a user changed the record in its own system, so what this processor last
    # wrote there is no longer what it holds, and the next write must not be suppressed.
    forget_written: list[str] = field(default_factory=list)
    # The decision rests on another record's state being absent (no link, no CRM record known): what
    # a worker whose copy of that state lags another worker's writes may decide differently once it
    # has read them (streams.agents.pipeline decides such a batch again after catching up).
    rests_on_absence: bool = False


# --- action ------------------------------------------------------------------------------------


def resolve_action(event: ChangeEvent, rules: RuleBook) -> Action:
    """The action a rule is looked up by.

    An explicit ``action`` that no rule takes on this entity, and that is not a record's lifecycle
    action, is bad input (X-6): ``BadInput`` with kind ``unknown_action``. A transition *derived*
    from before/after that no rule of this system takes (acct ``not_recorded → proposed``, the
    connector's echo of a re-proposal) is an ordinary ``update``.
    """
    action = derive_action(event)
    if rules.accepts(event.system, event.entity, action):
        return action
    if event.action is None:
        return Action.UPDATE
    raise BadInput(
        "unknown_action",
        f"event {event.event_id!r}: action {action.value!r} does not apply to {event.system.value} "
        f"{event.entity} (no rule of the matrix takes it)",
        "/action",
    )


# --- the decision being built -----------------------------------------------------------------


class _Builder:
    """Collects the commands, notes and state updates of one decision."""

    __slots__ = (
        "action",
        "commands",
        "event",
        "notes",
        "now_ms",
        "rests_on_absence",
        "rule_book",
        "rules",
        "settings",
        "state",
        "written",
    )

    def __init__(self, event: ChangeEvent, action: Action, state: State, rules: RuleBook, now_ms: int) -> None:
        self.event = event
        self.rule_book = rules
        self.action = action
        self.state = state
        self.now_ms = now_ms
        self.commands: list[Command] = []
        self.written: dict[str, Written] = {}
        self.notes: list[AuditNote] = []
        self.rules: list[str] = []
        self.rests_on_absence = False  # Decision.rests_on_absence
        self.settings = state.sync_settings(event.tenant)

    def note(self, tag: Note, rule: str | None, text: str, *, first: bool = False) -> None:
        """Say why; ``first`` for the main reason of an outcome decided after other notes were made."""
        self.notes.insert(0 if first else len(self.notes), AuditNote(tag=tag, rule=rule, text=text))

    def fields(self, rule: Rule, write: WriteTarget, record: dict[str, Any]) -> dict[str, Any]:
        """What ``rule`` writes of ``record``: the mapped fields, then the tenant's own field mappings."""
        fields = mapped_fields(rule, write, self.action, record, self.event.system)
        return self.with_mappings(fields, rule, record, self.event.system, self.event.entity)

    def with_mappings(
        self, fields: dict[str, Any], rule: Rule, record: dict[str, Any], system: System, entity: str
    ) -> dict[str, Any]:
        """``fields`` and the values of the tenant's field mappings from ``record`` (a ``system`` ``entity``
        record) that ``rule`` writes; a value a mapping cannot convert is left out and noted."""
        mappings = self.settings.mappings_from(system, entity) if self.settings.field_mappings else ()
        if not mappings:
            return fields
        fields = dict(fields)
        for mapping in mappings:
            raw = mapping.value if mapping.value is not None else record.get(mapping.source_field or "")
            value, problem = mapping.convert(raw)
            if problem is not None:
                self.note(
                    Note.FIELD_NOT_MAPPED,
                    rule.id,
                    f"{rule.id}: field mapping {mapping.describe()} not applied: {problem}",
                )
            elif value is not None:
                fields[mapping.target_field] = value
        return fields

    def is_off(self, rule: Rule) -> bool:
        return bool(self.settings.rules_off) and self.settings.is_off(rule.id)

    def target_key(self, write: WriteTarget, record: dict[str, Any], code: str | None) -> CommandKey:
        event = self.event
        target_id: str | None = None
        if write.system is System.CRM and event.system is System.ACCT and record.get("crm_id"):
            target_id = str(record["crm_id"])
        elif write.system is not event.system:
            target_id = self.state.linked_id(
                event.tenant,
                write.system,
                link_family(write.system, write.entity),
                code=code,
                other_id=str(record.get("id") or "") or None,
            )
        return CommandKey(id=target_id, code=code)

    def emit(
        self,
        rule: Rule,
        *,
        fields: dict[str, Any],
        key: CommandKey,
        op: Op | None = None,
        source_id: str | None = None,
        depends_on: list[str] | None = None,
        cause: str | None = None,
        check_noop: bool = True,
    ) -> Command | None:
        """Build one command, unless X-2 finds it writes nothing new. Returns the command or None."""
        write = rule.write_target()
        op = op or write.op
        event = self.event
        store_key = command_key_text(event.tenant, write.system, write.entity, key)
        previous = self.state.last_written(store_key) if check_noop else None
        if (
            previous is not None
            and op is not Op.DELETE
            and previous.event_id != event.event_id  # a replay of the same event re-sends (same id)
            and all(previous.fields.get(k) == v for k, v in fields.items())
        ):
            self.note(
                Note.UNCHANGED,
                rule.id,
                f"X-2: {rule.id} would write nothing new to {write.system.value} {write.entity} {key.code or key.id}",
            )
            return None
        command = build_command(
            rule,
            write,
            event=event,
            key=key,
            fields=fields,
            now_ms=self.now_ms,
            op=op,
            source_id=source_id,
            cause=cause,
            depends_on=depends_on,
        )
        merged = dict(previous.fields) if previous and op is not Op.DELETE else {}
        merged.update(fields)
        self.written[store_key] = Written(fields=merged, event_id=event.event_id, command_id=command.command_id)
        self.commands.append(command)
        return command


# --- the interpreter ---------------------------------------------------------------------------


def decide(event: ChangeEvent, state: State, rules: RuleBook, *, now_ms: int) -> Decision:
    """What one change event leads to: commands, the audit record, and what to remember.

    Raises ``BadInput`` for an action that does not apply (see ``resolve_action``); the caller
    dead-letters the event.
    """
    action = resolve_action(event, rules)
    order_target = state.order_target(event.tenant)
    builder = _Builder(event, action, state, rules, now_ms)
    links, crm_records = _state_updates(event)
    rule = rules.match(event.system, event.entity, action, order_target)

    if rule is None:
        scope = f" (order_target={order_target})" if event.entity in ("sale_order", "contract") else ""
        builder.note(
            Note.NO_RULE,
            None,
            f"no rule of the matrix for {event.system.value} {event.entity} {action.value}{scope}: none",
        )
    else:
        builder.rules.append(rule.id)
        if event.origin == "sync":
            builder.rules.append("X-1")
            builder.note(
                Note.ECHO, rule.id, f"X-1: written by this integration (origin = sync); {rule.id} sends nothing back"
            )
        elif rule.effect is Effect.NONE:
            builder.note(Note.RULE_NONE, rule.id, f"{rule.id}: {rule.label_en}")
        elif rule.effect is Effect.DERIVED:
            builder.note(Note.DERIVED, rule.id, f"{rule.id}: derived from aggregate tables")
        elif builder.is_off(rule):
            builder.note(
                Note.SWITCHED_OFF,
                rule.id,
                f"{rule.id}: switched off in the tenant's settings (revision {builder.settings.revision}): none",
            )
        elif rule.when is not None and not rule.when.holds(event.record):
            builder.note(
                Note.CONDITION,
                rule.id,
                f"{rule.id}: condition {rule.when.describe()} does not hold "
                f"({rule.when.field} = {event.record.get(rule.when.field)!r}): none",
            )
        else:
            _apply(rule, builder)

    if event.system is System.CRM and event.origin == "user" and event.op != "d":
        _complete_dependencies(builder)
    elif event.origin == "sync" and event.op != "d":
        _complete_echoed_dependencies(builder)
    if any(note.tag is Note.UNCHANGED for note in builder.notes):
        builder.rules.append("X-2")
    if any(command.depends_on for command in builder.commands):
        builder.rules.append("X-4")
    audit = audit_record(
        event,
        action,
        rules=builder.rules,
        commands=builder.commands,
        notes=builder.notes,
        now_ms=now_ms,
        settings_revision=builder.settings.revision,
    )
    forget = []
    if event.origin == "user":
        code = named(event.record.get("code"))
        if code is not None:
            forget.append(command_key_text(event.tenant, event.system, event.entity, CommandKey(code=code)))
        forget.append(command_key_text(event.tenant, event.system, event.entity, CommandKey(id=event.record_id)))
    return Decision(
        commands=builder.commands,
        audit=audit,
        written=builder.written,
        links=links,
        crm_records=crm_records,
        forget_written=[k for k in forget if k not in builder.written],
        rests_on_absence=builder.rests_on_absence,
    )


def _state_updates(event: ChangeEvent) -> tuple[list[LinkUpdate], list[RecordUpdate]]:
    """What every event teaches the processor, whatever its rule: links (X-3) and CRM records."""
    record = event.record
    code = named(record.get("code"))
    links: list[LinkUpdate] = []
    if event.action is not Action.PULL and event.op != "d" and event.record_id:
        family = link_family(event.system, event.entity)
        ids = {event.system.value: event.record_id}
        crm_id = named(record.get("crm_id"))
        if event.system is System.ACCT and crm_id is not None:
            ids[System.CRM.value] = crm_id
        links.append(LinkUpdate(tenant=event.tenant, family=family, code=code, ids=ids))
    crm_records: list[RecordUpdate] = []
    if event.system is System.CRM and event.entity in ("customer", "product") and code is not None:
        crm_records.append(RecordUpdate(event.tenant, event.entity, code, None if event.op == "d" else dict(record)))
    return links, crm_records


def _apply(rule: Rule, builder: _Builder) -> None:
    """Run a rule whose condition holds."""
    if rule.effect is Effect.PULL:
        _pull(rule, builder)
        return
    if rule.effect is Effect.SPLIT_POLICY:
        _split_policy(rule, builder)
        return
    if rule.effect is Effect.REVERT_POLICY:
        _revert_policy(rule, builder)
        return

    event, record = builder.event, builder.event.record
    write = rule.write_target()
    code = str(record["code"]) if record.get("code") is not None else None
    key = builder.target_key(write, record, code)
    if rule.requires_link and not key.id:
        builder.rests_on_absence = True
        builder.note(
            Note.NOT_LINKED,
            rule.id,
            f"{rule.id}: {event.entity} {code or event.record_id} is not linked to {write.system.value}: none",
        )
        return
    if not key.id and not key.code:
        builder.note(
            Note.UNADDRESSABLE,
            rule.id,
            f"{rule.id}: cannot address the {write.system.value} {write.entity}: the record has "
            f"neither a code nor a link: none",
        )
        return

    if event.op == "r" and _target_has_it(builder, write, key):
        # A snapshot (op r: lienthong backfill, a Debezium snapshot) is harmless to repeat: it sends
        # only what the target lacks. A record the target already has (linked by X-3, or already
        # sent) is left as it is; drift between the two is reconcile's to find and repair.
        builder.note(
            Note.UNCHANGED,
            rule.id,
            f"X-2: {rule.id}: snapshot (op r) of {event.entity} {code or event.record_id}: "
            f"{write.system.value} {write.entity} {key.code or key.id} already has it: none",
        )
        return

    if rule.effect is Effect.CANCEL_REVENUE:
        total = record.get("total_amount")
        if total is None:
            builder.note(Note.NO_TOTAL, rule.id, f"{rule.id}: the order has no total_amount to cancel: none")
            return
        digits = str(total).lstrip("-")
        # the negation of the total; a total of 0 ("0", "-0", "0.00") cancels 0, never shown "-0"
        amount = digits if str(total).startswith("-") or not digits.strip("0.") else f"-{digits}"
        fields: dict[str, Any] = {
            "revenue_entries": [{"id": f"cancel:{event.event_id}", "amount": amount, "status": "proposed"}]
        }
        builder.emit(rule, fields=fields, key=key)
        return

    fields = builder.fields(rule, write, record)
    if (
        builder.action in (Action.UPDATE, Action.MERGE)
        and event.before is not None
        and builder.fields(rule, write, event.before) == fields
    ):
        # X-2 (and CT-9's "any other changed field: none"): the change touched nothing this rule writes.
        # Status actions are left out: for them the action itself is the change.
        builder.note(Note.UNCHANGED, rule.id, f"X-2: {rule.id}: none of the fields it writes changed: none")
        return
    if rule.effect is Effect.MERGE and event.merged_ids:
        builder.note(
            Note.MERGE_ABSORBED,
            rule.id,
            f"{rule.id}: absorbed records {', '.join(event.merged_ids)} are not deleted in acct",
        )
    depends_on = _dependencies(rule, builder) if rule.dependencies else []
    if write.op is Op.DELETE:
        fields = {}
    builder.emit(rule, fields=fields, key=key, depends_on=depends_on)


def _target_has_it(builder: _Builder, write: WriteTarget, key: CommandKey) -> bool:
    """The target record is known to exist: linked (X-3), or a command was already sent to it (X-2)."""
    if key.id:
        return True
    store_key = command_key_text(builder.event.tenant, write.system, write.entity, key)
    return builder.state.last_written(store_key) is not None


def _dependencies(rule: Rule, builder: _Builder) -> list[str]:
    """X-4: the records a document names (``rule.dependencies``) that the target does not have yet are
    sent first, by the rule each dependency names; returns the ids the document's command waits for."""
    event, record, tenant = builder.event, builder.event.record, builder.event.tenant
    ids: list[str] = []
    for dependency in rule.dependencies:
        sender = builder.rule_book.by_id(dependency.rule)
        write = sender.write_target()
        if builder.is_off(sender):
            codes = dependency.codes(record)
            if codes:
                builder.note(
                    Note.SWITCHED_OFF,
                    sender.id,
                    f"X-4: {sender.id} is switched off in the tenant's settings: {dependency.entity} "
                    f"{', '.join(codes)} not sent first (the target is expected to have them)",
                )
            continue
        for code in dependency.codes(record):
            if builder.state.linked_id(tenant, write.system, dependency.entity, code=code, other_id=None):
                continue
            builder.rests_on_absence = True  # not in the target yet, as far as this worker knows
            known = builder.state.crm_record(tenant, dependency.entity, code)
            fields = copied(known or {"code": code})
            if known:
                fields = builder.with_mappings(fields, sender, known, System.CRM, dependency.entity)
            command = builder.emit(
                sender,
                fields=fields,
                key=CommandKey(id=None, code=code),
                source_id=str(known["id"]) if known and known.get("id") else code,
                cause=f"{event.event_id}/depends/{dependency.entity}/{code}",
            )
            if command is not None:
                ids.append(command.command_id)
                continue
            previous = builder.state.last_written(
                command_key_text(tenant, write.system, dependency.entity, CommandKey(code=code))
            )
            if previous is not None:
                ids.append(previous.command_id)  # already sent, not yet confirmed by a result: still a dependency
    return ids


def _complete_dependencies(builder: _Builder) -> None:
    """X-4, the other half: a document can name a CRM record the processor has not seen yet (its change
    is on another topic, and arrives later); the dependency then went out with its code only. When
    the record itself arrives, the rule that sent the dependency sends its fields, once: only while
    what was last written to the target is that code alone."""
    event = builder.event
    code = named(event.record.get("code"))
    if code is None:
        return
    for rule_id in builder.rule_book.dependency_senders.get(event.entity, ()):
        sender = builder.rule_book.by_id(rule_id)
        _send_dependency_fields(builder, sender, event.entity, code, event.record, source_id=event.record_id)


def _complete_echoed_dependencies(builder: _Builder) -> None:
    """X-4, a last chance: the document and its CRM record can be decided at the same moment on two
    workers, each before the other's tables reach it; the dependency then went out with its code
    only and the record's own change did not see it. When the target system's echo of that
    dependency arrives (capture reads back what the integration wrote, ``origin = sync``), both
    are known: the record's fields are sent then, once."""
    event = builder.event
    code = named(event.record.get("code"))
    if code is None:
        return
    for entity, sender in builder.rule_book.dependency_senders_to.get((event.system, event.entity), ()):
        record = builder.state.crm_record(event.tenant, entity, code)
        if record is not None:
            _send_dependency_fields(builder, sender, entity, code, record, source_id=named(record.get("id")))


def _send_dependency_fields(
    builder: _Builder, sender: Rule, entity: str, code: str, record: dict[str, Any], *, source_id: str | None
) -> None:
    """``sender`` sends ``record``'s fields to where it sent ``code`` alone, if that is still all it sent."""
    event = builder.event
    if builder.is_off(sender):
        return
    write = sender.write_target()
    key = CommandKey(id=None, code=code)
    store_key = command_key_text(event.tenant, write.system, write.entity, key)
    previous = builder.written.get(store_key) or builder.state.last_written(store_key)
    if previous is None or set(previous.fields) - {"code"}:
        return
    fields = builder.with_mappings(copied(record), sender, record, System.CRM, entity)
    command = builder.emit(
        sender,
        fields=fields,
        key=key,
        source_id=source_id,
        cause=f"{event.event_id}/completes/{code}",
    )
    if command is not None:
        builder.rules += [r for r in (sender.id, "X-4") if r not in builder.rules]
        builder.note(
            Note.DEPENDENCY_COMPLETED,
            sender.id,
            f"X-4: {entity} {code} went to {write.system.value} with its code only (named by a "
            f"document before the processor saw it); {sender.id} sends its fields now",
        )


def _pull(rule: Rule, builder: _Builder) -> None:
    """CUS-10: upsert the requested CRM customers (by codes, or every one not yet linked) into acct."""
    event, tenant, state = builder.event, builder.event.tenant, builder.state
    write = rule.write_target()
    codes = event.record.get("codes")
    customers: list[dict[str, Any]] = []
    if codes:
        missing = []
        for code in codes:
            known = state.crm_record(tenant, "customer", str(code))
            if known:
                customers.append(known)
            else:
                missing.append(str(code))
        if missing:
            builder.rests_on_absence = True
            builder.note(
                Note.PULL_UNKNOWN, rule.id, f"CUS-10: CRM customers not known to the processor: {', '.join(missing)}"
            )
    else:
        customers = [
            c
            for c in state.crm_customers(tenant)
            if c.get("code")
            and not state.linked_id(tenant, write.system, "customer", code=str(c["code"]), other_id=None)
        ]
        builder.rests_on_absence = True  # "every one not yet linked", and every one known
    for customer in sorted(customers, key=lambda c: str(c.get("code"))):
        code = str(customer["code"])
        acct_id = state.linked_id(tenant, write.system, "customer", code=code, other_id=str(customer.get("id") or ""))
        fields = builder.with_mappings(copied(customer), rule, customer, System.CRM, "customer")
        builder.emit(
            rule,
            fields=fields,
            key=CommandKey(id=acct_id, code=code),
            source_id=str(customer.get("id") or code),
            cause=f"{event.event_id}/pull/{code}",
        )
    if not builder.commands:
        builder.note(
            Note.NOTHING_TO_PULL,
            rule.id,
            "CUS-10: no CRM customer to pull" + (" (all linked already)" if not codes else ""),
            first=True,
        )


def _policy_copy_key(policy_code: str, category: str) -> str:
    return f"{policy_code}/{category}"


def _split_policy(rule: Rule, builder: _Builder) -> None:
    """PP-1: one read-only CRM policy per category, keyed ``<policy code>/<category code>``."""
    event, record = builder.event, builder.event.record
    write = rule.write_target()
    policy_code = str(record.get("code") or record.get("id"))
    categories = [str(c) for c in record.get("category_codes") or []]
    prices = [p for p in record.get("prices") or [] if isinstance(p, dict)]
    for category in categories:
        copy_code = _policy_copy_key(policy_code, category)
        fields = copied(record, leaving=frozenset({"category_codes", "prices"}))
        fields.update(
            code=copy_code,
            name=f"{record.get('name', policy_code)} / {category}",
            category_code=category,
            source_policy_code=policy_code,
            prices=[p for p in prices if str(p.get("category_code")) == category],
        )
        builder.emit(rule, fields=fields, key=CommandKey(id=None, code=copy_code))
    # The categories last split, remembered under the policy itself: a later update without
    # ``before`` (a snapshot, a replay) still deletes the copies of categories it no longer selects.
    index_key = f"{event.tenant}:{write.system.value}:price_policy_split:{policy_code}"
    remembered = builder.state.last_written(index_key)
    earlier = {str(c) for c in (event.before or {}).get("category_codes") or []}
    earlier |= {str(c) for c in (remembered.fields.get("category_codes") if remembered else None) or []}
    builder.written[index_key] = Written(fields={"category_codes": categories}, event_id=event.event_id, command_id="")
    for dropped in sorted(earlier - set(categories)):
        copy_code = _policy_copy_key(policy_code, dropped)
        builder.emit(rule, fields={}, key=CommandKey(id=None, code=copy_code), op=Op.DELETE)
    if not builder.commands:
        builder.note(
            Note.NO_CATEGORY, rule.id, "PP-1: the policy selects no category and dropped none: none", first=True
        )


def _revert_policy(rule: Rule, builder: _Builder) -> None:
    """PP-2: a CRM edit of a copy PP-1 wrote is answered by re-sending what acct says (a conflict)."""
    event, record = builder.event, builder.event.record
    write = rule.write_target()
    code = str(record.get("code") or "")
    key = CommandKey(id=str(record.get("id") or "") or None, code=code)
    memory_key = command_key_text(event.tenant, write.system, write.entity, CommandKey(code=code))
    previous = builder.state.last_written(memory_key)
    if previous is None:
        builder.note(
            Note.NOT_A_COPY, rule.id, f"PP-2: CRM price policy {code or event.record_id} is not a copy from acct: none"
        )
        return
    builder.note(
        Note.POLICY_CONFLICT, rule.id, f"PP-2 conflict: CRM edited read-only copy {code}; the acct version is re-sent"
    )
    builder.emit(rule, fields=previous.fields, key=key, check_noop=False)
    # The copy still holds what acct says; keep remembering it under its code.
    builder.written[memory_key] = previous
