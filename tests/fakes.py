"""Pure test doubles: an in-memory ``State`` for ``streams.core.decide`` and a change-event builder.

No faust, no Kafka. ``FakeState.apply(decision)`` remembers what a decision taught the way
``streams.tables.apply_decision`` does over the faust tables (links by code and by id, CRM
records, what was written), so multi-step scenarios can be run event by event.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from common.names import System
from streams.core.contract import SCHEMA_VERSION, ChangeEvent
from streams.core.decide import Decision, Written
from streams.core.sync_settings import DEFAULT_SETTINGS, SyncSettings

TS_MS = 1_764_201_600_000

_event_ids = itertools.count(1)
_DEFAULT = object()


@dataclass
class FakeState:
    """``streams.core.decide.State`` in dicts.

    - ``order_targets``: tenant -> "sale_order" | "contract" (absent: ``default_order_target``)
    - ``links``: (tenant, family, code) -> {"crm": id, "acct": id}; the same dict is also reachable
      by (tenant, family, system, id) through ``links_by_id``, so a record is found by its code or
      by its counterpart's id.
    - ``written``: command key text -> ``Written`` (X-2, PP-2)
    - ``crm_records``: (tenant, entity, code) -> the last seen CRM customer / product
    """

    order_targets: dict[str, str] = field(default_factory=dict)
    settings: dict[str, SyncSettings] = field(default_factory=dict)  # tenant -> its sync settings
    default_order_target: str = "sale_order"
    links: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    links_by_id: dict[tuple[str, str, str, str], dict[str, str]] = field(default_factory=dict)
    written: dict[str, Written] = field(default_factory=dict)
    crm_records: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    # --- the State protocol -------------------------------------------------------------------

    def order_target(self, tenant: str) -> str:
        return self.order_targets.get(tenant) or self.default_order_target

    def sync_settings(self, tenant: str) -> SyncSettings:
        return self.settings.get(tenant) or DEFAULT_SETTINGS

    def linked_id(
        self, tenant: str, system: System, family: str, *, code: str | None, other_id: str | None
    ) -> str | None:
        candidates = []
        if code:
            candidates.append(self.links.get((tenant, family, code)))
        if other_id:
            other = System.ACCT if system is System.CRM else System.CRM
            candidates.append(self.links_by_id.get((tenant, family, other.value, other_id)))
        for link in candidates:
            if link and link.get(system.value):
                return link[system.value]
        return None

    def last_written(self, key: str) -> Written | None:
        return self.written.get(key)

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        return self.crm_records.get((tenant, entity, code))

    def crm_customers(self, tenant: str) -> Iterable[dict[str, Any]]:
        return [r for (t, entity, _), r in self.crm_records.items() if t == tenant and entity == "customer"]

    # --- seeding and learning -----------------------------------------------------------------

    def link(self, tenant: str, family: str, code: str | None = None, **ids: str) -> None:
        """Record a link, e.g. ``link("t1", "customer", "KH1", crm="c-1", acct="a-1")``; merges like the worker."""
        found: dict[str, str] = {}
        if code and (tenant, family, code) in self.links:
            found.update(self.links[(tenant, family, code)])
        for system, record_id in ids.items():
            found.update(self.links_by_id.get((tenant, family, system, record_id)) or {})
        found.update(ids)
        code = code or found.get("code")
        if code:
            found["code"] = code
        if code:
            self.links[(tenant, family, code)] = found
        for system, record_id in found.items():
            if system != "code":
                self.links_by_id[(tenant, family, system, record_id)] = found

    def remember(self, tenant: str, entity: str, record: dict[str, Any]) -> None:
        """Seed a CRM record as if its change event had been seen."""
        self.crm_records[(tenant, entity, str(record["code"]))] = dict(record)

    def apply(self, decision: Decision) -> None:
        """What ``streams.tables.apply_decision`` does: remember links, CRM records, what was written."""
        for update in decision.links:
            self.link(update.tenant, update.family, update.code, **update.ids)
        for record in decision.crm_records:
            key = (record.tenant, record.entity, record.code)
            if record.record is None:
                self.crm_records.pop(key, None)
            else:
                self.crm_records[key] = record.record
        for key in decision.forget_written:
            self.written.pop(key, None)
        self.written.update(decision.written)


def event(
    system: str,
    entity: str,
    op: str = "c",
    action: str | None = None,
    after: Any = _DEFAULT,
    before: Any = _DEFAULT,
    origin: str = "user",
    tenant: str = "t1",
    event_id: str | None = None,
    **extra: Any,
) -> ChangeEvent:
    """A validated ChangeEvent; a fresh ``event_id`` unless one is given.

    Defaults: ``after`` is a minimal record (``{"id", "code"}``) except for op ``d``, where it is
    ``None`` and ``before`` holds the record; ``before`` is ``None`` otherwise.
    """
    record = {"id": f"{system}-{entity}-1", "code": f"{entity.upper()}-1"}
    if after is _DEFAULT:
        after = None if op == "d" else record
    if before is _DEFAULT:
        before = record if op == "d" else None
    return ChangeEvent.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "event_id": event_id or f"ev-{next(_event_ids)}",
            "tenant": tenant,
            "system": system,
            "entity": entity,
            "op": op,
            "action": action,
            "origin": origin,
            "ts_ms": TS_MS,
            "before": before,
            "after": after,
            **extra,
        }
    )
