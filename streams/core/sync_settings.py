"""A company's sync settings: what a CRM order becomes, which rules are off for it, its own field mappings.

One record per tenant on ``config.tenants`` (docs/contract.md, "Tenant settings"). Version 1 carries
``order_target`` only; version 2 adds ``revision`` (the number the audit records name), ``rules_off``
and ``field_mappings``. Validated here against the rule book; whether a field is one the target
system's API declares is checked above the core (``ops``), where the AMIS field lists live.

Pure: ``FieldMapping.convert`` turns one source value into the target's, or says why it cannot.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.names import ENTITIES, System
from streams.core.rules import ORDER_TARGETS, OrderTarget, RuleBook

SETTINGS_VERSIONS = (1, 2)
FieldType = Literal["text", "number", "date", "money", "choice"]
FIELD_TYPES: tuple[str, ...] = ("text", "number", "date", "money", "choice")

# The rules that are not rows of the matrix but hold every row together (docs/matrix.md, "Cross-cutting").
CROSS_CUTTING = {
    "X-1": "echo prevention: without it every write would come back as a change and be sent again",
    "X-2": "no-op suppression: without it an unchanged record would be written again on every echo",
    "X-3": "links between the two systems' records: every rule that addresses a record rests on them",
    "X-4": "dependency order: a document would reach the target before the customer or product it names",
    "X-5": "order per record: a record's commands would overtake each other",
    "X-6": "bad input to the dead-letter topic: nothing would protect the stream from a malformed change",
}

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class SettingsError(ValueError):
    """Settings that cannot be used; the message says what is wrong and what to do, one line."""


class FieldMapping(BaseModel):
    """One field of the company's own: a source system's field (or a fixed value) written to a field of the
    other system's copy of the record, converted as ``type`` says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: System = Field(description="The system the value comes from (the record's system).")
    entity: str = Field(description="The entity of the record, in the contract's names (e.g. customer).")
    source_field: str | None = Field(None, description="The field read from the record (e.g. a CRM custom field).")
    value: str | None = Field(None, description="A fixed value written instead of a source field.")
    target_field: str = Field(description="The field written in the other system's record.")
    type: FieldType = Field("text", description="How the value converts: text, number, date, money or choice.")
    values: dict[str, str] | None = Field(None, description="choice: each source value and the target value.")

    @model_validator(mode="after")
    def _consistent(self) -> FieldMapping:
        if self.entity not in ENTITIES[self.system]:
            raise ValueError(f"entity {self.entity!r} is not an entity of {self.system.value}")
        if (self.source_field is None) == (self.value is None):
            raise ValueError("give either source_field or value (a fixed value), not both and not neither")
        for name in (self.source_field, self.target_field):
            if name is not None and not _FIELD_NAME.match(name):
                raise ValueError(f"{name!r} is not a field name (letters, digits, _)")
        if self.type == "choice" and not self.values:
            raise ValueError("a choice mapping needs values: {source value: target value, ...}")
        if self.type != "choice" and self.values is not None:
            raise ValueError(f"values are for type choice, not {self.type}")
        if self.value is not None:
            _, problem = self.convert(self.value)
            if problem:
                raise ValueError(f"the fixed value {self.value!r} is not a {self.type}: {problem}")
        return self

    @property
    def target_system(self) -> System:
        return System.ACCT if self.system is System.CRM else System.CRM

    def describe(self) -> str:
        source = self.source_field if self.source_field is not None else f"the value {self.value!r}"
        return f"{self.system.value} {self.entity} {source} -> {self.target_system.value} {self.target_field}"

    def convert(self, raw: Any) -> tuple[Any, str | None]:
        """``(value, None)``, or ``(None, why)`` when ``raw`` cannot become a ``type``."""
        if raw is None:
            return None, None
        if isinstance(raw, (dict, list, bool)):
            return None, f"a {type(raw).__name__} is not a {self.type}"
        text = str(raw).strip()
        if self.type == "text":
            return str(raw), None
        if self.type in ("number", "money"):
            try:
                number = Decimal(text)
            except InvalidOperation:
                return None, f"{text!r} is not a number"
            if not number.is_finite():
                return None, f"{text!r} is not a finite number"
            # Money and numbers travel as decimal text in the contract, exact, never a float.
            return format(number, "f"), None
        if self.type == "date":
            try:
                day = datetime.fromisoformat(text.replace("Z", "+00:00")).date()
            except ValueError:
                return None, f"{text!r} is not a date (YYYY-MM-DD)"
            return day.isoformat(), None
        assert self.values is not None  # choice, checked by the validator
        if text not in self.values:
            return None, f"{text!r} is not one of the mapped choices {sorted(self.values)}"
        return self.values[text], None


class SyncSettings(BaseModel):
    """A tenant's settings (``config.tenants``); an empty one is the defaults."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_version: int = 1
    tenant: str | None = None
    revision: int = Field(0, ge=0, description="Raised by one at every change; the audit records name it.")
    order_target: OrderTarget | None = None
    rules_off: frozenset[str] = frozenset()
    field_mappings: tuple[FieldMapping, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> SyncSettings:
        if self.schema_version not in SETTINGS_VERSIONS:
            raise ValueError(
                f"schema_version {self.schema_version!r}; this processor reads versions "
                f"{', '.join(map(str, SETTINGS_VERSIONS))}"
            )
        if self.schema_version == 1 and (self.revision or self.rules_off or self.field_mappings):
            raise ValueError("revision, rules_off and field_mappings need schema_version 2")
        if self.schema_version == 2 and self.model_extra:
            raise ValueError(f"unknown setting(s) {', '.join(sorted(self.model_extra))}")
        targets: dict[tuple[System, str, str], FieldMapping] = {}
        for mapping in self.field_mappings:
            where = (mapping.target_system, mapping.entity, mapping.target_field)
            if where in targets:
                raise ValueError(
                    f"two sources for {mapping.target_system.value} {mapping.entity} {mapping.target_field}: "
                    f"{targets[where].describe()} and {mapping.describe()}; keep one"
                )
            targets[where] = mapping
        return self

    def is_off(self, rule_id: str) -> bool:
        return rule_id in self.rules_off

    def mappings_from(self, system: System, entity: str) -> tuple[FieldMapping, ...]:
        """The mappings that read a ``system`` ``entity`` record."""
        return tuple(m for m in self.field_mappings if m.system is system and m.entity == entity)

    def document(self) -> dict[str, Any]:
        """The record as written to ``config.tenants`` (JSON types, sorted, defaults left out)."""
        out: dict[str, Any] = {"schema_version": self.schema_version}
        if self.tenant is not None:
            out["tenant"] = self.tenant
        if self.schema_version >= 2:
            out["revision"] = self.revision
        if self.order_target is not None:
            out["order_target"] = self.order_target
        if self.rules_off:
            out["rules_off"] = sorted(self.rules_off)
        if self.field_mappings:
            out["field_mappings"] = [m.model_dump(mode="json", exclude_none=True) for m in self.field_mappings]
        return out


DEFAULT_SETTINGS = SyncSettings()


def _one_line(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def parse_settings(tenant: str, value: Any, rules: RuleBook | None = None) -> SyncSettings:
    """A ``config.tenants`` value (decoded JSON) -> settings; ``SettingsError`` says what is wrong.

    With ``rules``, the rule ids are checked too (``check_rules``)."""
    if not isinstance(value, dict):
        raise SettingsError("not a JSON object")
    try:
        settings = SyncSettings.model_validate(value)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from None
    if settings.tenant not in (None, tenant):
        raise SettingsError(f"value names tenant {settings.tenant!r} but the key is {tenant!r}")
    if rules is not None:
        check_rules(settings, rules)
    return settings


def parse_tenant_settings(tenant: str, raw: bytes, rules: RuleBook | None = None) -> SyncSettings:
    """A ``config.tenants`` value (bytes) -> settings; ``ValueError`` (``SettingsError``) says what is wrong.
    The worker reads the topic with it; ``lienthong tenant set|get|list`` and ``whatif`` check with it."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"not JSON: {exc}") from None
    return parse_settings(tenant, value, rules)


def check_rules(settings: SyncSettings, rules: RuleBook) -> None:
    """Every rule switched off exists and may be switched off; ``SettingsError`` names the others and why."""
    problems = []
    known = {rule.id: rule for rule in rules.rules}
    for rule_id in sorted(settings.rules_off):
        if rule_id in CROSS_CUTTING:
            problems.append(f"{rule_id} cannot be switched off ({CROSS_CUTTING[rule_id]})")
        elif rule_id not in known:
            problems.append(f"{rule_id} is not a rule of the matrix (lienthong matrix lists them)")
        elif known[rule_id].locked:
            problems.append(f"{rule_id} cannot be switched off ({known[rule_id].locked})")
    if problems:
        raise SettingsError("; ".join(problems))


__all__ = [
    "CROSS_CUTTING",
    "DEFAULT_SETTINGS",
    "FIELD_TYPES",
    "ORDER_TARGETS",
    "FieldMapping",
    "SettingsError",
    "SyncSettings",
    "check_rules",
    "parse_settings",
    "parse_tenant_settings",
]
