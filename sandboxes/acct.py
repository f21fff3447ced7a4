"""A sandbox of AMIS Kế toán that speaks the public ACT Open API (``amis-apis.md`` Part 2, checklist Part 6).

* ``POST /api/oauth/actopen/connect`` ``{"app_id", "access_code", "org_company_code"}`` -> the
  PascalCase envelope whose ``Data`` is a JSON string ``{"access_token", "expired_time" (12 h
  ahead, +07:00), "tenant_code", "app_name"}``. Data calls carry ``X-MISA-AccessToken``; an
  expired token is answered HTTP 200 ``Success: false, ErrorCode: "ExpiredToken"``.
* ``/apir/sync/actopen/<name>`` (``/api/sync/actopen/`` too): ``get_dictionary`` and
  ``get_dictionary_delete`` (``data_type``, ``skip``, ``take`` ≤ 100, ``last_sync_time``: records
  changed at or after it, oldest first), ``save_dictionary`` (≤ 200 items, answered at once, one
  result per item; ``LIENTHONG_SANDBOX_ACCT_ANSWERS`` switches this and the other answers the reference
  leaves open: ``sandboxes/acct_answers.py``), ``save`` (≤ 100 vouchers of ≤ 500 lines; answered
  "queued", the result comes by callback ``data_type`` 1), ``delete`` (callback ``data_type`` 2), ``request_data``,
  ``get_call_back_detail_error`` (callbacks that could not be delivered).
* A ``save`` is a *proposal* keyed by ``org_refid``: saving it again updates it until an accountant
  generates the voucher (``POST /sandbox/ui/<tenant>/proposals/<org_refid>/generate``, or the page's
  button), after which saving or deleting it fails with ``IsCreatedVoucher`` and a ``data_type`` 18
  callback reports the voucher. Vouchers the accountant enters, edits or deletes
  (``/sandbox/ui/<tenant>/vouchers``) are reported as ``data_type`` 22 with ``custom_param.ModelState``.
* Callbacks are POSTed to ``callback_url`` as ``{"success", "error_code", "error_message",
  "signature", "data_type", "data": "<JSON string>", "org_company_code", "app_id"}``, ``signature``
  = HMAC-SHA256 of ``data`` keyed with the ``app_id``. A callback the partner does not acknowledge
  (HTTP 200 with ``Success: true``) after ``callback_attempts`` tries is kept for
  ``get_call_back_detail_error``.

``/sandbox/ui/...`` is what an accountant does in AMIS Kế toán's screens, not part of the API; like the
test control ``/sandbox/expire-tokens`` it needs the sandbox's admin token (``sandboxes/admin.py``).
**Extensions** (labelled ``X-Sandbox-Extension`` and ``CustomData.Extension``): price policies and
item groups as dictionaries (data_type 901, 902), contracts and quotes as vouchers (voucher_type
9001, 9002), issuance-proposal statuses (``issue_status``), ``x_get_vouchers`` (reading vouchers back).

Here the sandbox is assembled (``create_acct_sandbox``) with the accountant's screens, its own
controls and its page; its data is ``sandboxes/acct_store.py``, the API ``sandboxes/acct_api.py``,
and the processing of what the API queued, with the callbacks it owes, ``sandboxes/acct_callbacks.py``.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web

from sandboxes.acct_answers import AcctAnswers
from sandboxes.acct_api import (
    CONFIG,
    SANDBOX,
    STORE,
    connect,
    delete,
    get_call_back_detail_error,
    get_company_info,
    get_dictionary,
    get_dictionary_delete,
    read_body,
    request_data,
    save,
    save_dictionary,
    x_get_vouchers,
)
from sandboxes.acct_callbacks import ActSandbox
from sandboxes.acct_store import EXTENSION_DATA_TYPES, READ_TYPES, VOUCHER_TYPES, ActStore
from sandboxes.admin import page_token, protect
from sandboxes.faults import FaultConfig, fault_middleware
from sandboxes.pages import STYLE, fields_table

DATA_ROOTS = ("/apir/sync/actopen", "/api/sync/actopen")


# --- the accountant's screens and the sandbox's own controls (not the API) -----------------------


def _ui_answer(request: web.Request, data: Any, status: int = 200) -> web.StreamResponse:
    if request.query.get("redirect"):  # a button of the page: back to it (the caller has shown the token)
        raise web.HTTPSeeOther("/")  # the page's cookie shows the buttons again
    return web.Response(
        body=orjson.dumps({"sandbox_ui": "an accountant's action in AMIS Kế toán, not part of the API", "data": data}),
        status=status,
        content_type="application/json",
    )


async def ui_dictionary(request: web.Request) -> web.StreamResponse:
    tenant = request.match_info["tenant"]
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    result = request.app[STORE].save_dictionary_item(tenant, body, "ui")
    return _ui_answer(request, result, 200 if result["success"] else 400)


async def ui_generate(request: web.Request) -> web.StreamResponse:
    voucher = request.app[SANDBOX].generate(request.match_info["tenant"], request.match_info["org_refid"])
    if voucher is None:
        return _ui_answer(request, "no pending proposal with that org_refid", 404)
    return _ui_answer(request, voucher)


async def ui_voucher(request: web.Request) -> web.StreamResponse:
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    if int(body.get("voucher_type") or 0) not in VOUCHER_TYPES:
        return _ui_answer(
            request, f"voucher_type {body.get('voucher_type')!r} is not one of {sorted(VOUCHER_TYPES)}", 400
        )
    return _ui_answer(request, request.app[SANDBOX].enter_voucher(request.match_info["tenant"], body))


async def ui_remove_voucher(request: web.Request) -> web.StreamResponse:
    removed = request.app[SANDBOX].remove_voucher(request.match_info["tenant"], request.match_info["refid"])
    return _ui_answer(request, removed, 200 if removed else 404)


async def expire_tokens(request: web.Request) -> web.Response:
    """Sandbox control (not ACT's): every token issued so far is expired from now on."""
    for held in request.app[CONFIG]["tokens"].values():
        held["expires"] = 0.0
    return web.json_response({"expired": True, "sandbox_control": "not part of AMIS Kế toán"})


DICTIONARY_NAMES = {
    1: "customers (account objects)",
    2: "products (inventory items)",
    3: "stocks",
    4: "units",
    901: "price policies",
    902: "item groups",
}


def _generate_button(tenant: str, org_refid: str, token: str) -> str:
    """The accountant's "generate the voucher" for a pending proposal: a form carrying the admin token."""
    action = f"/sandbox/ui/{quote(tenant, safe='')}/proposals/{quote(org_refid, safe='')}/generate?redirect=1"
    return (
        f'<form method=post action="{html.escape(action)}"><input type=hidden name=token value="{html.escape(token)}">'
        f'<button data-testid="generate" data-org-refid="{html.escape(org_refid)}">Sinh chứng từ (generate)</button>'
        "</form>"
    )


def _delete_button(tenant: str, refid: str, token: str) -> str:
    """The accountant deleting a voucher (a ``data_type`` 22 callback, ``ModelState`` 3): a form with the token."""
    action = f"/sandbox/ui/{quote(tenant, safe='')}/vouchers/{quote(refid, safe='')}/delete?redirect=1"
    return (
        f'<form method=post action="{html.escape(action)}"><input type=hidden name=token value="{html.escape(token)}">'
        f'<button data-testid="delete-voucher" data-refid="{html.escape(refid)}">Xoá (delete)</button></form>'
    )


async def index(request: web.Request) -> web.Response:
    store = request.app[STORE]
    parts = [
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>acct sandbox</title>"
        + STYLE
        + "<h1>AMIS Kế toán sandbox</h1><p class=note>The ACT Open API under <code>/apir/sync/actopen</code>. "
        "Data types 901/902 and voucher types 9001/9002 are <b>extensions</b> of this sandbox. The buttons are "
        "what an accountant does in AMIS Kế toán's screens. The page reloads every 5 s.</p>"
    ]
    token = page_token(request)
    if token is None:
        parts.append(
            '<p data-testid="needs-token"><b>'
            + ("The token in this link is not this sandbox's admin token. " if "token" in request.query else "")
            + "The buttons need the sandbox's admin token: open the <code>/?token=…</code> link the sandbox printed "
            "at start (SECURITY.md).</b></p>"
        )
    tenants = store.tenants()
    if not tenants:
        parts.append("<p>No records yet.</p>")
    for tenant in tenants:
        parts.append(f"<h2>{html.escape(tenant)}</h2>")
        for data_type, (_write, id_field, code_field) in sorted(READ_TYPES.items()):
            records = store.dictionary_page(tenant, data_type, skip=0, take=500, since_ms=None, deleted=False)
            if records:
                label = (
                    f" <small>({html.escape(EXTENSION_DATA_TYPES[data_type])})</small>"
                    if data_type in EXTENSION_DATA_TYPES
                    else ""
                )
                name = DICTIONARY_NAMES.get(data_type, "dictionary")
                parts.append(f"<h3>{name}: data_type {data_type} ({len(records)}){label}</h3>")
                parts.append(
                    fields_table(records, first=(code_field,), skip=(id_field,), testid=f"dictionary-{data_type}")
                )
        proposals = store.proposals(tenant)
        if proposals:
            actions = []
            for proposal, state in proposals:
                if state != "pending":
                    actions.append(html.escape(state))
                elif token is None:
                    actions.append("pending (the button needs the admin token)")
                else:
                    actions.append(_generate_button(tenant, str(proposal.get("org_refid")), token))
            parts.append("<h3>proposals (đề nghị sinh chứng từ)</h3>")
            parts.append(
                fields_table(
                    [proposal for proposal, _ in proposals],
                    first=("org_refno", "voucher_type", "org_refid"),
                    extra=("state", actions),
                    testid="proposal",
                )
            )
        vouchers = store.vouchers(tenant)
        if vouchers:
            parts.append("<h3>vouchers (chứng từ)</h3>")
            buttons = [
                _delete_button(tenant, str(v.get("refid")), token) if token else "(the button needs the admin token)"
                for v in vouchers
            ]
            parts.append(
                fields_table(
                    vouchers, first=("refno", "voucher_type", "refid"), extra=("accountant", buttons), testid="voucher"
                )
            )
    return web.Response(text="".join(parts), content_type="text/html")


def create_acct_sandbox(
    store: ActStore,
    *,
    app_id: str,
    credentials: dict[str, str],
    callback_url: str | None = None,
    callback_urls: dict[str, str] | None = None,
    faults: FaultConfig | None = None,
    token_ttl_s: float = 12 * 3600,
    processing_delay_s: float = 0.02,
    callback_attempts: int = 3,
    callback_retry_s: float = 0.2,
    admin_token: str | None = None,
    answers: AcctAnswers | None = None,
) -> web.Application:
    """``credentials``: ``{"<app_id>:<access_code>": tenant}``; a tenant's callbacks go to its URL of
    ``callback_urls`` (as MISA keeps one APICallBack per company), else to ``callback_url``. ``/sandbox/...``
    needs ``admin_token`` (``sandboxes/admin.py``; a random one when None, read back as ``app[ADMIN_TOKEN]``).
    ``answers``: which answer it gives where the reference says [UNK] (``sandboxes/acct_answers.py``)."""
    faults = faults or FaultConfig()
    app = web.Application(
        middlewares=[fault_middleware(faults, applies=lambda path: path.startswith(("/api/", "/apir/")))]
    )
    config: dict[str, Any] = {
        "app_id": app_id,
        "credentials": dict(credentials),
        "callback_url": callback_url,
        "callback_urls": dict(callback_urls or {}),
        "token_ttl_s": token_ttl_s,
        "processing_delay_s": processing_delay_s,
        "callback_attempts": callback_attempts,
        "callback_retry_s": callback_retry_s,
        "answers": answers or AcctAnswers(),
        "tokens": {},
        "company_codes": {},
    }
    sandbox = ActSandbox(store, config, faults)
    app[STORE], app[CONFIG], app[SANDBOX] = store, config, sandbox
    protect(app, admin_token)
    app.router.add_get("/", index)
    app.router.add_post("/api/oauth/actopen/connect", connect)
    for root in DATA_ROOTS:
        app.router.add_post(root + "/get_dictionary", get_dictionary)
        app.router.add_post(root + "/get_dictionary_delete", get_dictionary_delete)
        app.router.add_post(root + "/save_dictionary", save_dictionary)
        app.router.add_post(root + "/save", save)
        app.router.add_delete(root + "/delete", delete)
        app.router.add_post(root + "/delete", delete)
        app.router.add_post(root + "/request_data", request_data)
        app.router.add_post(root + "/get_call_back_detail_error", get_call_back_detail_error)
        app.router.add_post(root + "/get_company_info", get_company_info)
        app.router.add_post(root + "/x_get_vouchers", x_get_vouchers)
    app.router.add_post("/sandbox/ui/{tenant}/dictionary", ui_dictionary)
    app.router.add_post("/sandbox/ui/{tenant}/proposals/{org_refid}/generate", ui_generate)
    app.router.add_post("/sandbox/ui/{tenant}/vouchers", ui_voucher)
    app.router.add_delete("/sandbox/ui/{tenant}/vouchers/{refid}", ui_remove_voucher)
    app.router.add_post("/sandbox/ui/{tenant}/vouchers/{refid}/delete", ui_remove_voucher)  # the page's button
    app.router.add_post("/sandbox/expire-tokens", expire_tokens)

    async def start(app: web.Application) -> None:
        sandbox.later(sandbox.deliver_forever())

    async def stop(app: web.Application) -> None:
        await sandbox.close()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
