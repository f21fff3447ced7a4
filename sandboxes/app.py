"""Sandboxes of AMIS CRM and AMIS Kế toán as services: ``lienthong sandbox crm|acct``.

The sandboxes themselves are ``sandboxes/crm.py`` (the CRM Open API v2) and ``sandboxes/acct.py``
(the ACT Open API), each with the extensions the sync matrix needs labelled as such. They publish
nothing to Kafka: like the real systems, they are read by the capture services (``lienthong capture
crm|acct``) and written by the connectors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from common import metrics
from common.listeners import serve_app
from common.names import System
from sandboxes.acct import create_acct_sandbox
from sandboxes.acct_answers import AcctAnswers
from sandboxes.acct_store import ActStore
from sandboxes.crm import create_crm_sandbox
from sandboxes.crm_store import CrmStore
from sandboxes.faults import FaultConfig
from sandboxes.settings import CrmAnswers

log = logging.getLogger(__name__)


def creations(journal: Iterable[dict]) -> dict[tuple[str, str], int]:
    """How many times each (resource or kind, code) was created, from a sandbox store's journal
    (``CrmStore.journal``, ``ActStore.journal``): a record synced twice shows as 2."""
    counts: dict[tuple[str, str], int] = {}
    for entry in journal:
        if entry["op"] == "create":
            key = (str(entry.get("resource") or entry.get("kind")), str(entry["code"]))
            counts[key] = counts.get(key, 0) + 1
    return counts


async def run_sandbox(
    system: System,
    *,
    db: Path,
    port: int,
    credentials: dict[str, str],
    faults: FaultConfig | None = None,
    host: str = "127.0.0.1",
    app_id: str = "",
    callback_url: str | None = None,
    callback_urls: dict[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
    admin_token: str | None = None,
    crm_answers: CrmAnswers | None = None,
    acct_answers: AcctAnswers | None = None,
) -> None:
    """Serve a sandbox on host:port (loopback unless told) until cancelled.

    ``credentials``: CRM ``{client_id: tenant, "<client_id>:secret": secret}``; accounting
    ``{"<app_id>:<access_code>": tenant}``, with ``app_id`` the application's and ``callback_urls`` where
    each tenant's callbacks go (the capture service's ``/callback/<callback_secret>`` on its public
    port), ``callback_url`` for a tenant without one. Port 0 is a free port the
    system chooses; ``ready`` is called with the sandbox's URL once it listens. ``admin_token`` guards the
    ``/sandbox/...`` routes (``sandboxes/admin.py``); None: a random one nobody knows. ``crm_answers``: the
    CRM sandbox's answers where the reference allows several (``LIENTHONG_SANDBOX_CRM_ANSWERS``); ``acct_answers``
    the accounting sandbox's (``LIENTHONG_SANDBOX_ACCT_ANSWERS``, ``sandboxes/acct_answers.py``)."""
    crm_store = acct_store = None
    if system == System.CRM:
        crm_store = CrmStore(db)
        app = create_crm_sandbox(
            crm_store, credentials=credentials, faults=faults, admin_token=admin_token, answers=crm_answers
        )
    else:
        if not app_id:
            raise ValueError("the accounting sandbox needs the application's app_id (LIENTHONG_ACCT_APP_ID)")
        acct_store = ActStore(db)
        app = create_acct_sandbox(
            acct_store,
            app_id=app_id,
            credentials=credentials,
            callback_url=callback_url,
            callback_urls=callback_urls,
            faults=faults,
            admin_token=admin_token,
            answers=acct_answers,
        )
    runner = await serve_app(instrument(app, system), host, port)
    bound = runner.addresses[0][1] if runner.addresses else port
    url = f"http://{host}:{bound}"
    log.info("%s sandbox on %s (db %s)", system, url, db)
    if ready is not None:
        ready(url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        for store in (crm_store, acct_store):
            if store is not None:
                store.close()


def instrument(app: web.Application, system: System) -> web.Application:
    """A sandbox's ``/metrics``, ``/healthz``, ``/readyz`` (ready once it serves) and
    ``lienthong_sandbox_requests_total`` (by route and status). Before the app is started."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.SANDBOX_REQUESTS.labels(system, endpoint, str(exc.status)).inc()
            raise
        metrics.SANDBOX_REQUESTS.labels(system, endpoint, str(response.status)).inc()
        return response

    app.middlewares.insert(0, count)
    return metrics.add_health_routes(app)
