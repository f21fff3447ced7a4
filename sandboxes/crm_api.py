"""The CRM sandbox's public CRM Open API v2: the token (``/Account``) and the data calls on each
resource (``sandboxes/crm.py`` lists them), with the documented answers and errors.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
from aiohttp import web

from sandboxes.crm_store import EXTENSION_FIELDS, RESOURCES, SYSTEM_FIELDS, CrmStore, Resource
from sandboxes.wire import EXTENSION_HEADER

ALIASES = {"Product": "Products"}

STORE = web.AppKey("crm_store", CrmStore)
CONFIG = web.AppKey("crm_config", dict)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def doc_error(status: int, code: str, message: str) -> web.Response:
    """The documented error body (amis-apis.md §1.5)."""
    return json_response(
        {"ErrorCode": code, "DevMsg": message, "UserMsg": message, "TraceId": uuid.uuid4().hex}, status=status
    )


def unauthorized() -> web.Response:
    return web.Response(status=401)  # empty body, as observed


def issue_token(config: dict[str, Any], client_id: str, tenant: str) -> str:
    now = int(config["clock"]())
    issued = {"tenant": tenant, "client_id": client_id, "issued": config["clock"](), "nonce": secrets.token_hex(4)}
    payload = base64.b64encode(orjson.dumps(issued))
    claims = {
        "payloaddata": payload.decode(),
        "exp": now + int(config["token_ttl_s"]),
        "iss": "MISA",
        "aud": "AMISCRM2",
    }
    return jwt.encode(claims, config["key"], algorithm="HS256")


async def login(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return doc_error(400, "InvalidParam", "the body is not JSON")
    if not isinstance(body, dict):
        return doc_error(400, "InvalidParam", "the body must be {client_id, client_secret}")
    client_id = str(body.get("client_id") or "")
    tenant = config["credentials"].get(client_id)
    if tenant is None or body.get("client_secret") != config["credentials"].get(f"{client_id}:secret"):
        return doc_error(401, "InvalidAppID", "unknown client_id or wrong client_secret")
    return json_response({"success": True, "code": 0, "data": issue_token(config, client_id, tenant)})


def caller(request: web.Request) -> tuple[str, str] | None:
    """(tenant, client id) of a data call, or None: a valid, unexpired token and the matching Clientid."""
    config = request.app[CONFIG]
    header = request.headers.get("Authorization", "")
    client_id = request.headers.get("Clientid")
    if not header.startswith("Bearer ") or not client_id:
        return None
    try:
        claims = jwt.decode(
            header.removeprefix("Bearer ").strip(),
            config["key"],
            algorithms=["HS256"],
            audience="AMISCRM2",
            issuer="MISA",
            options={"verify_exp": False},
        )
        payload = orjson.loads(base64.b64decode(claims["payloaddata"]))
    except (jwt.PyJWTError, KeyError, ValueError, orjson.JSONDecodeError):
        return None
    if claims.get("exp", 0) <= config["clock"]():
        return None  # expired
    if payload.get("client_id") != client_id or payload.get("issued", 0) < config["revoked_before"]:
        return None
    return payload["tenant"], client_id


def resource_of(request: web.Request) -> Resource | None:
    name = request.match_info["resource"]
    return RESOURCES.get(ALIASES.get(name, name))


def labelled(resource: Resource, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    if resource.extension:
        return {**body, "extension": resource.extension}, {EXTENSION_HEADER: resource.extension}
    known = EXTENSION_FIELDS.get(resource.name, {})
    data = body.get("data")
    records: list[Any] = data if isinstance(data, list) else []
    used = {name: known[name] for record in records if isinstance(record, dict) for name in record if name in known}
    if used:
        return {**body, "extension_fields": used}, {EXTENSION_HEADER: "; ".join(f"{k}: {v}" for k, v in used.items())}
    return body, {}


def authenticated(handler: Callable[[web.Request, str, str, Resource], Awaitable[web.Response]]):
    async def wrapped(request: web.Request) -> web.Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        resource = resource_of(request)
        if resource is None:
            return doc_error(404, "InvalidParam", f"no resource {request.match_info['resource']!r}")
        return await handler(request, who[0], who[1], resource)

    return wrapped


def _bool(text: str | None, default: bool) -> bool:
    return default if text is None else text.strip().lower() in ("true", "1")


@authenticated
async def list_records(request: web.Request, tenant: str, _client: str, resource: Resource) -> web.Response:
    answers = request.app[CONFIG]["answers"]
    try:
        page = int(request.query.get("page", str(answers.first_page)))
        size = int(request.query.get("pageSize", "10"))
    except ValueError:
        return doc_error(400, "InvalidParam", "page and pageSize must be integers")
    if not 1 <= size <= 100:
        return doc_error(400, "InvalidParam", f"pageSize must be between 1 and 100, not {size}")
    order_by = request.query.get("orderBy", "modified_date")
    descending = _bool(request.query.get("isDescending"), True)
    if page < 0:
        return doc_error(400, "InvalidParam", f"page must not be negative, not {page}")
    if answers.first_page == 0:
        page += 1  # the store counts from 1
    elif page == 0 and answers.page_zero == "refused":
        return doc_error(400, "InvalidParam", "page starts at 1")
    store = request.app[STORE]
    if page == 0 and answers.first_page == 1 and answers.page_zero == "empty":
        data: list[dict[str, Any]] = []
    else:  # the store counts from 1, and takes page 0 for page 1
        data = store.page(tenant, resource.name, page=page, size=size, order_by=order_by, descending=descending)
    body, headers = labelled(resource, {"success": True, "code": 200, "data": data})
    return json_response(body, headers=headers)


@authenticated
async def lookup(request: web.Request, tenant: str, _client: str, resource: Resource) -> web.Response:
    store = request.app[STORE]
    if request.match_info["field"].lower() == "code":
        data = store.by_codes(tenant, resource.name, request.query.getall("code", []))
    elif request.match_info["field"].lower() == "id":
        raw = request.query.getall("id", []) or request.query.getall("ids", [])
        ids = [int(i) for part in raw for i in part.split(",") if i.strip().isdigit()]
        data = store.by_ids(tenant, resource.name, ids)
    else:
        return doc_error(404, "InvalidParam", f"no lookup by {request.match_info['field']!r}")
    body, headers = labelled(resource, {"success": True, "code": 200, "data": data})
    return json_response(body, headers=headers)


def _validate(resource: Resource, item: dict[str, Any], creating: bool, store: CrmStore, tenant: str) -> list[dict]:
    infos: list[dict[str, str]] = []
    if creating:
        for name in SYSTEM_FIELDS:
            if name in item and item[name] not in (None, 0, ""):
                infos.append({"field_name": name, "error_message": f"{name} must not be sent when creating"})
        for name in resource.required:
            if item.get(name) in (None, ""):
                infos.append({"field_name": name, "error_message": "Không được để trống"})
    for name, labels in resource.labels.items():
        if name in item and item[name] is not None and item[name] not in labels:
            infos.append(
                {
                    "field_name": name,
                    "error_message": f"Giá trị {item[name]!r} không hợp lệ ({', '.join(sorted(labels))})",
                }
            )
    code = item.get(resource.code_field)
    if code not in (None, ""):
        existing = store.by_code(tenant, resource.name, str(code))
        if existing is not None and (creating or str(existing["id"]) != str(item.get("id"))):
            infos.append({"field_name": resource.code_field, "error_message": f"Mã {code} đã tồn tại"})
    if resource.lines_field and resource.lines_field in item:
        lines = item[resource.lines_field]
        if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
            infos.append({"field_name": resource.lines_field, "error_message": "must be an array of lines"})
    return infos


async def _items(request: web.Request) -> list[Any] | web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return doc_error(400, "InvalidParam", "the body is not JSON")
    if not isinstance(body, list):
        return doc_error(400, "InvalidParam", "the body must be a JSON array")
    return body


def _write_answer(resource: Resource, results: list[dict[str, Any]], status: int = 200) -> web.Response:
    body = {"success": all(r["success"] for r in results), "code": status, "results": results}
    body, headers = labelled(resource, body)
    return json_response(body, status=status, headers=headers)


def _writable(request: web.Request, resource: Resource) -> web.Response | None:
    if resource.name == "Products" and not request.app[CONFIG]["product_writes"]:
        return doc_error(403, "Forbidden", "this CRM only reads Products through the API")
    return None


async def _writable_items(request: web.Request, resource: Resource) -> list[Any] | web.Response:
    """The items of a write, or the answer refusing it (a read-only resource, a body that is no array)."""
    refused = _writable(request, resource)
    if refused:
        return refused
    return await _items(request)


@authenticated
async def create(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    items = await _writable_items(request, resource)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not isinstance(item, dict):
            results.append(
                {
                    "success": False,
                    "data": None,
                    "validate_infos": [{"field_name": "", "error_message": "not an object"}],
                }
            )
            continue
        infos = _validate(resource, item, True, store, tenant)
        if infos:
            results.append({"success": False, "data": None, "validate_infos": infos})
            continue
        clean = {k: v for k, v in item.items() if k not in SYSTEM_FIELDS}
        results.append({"success": True, "data": store.create(tenant, resource, clean, client)})
    return _write_answer(resource, results, request.app[CONFIG]["answers"].post_status)


@authenticated
async def update(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    items = await _writable_items(request, resource)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not isinstance(item, dict) or not str(item.get("id") or "").isdigit():
            results.append(
                {"success": False, "data": None, "validate_infos": [{"field_name": "id", "error_message": "Thiếu id"}]}
            )
            continue
        item = {**item, "id": int(item["id"])}
        infos = _validate(resource, item, False, store, tenant)
        if not infos and not store.update(tenant, resource, item, client):
            infos = [{"field_name": "id", "error_message": f"Không tìm thấy bản ghi {item['id']}"}]
        results.append({"success": not infos, "data": item["id"], **({"validate_infos": infos} if infos else {})})
    return _write_answer(resource, results)


@authenticated
async def delete(request: web.Request, tenant: str, client: str, resource: Resource) -> web.Response:
    items = await _writable_items(request, resource)
    if isinstance(items, web.Response):
        return items
    store, results = request.app[STORE], list[dict[str, Any]]()
    for item in items:
        if not str(item).isdigit():
            results.append(
                {"success": False, "data": item, "validate_infos": [{"field_name": "id", "error_message": "Thiếu id"}]}
            )
            continue
        listed = request.app[CONFIG]["answers"].deleted_rows == "listed"
        if store.delete(tenant, resource, int(item), client, keep=listed):
            results.append({"success": True, "data": int(item)})
        else:
            results.append(
                {
                    "success": False,
                    "data": int(item),
                    "validate_infos": [{"field_name": "id", "error_message": "Không tìm thấy bản ghi"}],
                }
            )
    return _write_answer(resource, results)


async def stocks(request: web.Request) -> web.Response:
    if caller(request) is None:
        return unauthorized()
    return json_response(
        {
            "success": True,
            "code": 200,
            "data": [{"stock_code": "KHO01", "stock_name": "Kho chính", "inactive": False, "async_id": "1"}],
        }
    )
