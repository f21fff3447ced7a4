"""Both sandboxes, both capture services and both connectors, running in one asyncio loop.

The loop a production deployment runs, on this machine: sandbox -> capture -> ``cdc.*`` -> worker
(a separate process) -> ``commands.*`` -> connector -> sandbox. The sandboxes speak the public AMIS
APIs; the capture services poll them (CRM, accounting dictionaries) and receive the accounting
sandbox's signed callbacks; the connectors write through the same APIs and wait for ACT's callbacks.

Used by the end-to-end tests and by ``lienthong demo``. Ports are chosen by the OS unless given;
everything listens on 127.0.0.1 only. The demo configures its systems itself (tenants, URLs, directories);
its connectors are built as a connector service's (``connectors.service.build_connector``), and follow
the environment only in what tunes them (``LIENTHONG_CONNECTOR_CONCURRENCY``, ``_RATE``,
``LIENTHONG_TOKEN_RENEW_BEFORE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from amis import acct_mapping, crm_mapping
from amis.acct_client import ActClient, ActCredentials
from amis.crm_client import CrmClient, CrmCredentials
from amis.errors import Refused, Transient
from amis.ledger import WriteLedger
from amis.settings import AmisSettings
from capture.acct import ActCapture
from capture.crm import CrmCapture
from capture.state import CaptureState, ChangeReporter, new_producer
from common.kafka_config import confluent_config
from common.listeners import serve_app
from common.metrics import bound_port
from common.names import System
from common.settings import AcctTenant, CrmTenant, KafkaSettings, read_settings
from connectors.runner import Connector
from connectors.service import build_connector
from connectors.settings import ConnectorServiceSettings
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_store import ActStore
from sandboxes.admin import new_admin_token, page_link
from sandboxes.app import creations
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from sandboxes.faults import FaultConfig

log = logging.getLogger(__name__)

APP_ID = "lienthong-demo-app"  # the ACT app_id MISA would issue to this integration


def crm_login(tenant: str) -> tuple[str, str]:
    """The AppID and secret the integration uses for a tenant's CRM."""
    return f"lienthong-{tenant}", f"secret-{tenant}"


def acct_access(tenant: str) -> tuple[str, str]:
    """The access code and org_company_code the integration uses for a tenant's accounting."""
    return f"access-{tenant}", f"company-{tenant}"


@dataclass
class LocalSystem:
    system: System
    url: str  # the sandbox (its page is url + "/")
    api_url: str  # what a client is given as its base URL
    faults: FaultConfig
    connector: Connector
    capture: CrmCapture | ActCapture


@dataclass
class LocalSystems:
    crm: LocalSystem
    acct: LocalSystem
    crm_store: CrmStore
    acct_store: ActStore
    tenants: list[str]
    admin_token: str  # both sandboxes' /sandbox/... routes (sandboxes/admin.py)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def page(self, system: LocalSystem) -> str:
        """A sandbox's page, opened with the admin token so that its buttons act."""
        return page_link(system.url, self.admin_token)

    # --- what each system shows, in the contract's names ----------------------------------------------

    def crm_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        spec = crm_mapping.RESOURCES[entity]
        found = self.crm_store.by_code(tenant, spec.resource, code)
        return spec.record.from_wire(found) if found else None

    def acct_record(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        """A dictionary record, or a voucher (generated) or proposal (pending) by its number."""
        if entity in acct_mapping.DICTIONARIES:
            spec = acct_mapping.DICTIONARIES[entity]
            found = self.acct_store.dictionary_record(tenant, spec.data_type, code=code)
            return spec.record.from_wire(found) if found else None
        table = acct_mapping.VOUCHERS[entity].record
        for voucher in self.acct_store.vouchers(tenant):
            if (
                voucher.get("refno") == code
                and voucher.get("voucher_type") == acct_mapping.VOUCHERS[entity].voucher_type
            ):
                return table.from_wire(voucher)
        for proposal, _state in self.acct_store.proposals(tenant):
            if proposal.get("org_refno") == code:
                return table.from_wire(proposal)
        return None

    def creations(self, system: System, tenant: str) -> dict[tuple[str, str], int]:
        """How many times each (kind, code) was created in a sandbox, from its journal."""
        return creations(self.crm_store.journal(tenant) if system == System.CRM else self.acct_store.journal(tenant))


async def patiently(what: str, call: Any, attempts: int = 60) -> Any:
    """A person retries what a sandbox's injected faults broke."""
    for _ in range(attempts):
        try:
            return await call()
        except Transient:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the sandbox kept failing: {what}")


class CrmUser:
    """A sales person working in CRM (through the API, with an AppID of their own: origin ``user``)."""

    def __init__(self, systems: LocalSystems, tenant: str, session: aiohttp.ClientSession) -> None:
        self.systems, self.tenant = systems, tenant
        creds = {tenant: CrmCredentials(f"user-{tenant}", SecretStr(f"user-secret-{tenant}"))}
        self.client = CrmClient(systems.crm.api_url, session, creds, timeout=3)

    async def save(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        """Create or update by id or code; returns the record as CRM keeps it, in the contract's names."""
        spec = crm_mapping.RESOURCES[entity]
        wire = spec.record.to_wire(record, entity)
        record_id = wire.pop("id", None)
        if record_id is None and record.get("code"):
            found = await patiently(
                "lookup", lambda: self.client.by_codes(self.tenant, spec.resource, [str(record["code"])])
            )
            record_id = found[0]["id"] if found else None
        if record_id is not None:
            (result,) = await patiently(
                "update", lambda: self.client.update(self.tenant, spec.resource, [{"id": record_id, **wire}])
            )
        else:
            (result,) = await patiently("create", lambda: self.client.create(self.tenant, spec.resource, [wire]))
        if not result.success or result.id is None:
            raise Refused(f"CRM refused {entity}: {result.message()}", status=400)
        (row,) = await patiently("read", lambda: self.client.by_ids(self.tenant, spec.resource, [result.id]))
        return spec.record.from_wire(row)


class Accountant:
    """An accountant working in AMIS Kế toán's screens (the sandbox's ``/sandbox/ui``, not the API)."""

    def __init__(self, systems: LocalSystems, tenant: str, session: aiohttp.ClientSession) -> None:
        self.systems, self.tenant, self.session = systems, tenant, session

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url, token = f"{self.systems.acct.url}/sandbox/ui/{self.tenant}/{path}", self.systems.admin_token
        async with self.session.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"the accounting sandbox refused {path}: {answer}")
            return answer["data"]

    async def save(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        spec = acct_mapping.DICTIONARIES[entity]
        item = {**spec.record.to_wire(record, entity), "dictionary_type": spec.dictionary_type}
        saved = await self._post("dictionary", item)
        return spec.record.from_wire(
            self.systems.acct_store.dictionary_record(self.tenant, spec.data_type, id=saved[spec.id_field]) or {}
        )

    async def generate(self, org_refid: str) -> dict[str, Any]:
        return await self._post(f"proposals/{org_refid}/generate")

    async def enter(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        spec = acct_mapping.VOUCHERS[entity]
        voucher = {**spec.record.to_wire(record, entity), "voucher_type": spec.voucher_type, "reftype": spec.reftype}
        return spec.record.from_wire(await self._post("vouchers", voucher))


@contextlib.asynccontextmanager
async def local_systems(
    *,
    kafka: KafkaSettings,
    data_dir: Path,
    tenants: list[str],
    faults: dict[System, FaultConfig] | None = None,
    ports: dict[str, int] | None = None,  # by system, and "callback": the accounting capture's callback URL
    connector_overrides: dict[str, Any] | None = None,
    poll_interval: float = 0.3,
    callback_timeout: float = 5.0,
    admin_token: str | None = None,
) -> AsyncIterator[LocalSystems]:
    """``admin_token``: what both sandboxes' ``/sandbox/...`` routes need (None: a random one, in the result);
    ``connector_overrides``: ``ConnectorSettings`` fields of both connectors (a test's backoff)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    faults = faults or {}
    ports = ports or {}
    admin_token = admin_token or new_admin_token()
    runners: list[web.AppRunner] = []
    tasks: list[asyncio.Task[None]] = []
    closers: list[Any] = []
    session = aiohttp.ClientSession()
    crm_store = CrmStore(data_dir / "crm-sandbox.sqlite")
    acct_store = ActStore(data_dir / "acct-sandbox.sqlite")
    connectors: list[Connector] = []
    captures: list[CrmCapture | ActCapture] = []

    async def serve(app: web.Application, port: int) -> str:
        runner = await serve_app(app, "127.0.0.1", port)
        runners.append(runner)
        return f"http://127.0.0.1:{bound_port(runner)}"

    try:
        # CRM: the integration's AppID and each sales person's own
        crm_credentials = {}
        for tenant in tenants:
            client_id, secret = crm_login(tenant)
            crm_credentials.update({client_id: tenant, f"{client_id}:secret": secret})
            crm_credentials.update({f"user-{tenant}": tenant, f"user-{tenant}:secret": f"user-secret-{tenant}"})
        crm_faults = faults.get(System.CRM) or FaultConfig()
        crm_url = await serve(
            create_crm_sandbox(crm_store, credentials=crm_credentials, faults=crm_faults, admin_token=admin_token),
            ports.get(System.CRM, 0),
        )
        crm_api = crm_url + "/api/v2"
        crm_connector_creds = {t: CrmCredentials(crm_login(t)[0], SecretStr(crm_login(t)[1])) for t in tenants}

        # accounting: the capture service's callback receiver first, so that the sandbox knows where to call
        acct_connector_creds = {t: ActCredentials(SecretStr(acct_access(t)[0]), acct_access(t)[1]) for t in tenants}
        acct_ledger = WriteLedger(data_dir / "acct-shared.sqlite")
        crm_ledger = WriteLedger(data_dir / "crm-shared.sqlite")
        closers += [acct_ledger.close, crm_ledger.close]
        producer = new_producer(confluent_config(kafka))
        acct_state, crm_state = (
            CaptureState(data_dir / "acct-capture.sqlite"),
            CaptureState(data_dir / "crm-capture.sqlite"),
        )
        closers += [acct_state.close, crm_state.close]
        acct_faults = faults.get(System.ACCT) or FaultConfig()
        acct_client = ActClient("http://placeholder", session, APP_ID, acct_connector_creds, timeout=3)
        acct_capture = ActCapture(
            acct_client,
            ChangeReporter(System.ACCT, acct_state, acct_ledger, producer, topic_prefix=kafka.topic_prefix),
            acct_ledger,
            {t: acct_access(t)[1] for t in tenants},
            # each company its own callback URL, as registered with MISA (SECURITY.md): made for this run
            callback_secrets={t: SecretStr(secrets.token_urlsafe(24)) for t in tenants},
            entities=list(acct_mapping.DICTIONARIES),
            poll_interval=poll_interval,
        )
        receiver_url = await serve(acct_capture.callback_app(), ports.get("callback", 0))
        acct_url = await serve(
            create_acct_sandbox(
                acct_store,
                app_id=APP_ID,
                credentials={f"{APP_ID}:{acct_access(t)[0]}": t for t in tenants},
                callback_urls={t: receiver_url + str(acct_capture.callback_path(t)) for t in tenants},
                faults=acct_faults,
                admin_token=admin_token,
            ),
            ports.get(System.ACCT, 0),
        )
        acct_client.base_url = acct_url
        crm_capture = CrmCapture(
            CrmClient(crm_api, session, crm_connector_creds, timeout=3),
            ChangeReporter(System.CRM, crm_state, crm_ledger, producer, topic_prefix=kafka.topic_prefix),
            tenants,
            entities=list(crm_mapping.RESOURCES),
            poll_interval=poll_interval,
            deletion_scan_every=10,
        )
        captures += [crm_capture, acct_capture]
        # the connectors: the connector service's settings, of the demo's sandboxes, tenants and directory
        # (its own ledgers in <data_dir>/connectors, the ledgers shared with capture in data_dir, as above)
        amis = read_settings(
            AmisSettings,
            crm_url=crm_url,
            acct_url=acct_url,
            crm_credentials={
                t: CrmTenant(client_id=crm_login(t)[0], client_secret=SecretStr(crm_login(t)[1])) for t in tenants
            },
            acct_app_id=APP_ID,
            acct_credentials={
                t: AcctTenant(access_code=SecretStr(acct_access(t)[0]), org_company_code=acct_access(t)[1])
                for t in tenants
            },
            connector_credentials={},
        )
        connector_settings = read_settings(
            ConnectorServiceSettings,
            kafka=kafka,
            amis=amis,
            data_dir=data_dir,
            ledger_dir=data_dir,
            callback_timeout=callback_timeout,
            connector_extensions=True,  # the sandboxes' extensions: the whole sync matrix (docs/amis-gaps.md)
        )
        built: dict[System, LocalSystem] = {}
        for system, url, api_url, fault, capture in (
            (System.CRM, crm_url, crm_api, crm_faults, crm_capture),
            (System.ACCT, acct_url, acct_url, acct_faults, acct_capture),
        ):
            # no probes: the demo's page shows its connectors
            connector = build_connector(connector_settings, system, health_port=None, **(connector_overrides or {}))
            connectors.append(connector)
            built[system] = LocalSystem(system, url, api_url, fault, connector, capture)
            tasks.append(asyncio.create_task(connector.run(), name=f"{system}-connector"))
            tasks.append(asyncio.create_task(capture.run(), name=f"{system}-capture"))
        yield LocalSystems(
            crm=built[System.CRM],
            acct=built[System.ACCT],
            crm_store=crm_store,
            acct_store=acct_store,
            tenants=tenants,
            admin_token=admin_token,
            tasks=tasks,
        )
    finally:
        for connector in connectors:
            connector.stop()
        for capture in captures:
            capture.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
        await session.close()
        for close in closers:
            close()
        crm_store.close()
        acct_store.close()
