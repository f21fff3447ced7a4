"""The accounting sandbox's public ACT Open API: ``connect`` and the data calls under
``/apir/sync/actopen`` (``sandboxes/acct.py`` lists them), in ACT's PascalCase envelope.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from sandboxes.acct_callbacks import ActSandbox
from sandboxes.acct_store import (
    EXTENSION_DATA_TYPES,
    EXTENSION_VOUCHER_TYPES,
    READ_TYPES,
    ActStore,
)
from sandboxes.wire import EXTENSION_HEADER, VN, iso_vn

STORE = web.AppKey("act_store", ActStore)
CONFIG = web.AppKey("act_config", dict)
SANDBOX = web.AppKey("act_sandbox", ActSandbox)


def parse_local(text: str) -> float:
    """``YYYY-MM-DD HH:mm:ss`` (Vietnam time) or ISO with an offset, as epoch seconds."""
    moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=VN)).timestamp()


def envelope(
    data: Any = None,
    *,
    success: bool = True,
    code: str | None = None,
    message: str | None = None,
    custom: dict[str, Any] | None = None,
    extension: str | None = None,
    status: int = 200,
) -> web.Response:
    if extension:
        custom = {**(custom or {}), "Extension": extension}
    body = {
        "Success": success,
        "ErrorCode": code,
        "ErrorMessage": message,
        "Data": data if data is None or isinstance(data, str) else orjson.dumps(data).decode(),
        "CustomData": orjson.dumps(custom).decode() if custom is not None else None,
    }
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={EXTENSION_HEADER: extension} if extension else None,
    )


def failure(code: str, message: str) -> web.Response:
    return envelope(success=False, code=code, message=message)


async def read_body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return failure("InvalidParam", "body is not JSON")
    return body if isinstance(body, dict) else failure("InvalidParam", "body must be a JSON object")


async def connect(request: web.Request) -> web.Response:
    config, store = request.app[CONFIG], request.app[STORE]
    body = await read_body(request)
    if isinstance(body, web.Response):
        return body
    app_id, access_code = str(body.get("app_id") or ""), str(body.get("access_code") or "")
    if app_id != config["app_id"]:
        return failure("InvalidAppID", f"app_id {app_id!r} không hợp lệ")
    tenant = config["credentials"].get(f"{app_id}:{access_code}")
    if tenant is None:
        return failure("AppIDDisconnect", "Mã kết nối không hợp lệ hoặc đã bị ngắt kết nối")
    token = secrets.token_urlsafe(32)
    expires = store.clock() + config["token_ttl_s"]
    config["tokens"][token] = {"tenant": tenant, "expires": expires}
    config["company_codes"][tenant] = str(body.get("org_company_code") or "")
    data = {
        "access_token": token,
        "expired_time": iso_vn(int(expires * 1000)),
        "tenant_code": tenant,
        "app_name": f"Công ty {tenant}",
    }
    return envelope(data)


def data_call(handler: Callable[[web.Request, str, dict[str, Any]], Any]):
    async def wrapped(request: web.Request) -> web.Response:
        config, store = request.app[CONFIG], request.app[STORE]
        held = config["tokens"].get(request.headers.get("X-MISA-AccessToken", ""))
        if held is None:
            return failure("InvalidToken", "Token không hợp lệ")
        if held["expires"] <= store.clock():
            return failure("ExpiredToken", "Token đã hết hạn")
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        if body.get("app_id") not in (None, config["app_id"]):
            return failure("InvalidAppID", "app_id không khớp")
        return await handler(request, held["tenant"], body)

    return wrapped


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    return default if value is None else int(value)


async def _list(request: web.Request, tenant: str, body: dict[str, Any], *, deleted: bool) -> web.Response:
    try:
        data_type = _int(body, "data_type", 0)
        skip, take = _int(body, "skip", 0), _int(body, "take", 100)
    except (TypeError, ValueError):
        return failure("InvalidParam", "data_type, skip and take are numbers")
    if data_type not in READ_TYPES:
        return failure("InvalidParam", f"data_type {data_type} không hỗ trợ")
    if not 1 <= take <= 100 or skip < 0:
        return failure("InvalidParam", f"take must be 1..100 and skip ≥ 0 (take {take}, skip {skip})")
    since = body.get("last_sync_time")
    try:
        since_ms = int(parse_local(str(since)) * 1000) if since else None
    except ValueError:
        return failure("InvalidParam", f"last_sync_time {since!r} is not YYYY-MM-DD HH:mm:ss")
    store = request.app[STORE]
    records = store.dictionary_page(tenant, data_type, skip=skip, take=take, since_ms=since_ms, deleted=deleted)
    custom = {
        "LastSyncTime": datetime.fromtimestamp(store.clock(), tz=VN).strftime("%Y-%m-%d %H:%M:%S"),
        "Message": None,
    }
    return envelope(records, custom=custom, extension=EXTENSION_DATA_TYPES.get(data_type))


@data_call
async def get_dictionary(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return await _list(request, tenant, body, deleted=False)


@data_call
async def get_dictionary_delete(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return await _list(request, tenant, body, deleted=True)


@data_call
async def save_dictionary(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    items = body.get("dictionary")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return failure("InvalidParam", "dictionary must be an array of objects")
    if len(items) > 200:
        return failure("InvalidParam", f"at most 200 dictionary items per call, not {len(items)}")
    store, answers = request.app[STORE], request.app[CONFIG]["answers"]
    extension = next((EXTENSION_DATA_TYPES[901] for i in items if i.get("dictionary_type") == 901), None)
    if answers.save_dictionary == "queued":  # saved a moment later; a refused item is not reported anywhere
        sandbox = request.app[SANDBOX]
        sandbox.later(sandbox.process_save_dictionary(tenant, items))
        return envelope(str(uuid.uuid4()), extension=extension)
    results = [store.save_dictionary_item(tenant, item, "api") for item in items]
    if answers.save_dictionary == "records":
        return envelope(results, extension=extension)
    if answers.save_dictionary == "flags":
        flags = [{k: r.get(k) for k in ("success", "error_code", "error_message")} for r in results]
        return envelope(flags, extension=extension)
    refused = next((r for r in results if not r["success"]), None)
    if refused is not None:  # no per-item answer: the call says what went wrong, the other items are saved
        return envelope(success=False, code=refused["error_code"], message=refused["error_message"])
    data: Any = {"null": None, "empty": [], "count": len(results)}[answers.save_dictionary]
    return envelope(data, extension=extension)


def _vouchers(body: dict[str, Any]) -> list[dict[str, Any]] | web.Response:
    vouchers = body.get("voucher")
    if not isinstance(vouchers, list) or not all(isinstance(v, dict) for v in vouchers):
        return failure("InvalidParam", "voucher must be an array of objects")
    if len(vouchers) > 100:
        return failure("InvalidParam", f"at most 100 vouchers per call, not {len(vouchers)}")
    return vouchers


def accepted(
    request: web.Request,
    vouchers: list[dict[str, Any]],
    extension: str | None = None,
    results: list[dict[str, Any]] | None = None,
) -> web.Response:
    """The synchronous answer of save / delete, as ``LIENTHONG_SANDBOX_ACCT_ANSWERS`` says (§2.6: its Data is [UNK]);
    ``results``: one entry per voucher, when the sandbox checked them at once."""
    answers = request.app[CONFIG]["answers"]
    session_id = str(uuid.uuid4())
    data: Any = None
    if answers.save_data == "text":
        data = session_id
    elif answers.save_data == "results":
        data = [{**result, "session_id": session_id} for result in results or []] or [
            {"org_refid": v.get("org_refid"), "voucher_type": v.get("voucher_type"), "success": True} for v in vouchers
        ]
    return envelope(data, extension=extension, status=answers.save_status)


@data_call
async def save(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    vouchers = _vouchers(body)
    if isinstance(vouchers, web.Response):
        return vouchers
    for voucher in vouchers:
        if len(voucher.get("detail") or []) > 500:
            return failure("InvalidParam", f"voucher {voucher.get('org_refid')}: at most 500 detail lines")
    store, sandbox = request.app[STORE], request.app[SANDBOX]
    for item in body.get("dictionary") or []:
        if isinstance(item, dict):
            store.save_dictionary_item(tenant, item, "api")
    results = None
    if request.app[CONFIG]["answers"].save_data == "results":
        # answering voucher by voucher, ACT can refuse some at once: those get no callback
        results = []
        for voucher in vouchers:
            code, message = store.proposal_problem(tenant, voucher)
            results.append(
                {
                    "org_refid": voucher.get("org_refid"),
                    "voucher_type": voucher.get("voucher_type"),
                    "success": code is None,
                    "error_code": code,
                    "error_message": message,
                }
            )
        vouchers_later = [v for v, r in zip(vouchers, results, strict=True) if r["success"]]
    else:
        vouchers_later = vouchers
    if vouchers_later:
        sandbox.later(sandbox.process_save(tenant, vouchers_later))
    extension = next(
        (
            EXTENSION_VOUCHER_TYPES[v["voucher_type"]]
            for v in vouchers
            if v.get("voucher_type") in EXTENSION_VOUCHER_TYPES
        ),
        None,
    )
    return accepted(request, vouchers, extension, results)


@data_call
async def delete(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    vouchers = _vouchers(body)
    if isinstance(vouchers, web.Response):
        return vouchers
    store, sandbox = request.app[STORE], request.app[SANDBOX]
    missing = [str(v.get("org_refid")) for v in vouchers if store.proposal(tenant, str(v.get("org_refid"))) is None]
    if missing and request.app[CONFIG]["answers"].delete_missing == "answer":
        # refused at once; the others are still queued (their results come by callback)
        present = [v for v in vouchers if str(v.get("org_refid")) not in missing]
        if present:
            sandbox.later(sandbox.process_delete(tenant, present))
        return failure("VoucherNotFound", f"Không tìm thấy chứng từ {', '.join(missing)}")
    sandbox.later(sandbox.process_delete(tenant, vouchers))
    return accepted(request, vouchers)


@data_call
async def request_data(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    ids = body.get("list_org_refid")
    if not isinstance(ids, list) or len(ids) > 500:
        return failure("InvalidParam", "list_org_refid is an array of at most 500 ids")
    request_id = str(uuid.uuid4())
    sandbox = request.app[SANDBOX]
    sandbox.later(sandbox.process_request_data(tenant, request_id, [str(i) for i in ids]))
    return envelope({"request_id": request_id})


@data_call
async def get_call_back_detail_error(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    try:
        from_ms = int(parse_local(str(body["from_date"])) * 1000)
        to_ms = int(parse_local(str(body["to_date"])) * 1000) + 999
        skip, take = _int(body, "skip", 0), _int(body, "take", 100)
    except (KeyError, ValueError, TypeError):
        return failure("InvalidParam", "from_date and to_date (YYYY-MM-DD HH:mm:ss), skip and take are required")
    if not 1 <= take <= 100:
        return failure("InvalidParam", "take must be 1..100")
    items = request.app[STORE].undelivered(tenant, from_ms, to_ms)[skip : skip + take]
    return envelope(items)


@data_call
async def x_get_vouchers(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    """Extension: read proposals and vouchers back by org_refid / refid."""
    store = request.app[STORE]
    found = []
    for ref in body.get("list_org_refid") or []:
        proposal = store.proposal(tenant, str(ref))
        voucher = store.voucher(tenant, str(ref))
        if voucher is not None:
            found.append({**voucher, "state": "generated"})
        elif proposal is not None:
            found.append({**proposal[0], "state": proposal[1]})
    return envelope(found, extension="not part of the ACT Open API: vouchers cannot be read back")


@data_call
async def get_company_info(request: web.Request, tenant: str, body: dict[str, Any]) -> web.Response:
    return envelope({"company_name": f"Công ty {tenant}", "company_tax_code": None})
