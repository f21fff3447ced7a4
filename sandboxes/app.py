"""Sandboxes of AMIS CRM and AMIS Kế toán: aiohttp services over ``SandboxStore``.

The real APIs are not reachable from here; these keep their shape where it matters to a connector:

* **CRM** (modelled on the AMIS CRM Open API v2): ``POST /Account`` with ``client_id`` and
  ``client_secret`` returns a bearer token; resources ``/api/v2/<Resource>`` (``Customers``,
  ``Products``, ``ProductCategories``, ``Quotes``, ``SaleOrders``, ``Invoices``, ``PricePolicies``)
  take and return JSON arrays of records with PascalCase fields (``Code``, ``TaxCode``, …), paged
  with ``page``/``pageSize``, looked up by id (``/<Resource>/<id>``) or by code (``?code=``).
* **Accounting** (modelled on the AMIS Kế toán open API): every request carries ``X-App-Id`` and
  ``X-Connection-Code``; dictionaries under ``/api/dictionary/<name>`` (``customers``, ``products``,
  ``product_categories``, ``price_policies``) and vouchers under ``/api/voucher/<name>``
  (``quotes``, ``sale_orders``, ``contracts``, ``sales_vouchers``, ``receipts``, ``invoices``),
  snake_case fields.

A write carrying ``X-Lienthong-Origin: sync`` (the connector's) is reported with ``origin = sync``
(X-1). ``GET /`` is a page listing the records, so a person can watch the sync happen.
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from connectors.crm_fields import from_crm, to_crm
from connectors.resources import ACCT_BASE, ACCT_RESOURCES, CRM_BASE, CRM_RESOURCES
from sandboxes.faults import FaultConfig, fault_middleware
from sandboxes.store import NotFound, SandboxStore

log = logging.getLogger(__name__)

STORE = web.AppKey("store", SandboxStore)
CREDENTIALS = web.AppKey("credentials", dict)
TOKENS = web.AppKey("tokens", dict)
SYSTEM = web.AppKey("system", str)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error(status: int, message: str) -> web.Response:
    return json_response({"Success": False, "ErrorMessage": message}, status=status)


async def read_records(request: web.Request) -> list[dict[str, Any]] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return error(400, f"body is not JSON: {exc}")
    records = body if isinstance(body, list) else [body]
    if not all(isinstance(r, dict) for r in records):
        return error(400, "body must be a JSON object or an array of objects")
    return records


# --- authentication ------------------------------------------------------------------------------


def crm_tenant(request: web.Request) -> str | None:
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    return request.app[TOKENS].get(token)


def acct_tenant(request: web.Request) -> str | None:
    app_id, code = request.headers.get("X-App-Id"), request.headers.get("X-Connection-Code")
    tenant = request.app[CREDENTIALS].get(app_id)
    if tenant is None or code != request.app[CREDENTIALS].get(f"{app_id}:code"):
        return None
    return tenant


async def crm_login(request: web.Request) -> web.Response:
    """``POST /Account`` {client_id, client_secret} -> {Success, Data: {access_token, tenant}}."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error(400, "body is not JSON")
    client_id = str(body.get("client_id", ""))
    tenant = request.app[CREDENTIALS].get(client_id)
    if tenant is None or body.get("client_secret") != request.app[CREDENTIALS].get(f"{client_id}:secret"):
        return error(401, "unknown client_id or wrong client_secret")
    token = secrets.token_urlsafe(24)
    request.app[TOKENS][token] = tenant
    return json_response({"Success": True, "Data": {"access_token": token, "tenant": tenant}})


# --- resources ------------------------------------------------------------------------------------


def resource_handlers(entity: str, tenant_of: Callable[[web.Request], str | None], pascal: bool):
    out = (lambda r: to_crm(entity, r)) if pascal else (lambda r: r)
    inp = (lambda r: from_crm(entity, r)) if pascal else (lambda r: r)

    def authenticated(handler: Callable[[web.Request, str], Awaitable[web.Response]]):
        async def wrapped(request: web.Request) -> web.Response:
            tenant = tenant_of(request)
            if tenant is None:
                return error(401, "not authenticated")
            return await handler(request, tenant)

        return wrapped

    @authenticated
    async def list_or_find(request: web.Request, tenant: str) -> web.Response:
        store = request.app[STORE]
        code = request.query.get("code")
        if code is not None:
            record = store.by_code(tenant, entity, code)
            return json_response({"Success": True, "Data": [out(record)] if record else [], "Total": int(bool(record))})
        try:
            page = max(1, int(request.query.get("page", "1")))
            size = min(500, max(1, int(request.query.get("pageSize", "50"))))
        except ValueError:
            return error(400, "page and pageSize must be integers")
        records, total = store.list_records(tenant, entity, page=page, page_size=size)
        return json_response({"Success": True, "Data": [out(r) for r in records], "Total": total, "Page": page})

    @authenticated
    async def get_one(request: web.Request, tenant: str) -> web.Response:
        try:
            return json_response(
                {"Success": True, "Data": out(request.app[STORE].get(tenant, entity, request.match_info["id"]))}
            )
        except NotFound:
            return error(404, f"{entity} {request.match_info['id']} not found")

    @authenticated
    async def write(request: web.Request, tenant: str) -> web.Response:
        records = await read_records(request)
        if isinstance(records, web.Response):
            return records
        origin = "sync" if request.headers.get("X-Lienthong-Origin") == "sync" else "user"
        action = request.headers.get("X-Action")
        written = []
        for record in records:
            record = inp(record)
            if request.method == "PUT" and not record.get("id") and not record.get("code"):
                return error(400, "an update names the record by id or code")
            if (
                request.method == "PUT"
                and record.get("id")
                and not request.app[STORE].exists(tenant, entity, str(record["id"]))
            ):
                return error(404, f"{entity} {record['id']} not found")
            change = request.app[STORE].upsert(tenant, entity, record, origin=origin, action=action)
            written.append(out(change.after))
        return json_response({"Success": True, "Data": written})

    @authenticated
    async def delete(request: web.Request, tenant: str) -> web.Response:
        origin = "sync" if request.headers.get("X-Lienthong-Origin") == "sync" else "user"
        try:
            request.app[STORE].delete(tenant, entity, request.match_info["id"], origin=origin)
        except NotFound:
            return error(404, f"{entity} {request.match_info['id']} not found")
        return json_response({"Success": True})

    return list_or_find, get_one, write, delete


async def index(request: web.Request) -> web.Response:
    """The records of every tenant, entity by entity: a page to watch the sync happen."""
    store, system = request.app[STORE], request.app[SYSTEM]
    entities = sorted(set((CRM_RESOURCES if system == "crm" else ACCT_RESOURCES).values()))
    parts = [
        f"<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5>"
        f"<title>{system} sandbox</title><h1>{'AMIS CRM' if system == 'crm' else 'AMIS Kế toán'} sandbox</h1>"
    ]
    for tenant in store.tenants():
        parts.append(f"<h2>{html.escape(tenant)}</h2>")
        for entity in entities:
            records, total = store.list_records(tenant, entity, page_size=200)
            if not total:
                continue
            parts.append(
                f"<h3>{entity} ({total})</h3><table border=1 cellpadding=3><tr><th>id</th><th>code</th>"
                f"<th>record</th></tr>"
            )
            for record in records:
                rest = {k: v for k, v in record.items() if k not in ("id", "code")}
                parts.append(
                    f"<tr><td>{html.escape(str(record.get('id')))}</td>"
                    f"<td>{html.escape(str(record.get('code', '')))}</td>"
                    f"<td><code>{html.escape(orjson.dumps(rest).decode())}</code></td></tr>"
                )
            parts.append("</table>")
    return web.Response(text="".join(parts), content_type="text/html")


def create_sandbox(
    system: str, store: SandboxStore, *, credentials: dict[str, str], faults: FaultConfig | None = None
) -> web.Application:
    """``credentials``: CRM ``{client_id: tenant, f"{client_id}:secret": secret}``; accounting
    ``{app_id: tenant, f"{app_id}:code": connection code}``."""
    app = web.Application(middlewares=[fault_middleware(faults or FaultConfig())])
    app[STORE], app[CREDENTIALS], app[TOKENS], app[SYSTEM] = store, dict(credentials), {}, system
    app.router.add_get("/", index)
    if system == "crm":
        app.router.add_post("/Account", crm_login)
        resources, tenant_of, pascal, base = CRM_RESOURCES, crm_tenant, True, CRM_BASE
    else:
        resources, tenant_of, pascal, base = ACCT_RESOURCES, acct_tenant, False, ACCT_BASE
    for path, entity in resources.items():
        list_or_find, get_one, write, delete = resource_handlers(entity, tenant_of, pascal)
        app.router.add_get(base + path, list_or_find)
        app.router.add_post(base + path, write)
        app.router.add_put(base + path, write)
        app.router.add_get(base + path + "/{id}", get_one)
        app.router.add_delete(base + path + "/{id}", delete)
    return app


async def run_sandbox(
    system: str,
    *,
    db: Path,
    port: int,
    bootstrap_servers: str,
    topic_prefix: str,
    credentials: dict[str, str],
    faults: FaultConfig | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Serve a sandbox on host:port (loopback unless told) and publish its outbox until cancelled."""
    from sandboxes.publisher import OutboxPublisher

    store = SandboxStore(db, system, topic_prefix=topic_prefix)
    runner = web.AppRunner(create_sandbox(system, store, credentials=credentials, faults=faults))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    publisher = OutboxPublisher(store, bootstrap_servers)
    log.info("%s sandbox on http://127.0.0.1:%s (db %s)", system, port, db)
    try:
        await publisher.run()
    finally:
        await runner.cleanup()
        store.close()
        await asyncio.sleep(0)
