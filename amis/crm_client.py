"""A client of the AMIS CRM Open API v2, as ``amis-apis.md`` Part 1 documents it.

* ``POST {base}/Account`` with ``client_id`` / ``client_secret`` answers ``{"success", "code",
  "data": "<JWT>"}``; the token's ``exp`` says when it ends (24 h). It is cached per tenant and
  fetched again ``renew_before`` seconds before it ends, and at once when a call answers 401.
* Every data call sends ``Authorization: Bearer <token>`` **and** ``Clientid: <client_id>``.
* Lists are paged by ``page`` / ``pageSize`` (at most 100), newest first by ``modified_date``
  unless told, with no total: the last page is the one shorter than ``pageSize``. Whether the first
  page is ``0`` or ``1`` is unknown (§1.4): ``every_row`` reads a listing right either way.
* Whether deleted rows stay listed is unknown too (§1.4: order rows carry ``is_deleted``):
  ``listed_as_deleted`` says a row is one, and every reader takes it for gone.
* Writes take arrays and answer one result per item (``{"success", "data": <id>}`` or
  ``validate_infos``); PUT changes only the fields sent; DELETE takes an array of ids.

The functions ``parse_*`` read the documented envelopes; they are what the tests hold to the
reference's shapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
from pydantic import SecretStr

from amis.errors import ProtocolError, Refused, Transient
from amis.tokens import Token
from common import metrics
from common.names import System

MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class CrmCredentials:
    client_id: str  # the AppID typed in CRM's API settings
    client_secret: SecretStr  # the "Mã bảo mật" CRM generated for it


@dataclass(frozen=True)
class ItemResult:
    """One item of a write: its id when it succeeded, else the system's validation messages."""

    success: bool
    id: str | None
    errors: list[str]

    def message(self) -> str:
        return "; ".join(self.errors) or "refused without a message"


def listed_as_deleted(row: dict[str, Any]) -> bool:
    """A row CRM still lists after its deletion (``is_deleted`` true, as order rows carry it)."""
    flag = row.get("is_deleted")
    return flag is True or flag == 1 or (isinstance(flag, str) and flag.strip().lower() in ("true", "1"))


def parse_token_response(body: Any) -> tuple[str, float]:
    """``{"success": true, "code": 0, "data": "<JWT>"}`` -> (token, its ``exp``)."""
    if not isinstance(body, dict) or body.get("success") is not True or not isinstance(body.get("data"), str):
        raise ProtocolError(f"CRM /Account did not answer a token: {str(body)[:300]}")
    token = body["data"]
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ProtocolError(f"CRM /Account answered a token that is not a JWT ({exc})") from None
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)):
        raise ProtocolError("CRM /Account answered a JWT without exp")
    return token, float(exp)


def parse_list(body: Any) -> list[dict[str, Any]]:
    """``{"success": true, "code": 200, "data": [...]}`` -> the records."""
    if not isinstance(body, dict) or body.get("success") is not True:
        raise ProtocolError(f"CRM list answer is not a success envelope: {str(body)[:300]}")
    data = body.get("data")
    if data is None:
        return []
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ProtocolError("CRM list answer's data is not an array of records")
    return data


def parse_write_results(body: Any, expected: int) -> list[ItemResult]:
    """``{"success", "code", "results": [{"success", "data": <id>, "validate_infos": [...]}]}``."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise ProtocolError(f"CRM write answer has no results: {str(body)[:300]}")
    results: list[ItemResult] = []
    for item in body["results"]:
        if not isinstance(item, dict):
            raise ProtocolError("CRM write result is not an object")
        infos = item.get("validate_infos") or item.get("validate_result") or []
        errors = [
            f"{info.get('field_name') or '?'}: {info.get('error_message') or ''}".strip()
            for info in infos
            if isinstance(info, dict)
        ]
        if item.get("success") is not True and not errors and item.get("error_message"):
            errors = [str(item["error_message"])]
        data = item.get("data")
        results.append(
            ItemResult(success=item.get("success") is True, id=None if data is None else str(data), errors=errors)
        )
    if len(results) != expected:
        raise ProtocolError(f"CRM answered {len(results)} results for {expected} items")
    return results


def error_text(status: int, raw: bytes) -> str:
    """What the system said: the documented error body ``{ErrorCode, DevMsg, UserMsg, TraceId}``, or the raw text."""
    if not raw:
        return f"HTTP {status} with an empty body"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"HTTP {status}: {raw[:200].decode(errors='replace')}"
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("ErrorCode", "UserMsg", "DevMsg") if body.get(k)]
        if parts:
            return f"HTTP {status}: " + ": ".join(parts)
    return f"HTTP {status}: {str(body)[:200]}"


class CrmClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        credentials: dict[str, CrmCredentials],
        *,
        timeout: float = 10.0,
        renew_before: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.renew_before = renew_before
        self.clock = clock
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.logins = 0  # how many tokens were fetched (tests, the dashboard)
        # the API's first page number once a listing has shown it (every_row); None: not known yet
        self.first_page: int | None = None

    # --- tokens ----------------------------------------------------------------------------------

    def _credentials(self, tenant: str) -> CrmCredentials:
        creds = self.credentials.get(tenant)
        if creds is None:
            raise Refused(f"no CRM credentials for tenant {tenant!r}: add it to LIENTHONG_CRM_CREDENTIALS", status=401)
        return creds

    async def token(self, tenant: str) -> str:
        """The tenant's token, fetched when there is none or it ends within ``renew_before`` seconds."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            held = self._tokens.get(tenant)
            if held is None or held.expires_at - self.clock() <= self.renew_before:
                held = await self._login(tenant)
                self._tokens[tenant] = held
            return held.value

    def forget_token(self, tenant: str, value: str | None = None) -> None:
        held = self._tokens.get(tenant)
        if held is not None and (value is None or held.value == value):
            del self._tokens[tenant]

    async def _login(self, tenant: str) -> Token:
        try:
            token = await self._fetch_token(tenant)
        except Exception:
            metrics.TOKEN_RENEWALS.labels(System.CRM, "failed").inc()
            raise
        metrics.TOKEN_RENEWALS.labels(System.CRM, "ok").inc()
        return token

    async def _fetch_token(self, tenant: str) -> Token:
        creds = self._credentials(tenant)
        status, raw, _ = await self._send(
            "POST",
            "/Account",
            headers={"Content-Type": "application/json"},
            body={"client_id": creds.client_id, "client_secret": creds.client_secret.get_secret_value()},
        )
        if 400 <= status < 500 and status not in (408, 429):
            raise Refused(
                f"CRM refused the login of {creds.client_id!r} for {tenant}: {error_text(status, raw)}", status=401
            )
        self._raise_for_status("POST", "/Account", status, raw)
        value, exp = parse_token_response(_json(raw))
        self.logins += 1
        return Token(value, exp)

    # --- calls -----------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        params: Sequence[tuple[str, str]] | None = None,
        body: Any = None,
    ) -> tuple[int, bytes, str | None]:
        try:
            with metrics.api_call(System.CRM, path) as done:
                async with self.session.request(
                    method,
                    self.base_url + path,
                    headers=headers,
                    params=list(params) if params else None,
                    data=orjson.dumps(body) if body is not None else None,
                    timeout=self.timeout,
                ) as response:
                    done(response.status)
                    return response.status, await response.read(), response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"CRM {method} {path}: {type(exc).__name__}: {exc}") from None

    def _raise_for_status(
        self, method: str, path: str, status: int, raw: bytes, retry_after: str | None = None
    ) -> None:
        if status in (408, 429) or status >= 500:
            try:
                wait = float(retry_after) if retry_after else None
            except ValueError:
                wait = None
            raise Transient(f"CRM {method} {path}: {error_text(status, raw)}", status=status, retry_after=wait)
        if status >= 400:
            raise Refused(f"CRM {method} {path}: {error_text(status, raw)}", status=status)

    async def call(
        self,
        tenant: str,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        body: Any = None,
    ) -> Any:
        """One data call with the tenant's token; a 401 fetches a new token and tries once more."""
        creds = self._credentials(tenant)
        for _attempt in (1, 2):
            token = await self.token(tenant)
            headers = {
                "Authorization": f"Bearer {token}",
                "Clientid": creds.client_id,
                "Content-Type": "application/json",
            }
            status, raw, retry_after = await self._send(method, path, headers=headers, params=params, body=body)
            if status == 401:
                self.forget_token(tenant, token)  # expired or revoked: log in again, once
                continue
            self._raise_for_status(method, path, status, raw, retry_after)
            return _json(raw)
        raise Refused(
            f"CRM {method} {path}: 401 even with a fresh token for {creds.client_id!r}; check the AppID's rights",
            status=401,
        )

    # --- resources ---------------------------------------------------------------------------------

    async def list_page(
        self,
        tenant: str,
        resource: str,
        page: int,
        page_size: int = MAX_PAGE_SIZE,
        *,
        order_by: str = "modified_date",
        descending: bool = True,
    ) -> list[dict[str, Any]]:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"pageSize must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        params = [
            ("page", str(page)),
            ("pageSize", str(page_size)),
            ("orderBy", order_by),
            ("isDescending", "true" if descending else "false"),
        ]
        return parse_list(await self.call(tenant, "GET", f"/{resource}", params=params))

    async def every_row(
        self, tenant: str, resource: str, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Every record of a resource, each once, page by page (newest first) until a page that is not
        full: CRM's lists have no filter and no total.

        The first page is ``0`` or ``1`` (§1.4: clients use both, and both returned data). Until a
        listing has shown which, reading starts at page 0, which a 0-based API answers with its first
        page and a 1-based one with its page 1 again (passed over by id on page 1), with nothing, or
        with an error (then page 1 is read). Starting at 1 on a 0-based API would skip the newest
        ``page_size`` records of every resource; starting at 0 on a 1-based one costs one page. The
        number is kept (``first_page``) only on proof: page 1 repeating page 0, or page 0 refused and
        page 1 answered (1); two full pages with no record in common (0). Rows read twice because a
        change moved them between two pages are passed over by id as well."""
        seen: set[str] = set()
        page = 0 if self.first_page is None else self.first_page
        page_zero: list[str] | None = None  # ids of page 0 while the first page is not known
        zero_refused = False
        while True:
            try:
                rows = await self.list_page(tenant, resource, page, page_size)
            except Refused:
                if page != 0 or self.first_page is not None:
                    raise
                zero_refused, page = True, 1  # a 1-based API may refuse page 0; page 1 says so
                continue
            ids = [str(row.get("id")) for row in rows]
            if self.first_page is None and page == 0:
                page_zero = ids
            elif self.first_page is None and page == 1 and ids:
                if zero_refused or ids == page_zero:
                    self.first_page = 1
                elif page_zero and len(page_zero) == page_size and not set(ids) & set(page_zero):
                    self.first_page = 0
            for record_id, row in zip(ids, rows, strict=True):
                if record_id not in seen:
                    seen.add(record_id)
                    yield row
            if page == 0 and not rows and self.first_page is None:
                page = 1  # nothing on page 0: an empty resource, or a 1-based API's answer
                continue
            if len(rows) < page_size:
                return
            page += 1

    async def by_codes(self, tenant: str, resource: str, codes: Sequence[str]) -> list[dict[str, Any]]:
        if not codes:
            return []
        return parse_list(await self.call(tenant, "GET", f"/{resource}/code", params=[("code", c) for c in codes]))

    async def by_ids(self, tenant: str, resource: str, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return parse_list(await self.call(tenant, "GET", f"/{resource}/id", params=[("id", str(i)) for i in ids]))

    async def create(self, tenant: str, resource: str, items: list[dict[str, Any]]) -> list[ItemResult]:
        return parse_write_results(await self.call(tenant, "POST", f"/{resource}", body=items), len(items))

    async def update(self, tenant: str, resource: str, items: list[dict[str, Any]]) -> list[ItemResult]:
        return parse_write_results(await self.call(tenant, "PUT", f"/{resource}", body=items), len(items))

    async def delete(self, tenant: str, resource: str, ids: list[str]) -> list[ItemResult]:
        body = [int(i) if str(i).isdigit() else i for i in ids]
        return parse_write_results(await self.call(tenant, "DELETE", f"/{resource}", body=body), len(ids))


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError(f"CRM answered something that is not JSON: {raw[:200].decode(errors='replace')}") from None
