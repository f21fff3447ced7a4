"""Both sandboxes, their outbox publishers and both connectors, running in one asyncio loop.

Used by the end-to-end tests and by ``lienthong demo``. Ports are chosen by the OS unless given;
everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from connectors.api import TenantCredentials
from connectors.runner import Connector, ConnectorSettings
from sandboxes.app import create_sandbox
from sandboxes.faults import FaultConfig
from sandboxes.publisher import OutboxPublisher
from sandboxes.store import SandboxStore

log = logging.getLogger(__name__)


@dataclass
class LocalSystem:
    system: str
    store: SandboxStore
    url: str
    faults: FaultConfig
    connector: Connector
    publisher: OutboxPublisher


@dataclass
class LocalSystems:
    crm: LocalSystem
    acct: LocalSystem
    tenants: list[str]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def credentials_for(self, system: str, tenant: str) -> dict[str, str]:
        """Headers / login body a *user* of that sandbox sends (not the connector)."""
        if system == "acct":
            return {"X-App-Id": f"app-{tenant}", "X-Connection-Code": f"code-{tenant}"}
        return {"client_id": f"client-{tenant}", "client_secret": f"secret-{tenant}"}


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a started runner's site listens on (the OS-chosen one when port 0 was asked for)."""
    addresses = runner.addresses  # one getsockname() per listening socket: (host, port, ...)
    if not addresses:
        raise RuntimeError("the web runner listens on no socket: was its site started?")
    port = addresses[0][1]
    if not isinstance(port, int):
        raise RuntimeError(f"the web runner listens on {addresses[0]!r}, not a TCP port")
    return port


class User:
    """A person working in one sandbox through its API (origin ``user``)."""

    def __init__(self, systems: LocalSystems, system: str, tenant: str, session: aiohttp.ClientSession) -> None:
        self.local = getattr(systems, system)
        self.systems = systems
        self.system = system
        self.tenant = tenant
        self.session = session
        self._headers: dict[str, str] | None = None

    async def headers(self) -> dict[str, str]:
        if self._headers is None:
            if self.system == "acct":
                self._headers = self.systems.credentials_for("acct", self.tenant)
            else:
                async with self.session.post(
                    self.local.url + "/Account", json=self.systems.credentials_for("crm", self.tenant)
                ) as r:
                    token = (await r.json())["Data"]["access_token"]
                self._headers = {"Authorization": f"Bearer {token}"}
        return self._headers

    def path(self, entity: str) -> str:
        from connectors.resources import ACCT_PATHS, CRM_PATHS

        return (CRM_PATHS if self.system == "crm" else ACCT_PATHS)[entity]

    async def save(self, entity: str, record: dict[str, Any], *, action: str | None = None) -> dict[str, Any]:
        """Create or update (by id or code); retries the sandbox's injected faults like a patient person."""
        from connectors.crm_fields import from_crm, to_crm

        body = to_crm(entity, record) if self.system == "crm" else record
        headers = dict(await self.headers())
        if action:
            headers["X-Action"] = action
        for _ in range(50):
            try:
                async with self.session.post(
                    self.local.url + self.path(entity),
                    json=[body],
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=3),
                ) as r:
                    if r.status == 200:
                        data = (await r.json())["Data"][0]
                        return from_crm(entity, data) if self.system == "crm" else data
                    if r.status < 500 and r.status != 429:
                        raise RuntimeError(f"{self.system} refused {entity}: {r.status} {await r.text()}")
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.system} sandbox kept failing to save {entity}")


@contextlib.asynccontextmanager
async def local_systems(
    *,
    bootstrap_servers: str,
    topic_prefix: str,
    data_dir: Path,
    tenants: list[str],
    faults: dict[str, FaultConfig] | None = None,
    ports: dict[str, int] | None = None,
    connector_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[LocalSystems]:
    data_dir.mkdir(parents=True, exist_ok=True)
    faults = faults or {}
    ports = ports or {}
    runners: list[web.AppRunner] = []
    built: dict[str, LocalSystem] = {}
    tasks: list[asyncio.Task[None]] = []
    try:
        for system in ("crm", "acct"):
            store = SandboxStore(data_dir / f"{system}.sqlite", system, topic_prefix=topic_prefix)
            if system == "crm":
                credentials = {
                    **{f"client-{t}": t for t in tenants},
                    **{f"client-{t}:secret": f"secret-{t}" for t in tenants},
                }
                connector_credentials = {
                    t: TenantCredentials(client_id=f"client-{t}", client_secret=f"secret-{t}") for t in tenants
                }
            else:
                credentials = {**{f"app-{t}": t for t in tenants}, **{f"app-{t}:code": f"code-{t}" for t in tenants}}
                connector_credentials = {
                    t: TenantCredentials(app_id=f"app-{t}", connection_code=f"code-{t}") for t in tenants
                }
            fault = faults.get(system) or FaultConfig()
            runner = web.AppRunner(create_sandbox(system, store, credentials=credentials, faults=fault))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", ports.get(system, 0))
            await site.start()
            runners.append(runner)
            url = f"http://127.0.0.1:{bound_port(runner)}"
            connector = Connector(
                ConnectorSettings(
                    system=system,
                    base_url=url,
                    credentials=connector_credentials,
                    bootstrap_servers=bootstrap_servers,
                    topic_prefix=topic_prefix,
                    ledger_path=data_dir / f"{system}-ledger.sqlite",
                    **(connector_overrides or {}),
                )
            )
            publisher = OutboxPublisher(store, bootstrap_servers)
            built[system] = LocalSystem(system, store, url, fault, connector, publisher)
            tasks.append(asyncio.create_task(publisher.run(), name=f"{system}-outbox"))
            tasks.append(asyncio.create_task(connector.run(), name=f"{system}-connector"))
        yield LocalSystems(crm=built["crm"], acct=built["acct"], tenants=tenants, tasks=tasks)
    finally:
        for local in built.values():
            local.connector.stop()
            local.publisher.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
        for local in built.values():
            local.store.close()
