"""A company's sync settings from a TOML or JSON file (``lienthong tenant set --file``, ``lienthong whatif
--settings``), checked as the worker checks them (``streams.core.sync_settings``) and, beyond that, against
the fields each system's API takes: a mapping reads a field the source system reports and writes one the
target system accepts (the record maps of ``amis/``), with a type that can become the target's.

The file holds the settings record (docs/contract.md, "Tenant settings"); ``schema_version`` 2 and the
tenant may be left out. Example (TOML)::

    order_target = "sale_order"
    rules_off = ["PRD-1"]

    [[field_mappings]]
    system = "crm"
    entity = "customer"
    source_field = "custom_field3"
    target_field = "name"
    type = "text"
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from amis import acct_mapping, crm_mapping
from amis.mapping import RecordMap
from common.names import System
from streams.core.rules import RuleBook
from streams.core.sync_settings import FieldMapping, SettingsError, SyncSettings, parse_settings

# The target field's kind (amis.mapping.Kind) -> the mapping types that can become it.
TYPES_FOR_KIND: dict[str, frozenset[str]] = {
    "money": frozenset({"money", "number"}),
    "number": frozenset({"number", "money"}),
    "percent": frozenset({"number"}),
    "id": frozenset({"text"}),
    "text": frozenset({"text", "choice", "date", "number", "money"}),
    "raw": frozenset({"text", "choice", "date", "number", "money"}),
    "lines": frozenset(),  # a document's lines are not one value
}


def read_settings_file(path: Path) -> dict[str, Any]:
    """The file's record; ``SettingsError`` when it is neither TOML nor JSON, or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path} is not text (UTF-8): give a TOML or JSON settings file") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    else:
        try:
            value = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is neither JSON nor TOML: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{path} holds no settings record (a JSON object or a TOML table)")
    return value


def load_settings_file(
    path: Path, tenant: str, rules: RuleBook, *, revision: int | None = None, extensions: bool = False
) -> SyncSettings:
    """The settings in ``path`` for ``tenant``, every check passed; ``SettingsError`` names each problem.

    ``revision``: the revision to give them (the one in force plus one), unless the file says one."""
    value = read_settings_file(path)
    value.setdefault("schema_version", 2)
    value.setdefault("tenant", tenant)
    if revision is not None and value.get("schema_version") == 2:
        value.setdefault("revision", revision)
    settings = parse_settings(tenant, value, rules)
    problems = [problem for mapping in settings.field_mappings for problem in mapping_problems(mapping, extensions)]
    if problems:
        raise SettingsError("; ".join(problems))
    return settings


def record_map_of(system: System, entity: str) -> RecordMap:
    if system is System.CRM:
        return crm_mapping.RESOURCES[entity].record
    return acct_mapping.record_map(entity)


def target_entity(mapping: FieldMapping) -> str:
    """The entity of the target system's copy (an acct contract's CRM copy is a sale_order, and back)."""
    if mapping.entity == "contract" and mapping.system is System.ACCT:
        return "sale_order"
    return mapping.entity


def mapping_problems(mapping: FieldMapping, extensions: bool) -> list[str]:
    """What is wrong with ``mapping`` against the two systems' fields, one sentence each."""
    problems = []
    source = record_map_of(mapping.system, mapping.entity)
    if mapping.source_field is not None:
        known = source.canonical_names()
        if mapping.source_field not in known and not source.is_custom(mapping.source_field):
            custom = f", or a custom field ({source.custom})" if source.custom else ""
            problems.append(
                f"{mapping.describe()}: {mapping.system.value} {mapping.entity} has no field "
                f"{mapping.source_field!r} (it reports {', '.join(sorted(known - {'id'}))}{custom})"
            )
    target_system, entity = mapping.target_system, target_entity(mapping)
    try:
        full = record_map_of(target_system, entity)
    except KeyError:
        return [*problems, f"{mapping.describe()}: {target_system.value} has no {entity} to write to"]
    target = full if extensions else full.documented()
    field = target.field(mapping.target_field)
    if field is None and not target.is_custom(mapping.target_field):
        hint = ""
        if full.field(mapping.target_field) is not None:
            hint = " (only the sandbox has it: LIENTHONG_CONNECTOR_EXTENSIONS)"
        writable = sorted(target.canonical_names() - {"id", "crm_id"})
        custom = f", or a custom field ({target.custom})" if target.custom else ""
        problems.append(
            f"{mapping.describe()}: {target_system.value} {entity} takes no field {mapping.target_field!r}{hint} "
            f"(it takes {', '.join(writable)}{custom})"
        )
    elif field is not None:
        if mapping.target_field in ("id", "crm_id", "code"):
            problems.append(f"{mapping.describe()}: {mapping.target_field} names the record; a mapping cannot write it")
        elif mapping.type not in TYPES_FOR_KIND.get(field.kind, frozenset()):
            allowed = sorted(TYPES_FOR_KIND.get(field.kind, frozenset()))
            problems.append(
                f"{mapping.describe()}: a {mapping.type} cannot become {target_system.value} "
                f"{mapping.target_field} (a {field.kind}" + (f"; use type {' or '.join(allowed)})" if allowed else ")")
            )
        elif field.values is not None and not all(isinstance(v, str) for v in field.values):
            problems.append(
                f"{mapping.describe()}: {target_system.value} {mapping.target_field} takes "
                f"{' or '.join(sorted(map(str, field.values)))}, which no mapping type writes"
            )
        elif field.values is not None and mapping.type == "choice" and mapping.values:
            unknown = sorted(set(mapping.values.values()) - set(field.values))
            if unknown:
                problems.append(
                    f"{mapping.describe()}: {target_system.value} {mapping.target_field} has no value(s) "
                    f"{', '.join(map(repr, unknown))} (it has {', '.join(sorted(map(str, field.values)))})"
                )
    return problems
