"""How a connector talks to each system's API: paths, field names, authentication.

``SystemApi`` turns a canonical command into HTTP calls against one system (the sandboxes here, the
real AMIS APIs in production share their shapes). Errors are classified for the retry policy:
``Transient`` (retry: connection errors, timeouts, 408, 429, 5xx) or ``Refused`` (do not retry:
other 4xx), each with the status and the system's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from connectors.crm_fields import from_crm, to_crm
from connectors.errors import Refused, Transient
from connectors.resources import ACCT_PATHS, CRM_PATHS


@dataclass
class TenantCredentials:
    """CRM: ``client_id``/``client_secret``; accounting: ``app_id``/``connection_code``."""

    client_id: str | None = None
    client_secret: str | None = None
    app_id: str | None = None
    connection_code: str | None = None


class SystemApi:
    def __init__(
        self,
        system: str,
        base_url: str,
        credentials: dict[str, TenantCredentials],
        session: aiohttp.ClientSession,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.system = system
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._tokens: dict[str, str] = {}
        self.paths = CRM_PATHS if system == "crm" else ACCT_PATHS

    # --- wire names ------------------------------------------------------------------------------

    def to_api(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        return to_crm(entity, record) if self.system == "crm" else record

    def from_api(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        return from_crm(entity, record) if self.system == "crm" else record

    # --- calls -----------------------------------------------------------------------------------

    async def _headers(self, tenant: str) -> dict[str, str]:
        creds = self.credentials.get(tenant)
        if creds is None:
            raise Refused(f"no {self.system} credentials for tenant {tenant!r}", status=401)
        headers = {"X-Lienthong-Origin": "sync", "Content-Type": "application/json"}
        if self.system == "crm":
            if tenant not in self._tokens:
                self._tokens[tenant] = await self._login(tenant, creds)
            headers["Authorization"] = f"Bearer {self._tokens[tenant]}"
        else:
            headers["X-App-Id"] = creds.app_id or ""
            headers["X-Connection-Code"] = creds.connection_code or ""
        return headers

    async def _login(self, tenant: str, creds: TenantCredentials) -> str:
        body = await self._call(
            "POST",
            "/Account",
            tenant=None,
            json_body={"client_id": creds.client_id, "client_secret": creds.client_secret},
        )
        return body["Data"]["access_token"]

    async def _call(
        self, method: str, path: str, *, tenant: str | None, json_body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        headers = await self._headers(tenant) if tenant is not None else {"Content-Type": "application/json"}
        url = self.base_url + path
        try:
            async with self.session.request(
                method,
                url,
                headers=headers,
                params=params,
                timeout=self.timeout,
                data=orjson.dumps(json_body) if json_body is not None else None,
            ) as r:
                raw = await r.read()
                status = r.status
                retry_after = r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {"ErrorMessage": raw[:200].decode(errors="replace")}
        message = f"{method} {path}: HTTP {status}: {body.get('ErrorMessage') if isinstance(body, dict) else body}"
        if status == 401 and tenant is not None and self.system == "crm" and tenant in self._tokens:
            del self._tokens[tenant]  # an expired token: log in again on the retry
            raise Transient(message, status=status)
        if status in (408, 429) or status >= 500:
            raise Transient(message, status=status, retry_after=float(retry_after) if retry_after else None)
        if status >= 400:
            raise Refused(message, status=status)
        return body

    async def find_by_code(self, tenant: str, entity: str, code: str) -> dict[str, Any] | None:
        body = await self._call("GET", self.paths[entity], tenant=tenant, params={"code": code})  # by business code
        found = body.get("Data") or []
        return self.from_api(entity, found[0]) if found else None

    async def write(
        self, tenant: str, entity: str, op: str, key: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Apply one command; returns the written record (None for a delete). Idempotent by code or id."""
        if entity not in self.paths:
            raise Refused(f"{self.system} has no {entity} resource", status=404)
        path = self.paths[entity]
        record_id, code = key.get("id"), key.get("code")
        if not record_id and code and op in ("update", "delete", "create", "upsert"):
            existing = await self.find_by_code(tenant, entity, str(code))
            record_id = existing["id"] if existing else None
        if op == "delete":
            if not record_id:
                return None  # already gone: deleting it again changes nothing
            try:
                await self._call("DELETE", f"{path}/{record_id}", tenant=tenant)
            except Refused as exc:
                if exc.status != 404:
                    raise
            return None
        if op == "update" and not record_id:
            raise Refused(f"{self.system} {entity} {code or '?'} does not exist to update", status=404)
        record = dict(fields)
        if record_id:
            record["id"] = record_id
        if code and "code" not in record:
            record["code"] = code
        body = await self._call(
            "PUT" if record_id else "POST", path, tenant=tenant, json_body=[self.to_api(entity, record)]
        )
        written = (body.get("Data") or [None])[0]
        return self.from_api(entity, written) if written else None
