"""The sync matrix's model: one ``Rule`` per row of the matrix (``docs/matrix.md`` renders it).

A rule says: when *source system* reports *action* on *entity* (and the condition holds), do
*effect* on the *target* system's *target entity* with these fields. The rows themselves are plain
data in ``streams.core.rule_table``; ``load_rules()`` validates them at start-up into a ``RuleBook``
and refuses to start with a message naming the faulty rule. ``decide()`` in ``streams.core.decide``
is the one interpreter.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.names import ENTITIES, System
from streams.core.contract import Action, Op
from streams.core.rule_table import RULE_TABLE

OrderTarget = Literal["sale_order", "contract"]
ORDER_TARGETS: tuple[OrderTarget, ...] = ("sale_order", "contract")


class Effect(StrEnum):
    NONE = "none"  # no command; the decision is audited
    WRITE = "write"  # one command to the target with the mapped fields
    PULL = "pull"  # CUS-10: upsert requested CRM customers into acct
    MERGE = "merge"  # CUS-5: the survivor's fields to its linked acct customer
    SPLIT_POLICY = "split_policy"  # PP-1: one CRM policy per category, stale copies deleted
    REVERT_POLICY = "revert_policy"  # PP-2: a CRM edit of a read-only copy is answered by the acct version
    CANCEL_REVENUE = "cancel_revenue"  # CT-7: a proposed negative line in the revenue-recognition table
    DERIVED = "derived"  # SO-9..SO-14, CT-11, CT-12: from aggregate tables (streams/tables)


# Actions every record has; one without a rule is audited as "none" (e.g. a category delete).
LIFECYCLE_ACTIONS = frozenset({Action.CREATE, Action.IMPORT, Action.CLONE, Action.UPDATE, Action.DELETE, Action.MERGE})
# Actions that feed the aggregates (SO-9..SO-14) rather than a rule of their own.
DERIVED_TRIGGERS: dict[tuple[System, str], frozenset[Action]] = {
    (System.ACCT, "sales_voucher"): frozenset({Action.ASSIGN_INVOICE_NO, Action.PUBLISH_EINVOICE}),
    # An issued e-invoice reports these too; its CRM request follows INV-6 (issue), not them.
    (System.ACCT, "invoice"): frozenset({Action.ASSIGN_INVOICE_NO, Action.PUBLISH_EINVOICE}),
}

# The values streams.core.aggregates.derive() computes for an order or contract.
DERIVED_VALUES = frozenset(
    {
        "delivered_quantities",
        "delivery_status",
        "receipted_amount",
        "remaining_receivable",
        "pay_status",
        "status",
        "invoicing_status",
        "invoiced_amount",
        "invoiced_date",
        "receipts",
    }
)


class Condition(BaseModel):
    """``record[field]`` must be one of ``values``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    field: str
    values: frozenset[str]

    def holds(self, record: dict[str, Any]) -> bool:
        return record.get(self.field) in self.values

    def describe(self) -> str:
        return f"{self.field} ∈ {{{', '.join(sorted(self.values))}}}"


class Dependency(BaseModel):
    """X-4: a record a document names that must exist in the target first, and the rule that sends it.

    ``code_field`` names the record by its business code: ``customer_code`` on the document, or
    ``lines[].product_code`` on each of its lines.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: str
    code_field: str = Field(pattern=r"^([a-z_]+\[\]\.)?[a-z_]+$")
    rule: str

    def codes(self, record: dict[str, Any]) -> list[str]:
        """The codes this dependency names in ``record``, in order, without repeats."""
        list_name, _, field = self.code_field.rpartition("[].")
        items = record.get(list_name) if list_name else [record]
        codes: list[str] = []
        for item in items if isinstance(items, list) else ():
            code = item.get(field) if isinstance(item, dict) else None
            if code and str(code) not in codes:
                codes.append(str(code))
        return codes


class DerivedExtra(BaseModel):
    """Values a derived rule writes besides its own when a derived value says so (SO-11's reset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: Condition
    fields: tuple[str, ...]


class WriteTarget(BaseModel):
    """Where a writing rule's commands go: the validated (target, target entity, op) of a rule."""

    model_config = ConfigDict(frozen=True)

    system: System
    entity: str
    op: Op


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^(CUS|CAT|PRD|PP|QUO|SO|CT|INV|X)-[0-9]+$")
    source: System
    entity: str
    actions: frozenset[Action]
    effect: Effect
    target: System | None = None
    target_entity: str | None = None
    op: Op | None = None
    order_target: OrderTarget | None = None  # SO-* only for sale_order tenants, CT-* for contract tenants
    when: Condition | None = None
    requires_link: bool = False  # CUS-3: only records already synced to the target
    only_fields: tuple[str, ...] | None = None  # CT-9 whitelist; None = every mapped field
    set_fields: dict[Action, dict[str, Any]] = Field(default_factory=dict)  # constants per action
    rename: dict[str, str] = Field(default_factory=dict)  # source field -> target field
    read_only: bool = False
    derives: tuple[str, ...] = ()  # DERIVED rules: the derived values (streams.core.aggregates) they write
    # DERIVED rules: more values written when a derived value says so (SO-11: the reset to 0 delivered)
    derives_also: tuple[DerivedExtra, ...] = ()
    # records of the document that must exist in the target first, sent by the named rules
    dependencies: tuple[Dependency, ...] = ()
    # Why a tenant cannot switch the rule off (streams.core.sync_settings); None: it can.
    locked: str | None = None
    label_vi: str
    label_en: str

    @cached_property
    def writes(self) -> WriteTarget | None:
        """Where the rule writes; None for a rule with effect none. Validated by ``load_rules``."""
        if self.target is None or self.target_entity is None or self.op is None:
            return None
        return WriteTarget(system=self.target, entity=self.target_entity, op=self.op)

    def write_target(self) -> WriteTarget:
        """``writes`` of a rule that must write; a rule table that got here without one is a bug."""
        target = self.writes
        if target is None:
            raise RuleTableError(f"rule {self.id}: effect {self.effect.value} needs target, target_entity and op")
        return target

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.entity not in ENTITIES[self.source]:
            raise ValueError(f"entity {self.entity!r} is not an entity of {self.source.value}")
        writes = self.effect is not Effect.NONE
        if self.effect is Effect.DERIVED:
            unknown_values = set(self.derives) - DERIVED_VALUES
            if not self.derives or unknown_values:
                raise ValueError(
                    f"a derived rule names the values it writes, from {sorted(DERIVED_VALUES)}; "
                    f"got {list(self.derives)}"
                )
        elif self.derives or self.derives_also:
            raise ValueError("only a derived rule has derives")
        for extra in self.derives_also:
            unknown_values = {extra.when.field, *extra.fields} - DERIVED_VALUES
            if unknown_values:
                raise ValueError(f"derives_also names values no rule derives: {sorted(unknown_values)}")
        if self.effect is Effect.DERIVED and self.when is not None and self.when.field not in self.derives:
            raise ValueError(
                f"a derived rule's condition reads one of its own values {list(self.derives)}, not {self.when.field!r}"
            )
        if self.dependencies:
            if self.effect is not Effect.WRITE or self.only_fields is not None or self.op is Op.DELETE:
                raise ValueError(
                    "only a rule that writes a whole document (effect write, every field) has dependencies"
                )
            for dependency in self.dependencies:
                if self.target is None or dependency.entity not in ENTITIES[self.target]:
                    raise ValueError(f"dependency {dependency.entity!r} is not an entity of the rule's target")
        if writes:
            if self.target is None or self.target_entity is None or self.op is None:
                raise ValueError(f"effect {self.effect.value} needs target, target_entity and op")
            if self.target_entity not in ENTITIES[self.target]:
                raise ValueError(f"target_entity {self.target_entity!r} is not an entity of {self.target.value}")
        elif self.effect is Effect.NONE and (self.target or self.op or self.set_fields or self.only_fields):
            raise ValueError("a rule with effect none writes nothing: no target, op, set_fields or only_fields")
        unknown = set(self.set_fields) - set(self.actions)
        if unknown:
            raise ValueError(f"set_fields for actions the rule does not take: {sorted(unknown)}")
        if not self.actions and self.effect is not Effect.DERIVED:
            raise ValueError("a rule needs at least one action")
        return self


class RuleTableError(ValueError):
    """The rule table is inconsistent; the message names the rule."""


class RuleBook:
    """The validated rule table, indexed once for lookup by (source, entity, action, order target)."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self._by_id = {rule.id: rule for rule in rules}
        self._actions: dict[tuple[System, str], frozenset[Action]] = {}
        self._match: dict[tuple[System, str, Action, str], Rule] = {}
        for rule in rules:
            scope = (rule.source, rule.entity)
            self._actions[scope] = self._actions.get(scope, frozenset()) | rule.actions
            for action in rule.actions:
                for order_target in ORDER_TARGETS if rule.order_target is None else (rule.order_target,):
                    self._match.setdefault((rule.source, rule.entity, action, order_target), rule)
        # for each entity a document may name as a dependency, the rules that send it
        senders: dict[str, list[str]] = {}
        for rule in rules:
            for dependency in rule.dependencies:
                if dependency.rule not in senders.setdefault(dependency.entity, []):
                    senders[dependency.entity].append(dependency.rule)
        self.dependency_senders: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in senders.items()}
        # ... and by where they send it (system, entity): (the dependency's entity, the sending rule)
        by_target: dict[tuple[System, str], list[tuple[str, Rule]]] = {}
        for entity, rule_ids in self.dependency_senders.items():
            for rule_id in rule_ids:
                sender = self._by_id[rule_id]
                write = sender.write_target()
                by_target.setdefault((write.system, write.entity), []).append((entity, sender))
        self.dependency_senders_to: dict[tuple[System, str], tuple[tuple[str, Rule], ...]] = {
            k: tuple(v) for k, v in by_target.items()
        }
        self.derived: dict[str, tuple[Rule, ...]] = {
            order_target: tuple(
                rule for rule in rules if rule.effect is Effect.DERIVED and rule.order_target in (None, order_target)
            )
            for order_target in ORDER_TARGETS
        }

    def __repr__(self) -> str:
        return f"RuleBook({len(self.rules)} rules: {self.rules[0].id} … {self.rules[-1].id})"

    def by_id(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def actions_for(self, source: System, entity: str) -> frozenset[Action]:
        """Every action some rule takes on this entity, whatever the tenant's order target."""
        return self._actions.get((source, entity), frozenset())

    def accepts(self, source: System, entity: str, action: Action) -> bool:
        """Whether ``action`` means something on this entity: a lifecycle action, one a rule takes, or
        one that feeds the aggregates."""
        return (
            action in LIFECYCLE_ACTIONS
            or action in self.actions_for(source, entity)
            or action in DERIVED_TRIGGERS.get((source, entity), ())
        )

    def match(self, source: System, entity: str, action: Action, order_target: str) -> Rule | None:
        return self._match.get((source, entity, action, order_target))


def load_rules(table: list[dict[str, Any]] | None = None) -> RuleBook:
    """Validate the rule table; raise RuleTableError naming the first faulty rule."""
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(RULE_TABLE if table is None else table):
        name = row.get("id", f"#{index + 1}")
        try:
            rule = Rule.model_validate(row)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(rule)"
            raise RuleTableError(f"rule {name}: {where}: {first['msg']}") from None
        if rule.id in seen:
            raise RuleTableError(f"rule {rule.id}: defined twice (rows {seen[rule.id] + 1} and {index + 1})")
        seen[rule.id] = index
        for other in rules:
            overlap = rule.actions & other.actions
            same_scope = (
                other.source == rule.source
                and other.entity == rule.entity
                and (other.order_target is None or rule.order_target is None or other.order_target == rule.order_target)
            )
            if overlap and same_scope:
                raise RuleTableError(
                    f"rule {rule.id}: action(s) {sorted(a.value for a in overlap)} on {rule.source.value} "
                    f"{rule.entity} already belong to rule {other.id}"
                )
        rules.append(rule)
    by_id = {rule.id: rule for rule in rules}
    for rule in rules:
        for dependency in rule.dependencies:
            sender = by_id.get(dependency.rule)
            sends = sender.writes if sender is not None else None
            if sends is None or sends.system is not rule.target or sends.entity != dependency.entity:
                raise RuleTableError(
                    f"rule {rule.id}: dependency {dependency.entity} is sent by rule {dependency.rule}, which must "
                    f"write {dependency.entity} to {rule.target.value if rule.target else '?'}"
                )
    return RuleBook(tuple(rules))
