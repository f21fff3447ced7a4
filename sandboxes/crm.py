"""A sandbox of AMIS CRM that speaks the public CRM Open API v2 (``amis-apis.md`` Part 1, checklist Part 6).

* ``POST {root}/Account`` ``{"client_id", "client_secret"}`` -> ``{"success": true, "code": 0,
  "data": "<JWT>"}``: an HS256 JWT with ``payloaddata``, ``exp`` (``token_ttl_s`` ahead, 24 h by
  default), ``iss`` ``MISA``, ``aud`` ``AMISCRM2``.
* Every data call needs ``Authorization: Bearer <token>`` **and** ``Clientid`` (the token's own
  AppID); otherwise HTTP 401 with an empty body.
* Resources ``Customers``, ``Contacts``, ``Products``, ``SaleOrders``, ``Stocks`` (``Product`` is an
  alias of ``Products``), snake_case fields, numeric ``id``, codes ``account_number``,
  ``contact_code``, ``product_code``, ``sale_order_no``, pick-lists as Vietnamese labels.
* ``GET {root}/<Resource>?page=&pageSize=&orderBy=&isDescending=``: ``page`` 0 and 1 are both the
  first page (``LIENTHONG_SANDBOX_CRM_ANSWERS``: or 0 the first and 1 the second; or 1 the first and 0
  empty or refused), ``pageSize`` 10 by default and at most 100, newest first by ``modified_date`` by
  default (ties in a stable order: the higher id first); ``{"success", "code": 200, "data"}`` and
  no total. ``/<Resource>/code?code=A&code=B`` and ``/<Resource>/id?id=1&id=2`` look records up.
* ``POST`` / ``PUT`` take JSON arrays and answer ``{"success", "code": 200, "results": [{"success",
  "data": <id>} | {"success": false, "validate_infos": [{"field_name", "error_message"}]}]}`` (a POST
  with HTTP 200, or 201: the answers setting); PUT changes only the fields sent; ``DELETE`` takes an
  array of ids. Deleted records leave the lists, or (the answers setting) stay in lists and lookups
  with ``is_deleted`` true: the reference leaves it open, and capture has to notice either way.

**Extensions** (not in the public API; the matrix needs them): ``ProductCategories``, ``Quotes``,
``InvoiceRequests``, ``PricePolicies``, the same protocol; their answers carry ``"extension"`` and
the header ``X-Sandbox-Extension``. CRM pushes nothing to partners: changes are found by polling.

Here the sandbox is assembled (``create_crm_sandbox``) with its own control and its page; the
resources and their records are ``sandboxes/crm_store.py``, the API ``sandboxes/crm_api.py``.
"""

from __future__ import annotations

import html
import secrets

from aiohttp import web

from sandboxes.admin import protect
from sandboxes.crm_api import CONFIG, STORE, create, delete, json_response, list_records, login, lookup, stocks, update
from sandboxes.crm_store import EXTENSION_FIELDS, RESOURCES, SYSTEM_FIELDS, CrmStore
from sandboxes.faults import FaultConfig, fault_middleware
from sandboxes.pages import STYLE, fields_table
from sandboxes.settings import CrmAnswers

ROOTS = ("/api/v2", "/crm/gc/api/public/api/v2")


# --- the sandbox's own control and its page (not the API) -------------------------------------------


async def revoke_tokens(request: web.Request) -> web.Response:
    """Sandbox control (not CRM's): every token issued so far answers 401 from now on, as an expired one would."""
    config = request.app[CONFIG]
    config["revoked_before"] = config["clock"]() + 0.001
    return json_response({"revoked": True, "sandbox_control": "not part of AMIS CRM"})


async def index(request: web.Request) -> web.Response:
    store = request.app[STORE]
    parts = [
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>crm sandbox</title>"
        + STYLE
        + "<h1>AMIS CRM sandbox</h1><p class=note>The public CRM Open API v2 under <code>/api/v2</code>. Resources "
        "marked <b>extension</b> are not part of it: only this sandbox has them. The page reloads every 5 s."
        "</p>"
    ]
    tenants = store.tenants()
    if not tenants:
        parts.append("<p>No records yet.</p>")
    for tenant in tenants:
        parts.append(f"<h2>{html.escape(tenant)}</h2>")
        for resource in RESOURCES.values():
            records = store.all(tenant, resource.name)
            if not records:
                continue
            label = f" <small>(extension: {html.escape(resource.extension)})</small>" if resource.extension else ""
            if resource.name in EXTENSION_FIELDS:
                label += (
                    " <small>(extension fields: "
                    + html.escape(", ".join(EXTENSION_FIELDS[resource.name]))
                    + ")</small>"
                )
            parts.append(f"<h3>{resource.name} ({len(records)}){label}</h3>")
            parts.append(
                fields_table(
                    records,
                    first=("id", resource.code_field, "modified_date"),
                    skip=tuple(f for f in SYSTEM_FIELDS if f not in ("id", "modified_date")),
                    testid=f"crm-{resource.name}",
                )
            )
    return web.Response(text="".join(parts), content_type="text/html")


def create_crm_sandbox(
    store: CrmStore,
    *,
    credentials: dict[str, str],
    faults: FaultConfig | None = None,
    token_ttl_s: float = 24 * 3600,
    product_writes: bool = True,
    admin_token: str | None = None,
    answers: CrmAnswers | None = None,
) -> web.Application:
    """``credentials``: ``{client_id: tenant, "<client_id>:secret": secret}``. ``/sandbox/...`` needs
    ``admin_token`` (``sandboxes/admin.py``; a random one when None, read back as ``app[ADMIN_TOKEN]``).
    ``answers``: which of the answers the reference allows it gives (``LIENTHONG_SANDBOX_CRM_ANSWERS``)."""
    app = web.Application(
        middlewares=[fault_middleware(faults or FaultConfig(), applies=lambda path: path.startswith(ROOTS))]
    )
    app[STORE] = store
    app[CONFIG] = {
        "credentials": dict(credentials),
        "key": secrets.token_hex(32),
        "token_ttl_s": token_ttl_s,
        "clock": store.clock,
        "revoked_before": 0.0,
        "product_writes": product_writes,
        "answers": answers or CrmAnswers(),
    }
    protect(app, admin_token)
    app.router.add_get("/", index)
    app.router.add_post("/sandbox/revoke-tokens", revoke_tokens)
    for root in ROOTS:
        app.router.add_post(root + "/Account", login)
        app.router.add_get(root + "/Stocks", stocks)
        app.router.add_get(root + "/{resource}", list_records)
        app.router.add_get(root + "/{resource}/{field}", lookup)
        app.router.add_post(root + "/{resource}", create)
        app.router.add_put(root + "/{resource}", update)
        app.router.add_delete(root + "/{resource}", delete)
    return app
