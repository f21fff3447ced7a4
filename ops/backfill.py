"""``lienthong backfill``: publish a tenant's records as ``op = "r"`` snapshot change events.

From a system, read through the same API clients as the capture services (CRM: every page of each
resource; accounting: the dictionaries, the only records its API lists), or from a JSON-lines file
of records in the contract's field names. Each event goes to ``cdc.<system>.<entity>`` keyed
``<tenant>:<record id>``, checked first as the processor will check it (``decode_change_event``).

The ``event_id`` is ``backfill-`` and a digest of the tenant, system, entity, record id and the
record's content: running the same backfill again gives the same ids, which the processor drops as
duplicates (it remembers each record's recent event ids), so effects are not repeated; a record
that changed since gives a new id and is decided again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from amis import acct_mapping, crm_mapping
from amis.acct_client import ActClient
from amis.credentials import acct_app_id, acct_credentials, crm_credentials
from amis.crm_client import CrmClient, listed_as_deleted
from amis.errors import ProtocolError, Refused, Transient
from amis.settings import AmisSettings
from common.names import ENTITIES, System, cdc_topic
from common.settings import KafkaSettings
from streams.core.contract import change_event_json, decode_change_event
from streams.core.errors import BadInput


class BackfillError(RuntimeError):
    """A user's mistake or an unreachable system or broker; the message says what to do."""


@dataclass(frozen=True)
class Snapshot:
    topic: str  # without the deployment's prefix
    key: bytes
    value: bytes


def snapshot_event(tenant: str, system: System, entity: str, record: dict[str, Any], ts_ms: int) -> dict[str, Any]:
    record_id = str(record.get("id") or "")
    digest = hashlib.sha256(
        orjson.dumps([tenant, system, entity, record_id, record], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    return change_event_json(
        event_id=f"backfill-{digest[:40]}",
        tenant=tenant,
        system=system,
        entity=entity,
        op="r",
        origin="user",
        ts_ms=ts_ms,
        before=None,
        after=record,
    )


def snapshot(tenant: str, system: System, entity: str, record: dict[str, Any], *, ts_ms: int, where: str) -> Snapshot:
    """The checked message of one record; ``BackfillError`` naming ``where`` when the processor would refuse it."""
    if not isinstance(record, dict):
        raise BackfillError(f"{where}: a record is a JSON object, not {type(record).__name__}")
    if record.get("id") in (None, ""):
        raise BackfillError(f"{where}: the record has no id (every record needs its id in its own system)")
    event = snapshot_event(tenant, system, entity, record, ts_ms)
    value = orjson.dumps(event)
    key = f"{tenant}:{record['id']}".encode()
    try:
        decode_change_event(value, topic_system=system, topic_entity=entity, key=key)
    except BadInput as exc:
        raise BackfillError(f"{where}: the processor would refuse it ({exc.kind}): {exc.message}") from None
    return Snapshot(cdc_topic(system, entity), key, value)


def check_entity(system: System, entity: str) -> None:
    known = ENTITIES[system]
    if entity not in known:
        raise BackfillError(f"{system} has no entity {entity!r}; its entities: {', '.join(sorted(known))}")


def from_file(
    path: Path, tenant: str, system: System, entity: str | None, *, ts_ms: int | None = None
) -> list[Snapshot]:
    """Every line of ``path``: a record (with ``--entity``) or ``{"entity": E, "record": {...}}``.

    All lines are checked before anything is published: one bad line refuses the file, naming it."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise BackfillError(f"cannot read {path}: {exc.strerror or exc}") from None
    ts_ms = ts_ms or int(time.time() * 1000)
    if entity is not None:
        check_entity(system, entity)
    snapshots = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BackfillError(f"{where}: not JSON ({exc}); each line is one JSON object") from None
        if not isinstance(item, dict):
            raise BackfillError(f"{where}: each line is one JSON object, not {type(item).__name__}")
        line_entity = entity
        record: Any = item
        if "record" in item:
            line_entity, record = item.get("entity") or entity, item["record"]
        if line_entity is None:
            raise BackfillError(
                f'{where}: which entity is this? Give --entity, or write lines as {{"entity": ..., "record": {{...}}}}'
            )
        check_entity(system, str(line_entity))
        snapshots.append(snapshot(tenant, system, str(line_entity), record, ts_ms=ts_ms, where=where))
    return snapshots


def system_entities(system: System) -> list[str]:
    """What a backfill from the system reads by default: what its public API lists."""
    return list(crm_mapping.DOCUMENTED) if system == System.CRM else ["customer", "product"]


async def read_system(
    amis: AmisSettings, tenant: str, system: System, entities: Iterable[str], *, timeout: float = 10.0
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(entity, record) for each record the system's API lists, in the contract's names."""
    entities = list(entities)
    for entity in entities:
        check_entity(system, entity)
        listable = crm_mapping.RESOURCES if system == System.CRM else acct_mapping.DICTIONARIES
        if entity not in listable:
            raise BackfillError(
                f"the {system} API cannot list {entity}s (accounting documents come back only by callback); "
                "backfill them from a file (--from-file)"
            )
    async with aiohttp.ClientSession() as session:
        try:
            if system == System.CRM:
                creds = crm_credentials(amis)
                _known(tenant, creds, "LIENTHONG_CRM_CREDENTIALS")
                crm = CrmClient(amis.crm_url.rstrip("/") + "/api/v2", session, creds, timeout=timeout)
                for entity in entities:
                    spec = crm_mapping.RESOURCES[entity]
                    async for row in crm.every_row(tenant, spec.resource):
                        if not listed_as_deleted(row):  # still listed after its deletion: no record to send
                            yield entity, spec.record.from_wire(row)
            else:
                creds_acct = acct_credentials(amis)
                _known(tenant, creds_acct, "LIENTHONG_ACCT_CREDENTIALS")
                act = ActClient(amis.acct_url, session, acct_app_id(amis), creds_acct, timeout=timeout)
                for entity in entities:
                    dictionary = acct_mapping.DICTIONARIES[entity]
                    async for row in act.every_dictionary_row(tenant, dictionary.data_type):
                        if dictionary.holds(row):
                            yield entity, dictionary.record.from_wire(row)
        except (Transient, Refused, ProtocolError) as exc:
            url = amis.crm_url if system == System.CRM else amis.acct_url
            raise BackfillError(f"could not read {system} at {url} for {tenant}: {exc}") from None


def _known(tenant: str, credentials: dict[str, Any], variable: str) -> None:
    if tenant not in credentials:
        raise BackfillError(
            f"unknown tenant {tenant!r}: no credentials in {variable} "
            f"(tenants there: {', '.join(sorted(credentials)) or 'none'}); README, 'Credentials'"
        )


def publish(
    kafka: KafkaSettings,
    snapshots: Iterable[Snapshot],
    *,
    progress: Callable[[Snapshot], None] = lambda s: None,
    timeout: float = 30.0,
) -> int:
    """Produce every snapshot; returns how many the broker acknowledged (all of them, or it raises)."""
    from confluent_kafka import KafkaException

    from ops.lag import LagError
    from ops.publishing import Publisher

    snapshots = list(snapshots)
    try:
        publisher = Publisher(kafka, {kafka.topic_prefix + item.topic for item in snapshots})
    except LagError as exc:
        raise BackfillError(str(exc)) from None
    count = 0
    try:
        for item in snapshots:
            publisher.produce(kafka.topic_prefix + item.topic, item.key, item.value)
            count += 1
            progress(item)
    except KafkaException as exc:
        raise BackfillError(f"could not publish: {exc}") from None
    problem = publisher.unacknowledged(timeout)
    if problem is not None:
        raise BackfillError(
            f"the broker at {kafka.bootstrap_servers} did not take the snapshots "
            f"({problem}): is it running (lienthong kafka status), are the topics "
            "created (lienthong topics create)? Running the backfill again is safe"
        )
    return count
