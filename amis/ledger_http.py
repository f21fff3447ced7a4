"""A system's ledger served over HTTP by its capture service, and the connectors' client of it.

Scaled out, the connectors of a system are replicas of one consumer group, on any node; the ledger
they share with capture (``amis.ledger``: the integration's writes, ACT's awaited callbacks, the
applied command ids) has one owner, the capture service of the system, which keeps the SQLite files
on its volume and serves exactly the operations the connectors use (``ledger_app``, on
``LIENTHONG_CRM_LEDGER_PORT`` / ``LIENTHONG_ACCT_LEDGER_PORT``). A connector given
``LIENTHONG_LEDGER_URL`` uses it through ``HttpLedger``, a ``ConnectorLedger`` like the local files.

* **Authenticated**: every request carries ``Authorization: Bearer <LIENTHONG_LEDGER_TOKEN>``,
  compared in constant time; without a token set on capture, nothing is served (and the app refuses
  every request if it is ever served without one).
* **Retried, never lost**: a passing fault (no connection, a timeout, 5xx, a refused token during a
  rotation) is retried with exponential backoff and full jitter, for as long as it lasts: the connector
  waits (its ``/readyz`` says why) rather than fail commands. Only a stopping connector gives up
  (``LedgerUnavailable``: the command is left for the next run). A note or an awaited callback is
  inserted once even when the answer to its request was lost: each carries an ``Idempotency-Key``,
  whose answer the server repeats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from pydantic import SecretStr

from amis.errors import Transient
from amis.ledger import CallbackOutcome, CommandLedger, WriteLedger
from common.names import System

if TYPE_CHECKING:
    from amis.acct_client import Callback

log = logging.getLogger(__name__)

PREFIX = "/ledger/v1"
#: the system of the connector asking: a connector pointed at the other system's ledger is refused (409)
SYSTEM_HEADER = "Lienthong-System"
#: answers kept for repeated requests (a retry after a lost answer): far more than are in flight
IDEMPOTENCY_KEYS = 10_000


class LedgerUnavailable(Transient):
    """The ledger could not be reached and the connector is stopping: what needed it is not done
    (the next run takes the command again)."""


class LedgerRefused(RuntimeError):
    """The ledger API refused a request as malformed (a client and server of different versions)."""


# --- the server (the capture service) -----------------------------------------------------------------


Handler = Callable[[dict[str, Any]], dict[str, Any]]  # a request's JSON body -> the answer's


def ledger_app(
    writes: WriteLedger, commands: CommandLedger, *, token: SecretStr | None, system: System
) -> web.Application:
    """The ledger API of ``system``'s capture service over its two SQLite ledgers."""
    secret = (token.get_secret_value() if token is not None else "").encode()
    answered: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @web.middleware
    async def authenticated(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not secret:
            return refusal(401, "the ledger API is off: set LIENTHONG_LEDGER_TOKEN on the capture service")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), secret):
            return refusal(401, "wrong or missing ledger token: give LIENTHONG_LEDGER_TOKEN as capture has it")
        asked = request.headers.get(SYSTEM_HEADER)
        if asked is not None and asked != system.value:
            return refusal(
                409,
                f"this is the {system} ledger, not the {asked} one: point LIENTHONG_LEDGER_URL at capture {asked}'s",
            )
        return await handler(request)

    def route(handler: Handler, *, once: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            key = request.headers.get("Idempotency-Key") if once else None
            if key is not None and key in answered:
                return web.json_response(answered[key])
            try:
                body = await request.json() if request.body_exists else {}
                if not isinstance(body, dict):
                    raise TypeError("a JSON object is expected")
                answer = handler(body)  # SQLite, at once: a note is a row
            except (KeyError, TypeError, ValueError) as exc:
                return refusal(400, f"not a ledger request: {type(exc).__name__}: {exc}")
            if key is not None:
                answered[key] = answer
                while len(answered) > IDEMPOTENCY_KEYS:
                    answered.popitem(last=False)
            return web.json_response(answer)

        return serve

    def ping(_: dict[str, Any]) -> dict[str, Any]:
        return {"system": system.value}

    def note_write(body: dict[str, Any]) -> dict[str, Any]:
        fields = body["fields"]
        if not isinstance(fields, dict):
            raise TypeError("fields must be an object")
        note = writes.note_write(
            System(body["system"]),
            str(body["tenant"]),
            str(body["entity"]),
            record_id=optional_text(body.get("record_id")),
            code=optional_text(body.get("code")),
            fields=fields,
        )
        return {"note": note}

    def identify(body: dict[str, Any]) -> dict[str, Any]:
        writes.identify(int(body["note"]), str(body["record_id"]))
        return {}

    def expect_callback(body: dict[str, Any]) -> dict[str, Any]:
        expected = writes.expect_callback(
            str(body["tenant"]), str(body["org_refid"]), int(body["data_type"]), optional_text(body.get("command_id"))
        )
        return {"expected": expected}

    def file_results(body: dict[str, Any]) -> dict[str, Any]:
        tenant, data_type = str(body["tenant"]), int(body["data_type"])
        settled = 0
        for result in body["results"]:
            settled += writes.file_callback_result(
                tenant,
                str(result["org_refid"]),
                data_type,
                result["success"] is True,
                optional_text(result.get("error_code")),
                optional_text(result.get("error_message")),
            )
        return {"settled": settled}

    def callback_outcome(body: dict[str, Any]) -> dict[str, Any]:
        outcome = writes.callback_outcome(int(body["expected"]))
        return {"outcome": None if outcome is None else dataclasses.asdict(outcome)}

    def command_states(body: dict[str, Any]) -> dict[str, Any]:
        ids = [str(i) for i in body["ids"]]
        return {"states": {i: commands.get(i) for i in ids}}

    def record_command(body: dict[str, Any]) -> dict[str, Any]:
        status = str(body["status"])
        if status not in ("applied", "rejected", "failed"):
            raise ValueError(f"no such end of a command: {status}")
        commands.record(str(body["command_id"]), status, optional_text(body.get("target_id")))
        return {}

    app = web.Application(middlewares=[authenticated])
    app.router.add_get(f"{PREFIX}/ping", route(ping))
    app.router.add_post(f"{PREFIX}/writes", route(note_write, once=True))
    app.router.add_post(f"{PREFIX}/writes/identify", route(identify))
    app.router.add_post(f"{PREFIX}/callbacks", route(expect_callback, once=True))
    app.router.add_post(f"{PREFIX}/callbacks/results", route(file_results))
    app.router.add_post(f"{PREFIX}/callbacks/outcome", route(callback_outcome))
    app.router.add_post(f"{PREFIX}/commands/states", route(command_states))
    app.router.add_post(f"{PREFIX}/commands", route(record_command))
    return app


def refusal(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


# --- the client (a connector) ---------------------------------------------------------------------------


class HttpLedger:
    """``ConnectorLedger`` served by the capture service at ``url`` (``LIENTHONG_LEDGER_URL``).

    Passing faults are retried until they pass (backoff ``backoff_base`` doubling to ``backoff_cap``,
    full jitter); when ``stopping`` is set, a call still failing raises ``LedgerUnavailable``."""

    shared_by_replicas = True

    def __init__(
        self,
        url: str,
        token: SecretStr,
        *,
        system: System | None = None,
        stopping: asyncio.Event | None = None,
        timeout: float = 5.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.system = system  # said with every request: the ledger of another system refuses it
        self._stopping = stopping or asyncio.Event()
        self.timeout = timeout
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._session: aiohttp.ClientSession | None = None
        self.last_problem: str | None = None  # the fault of the last call that failed, until one succeeds

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _cannot(self, why: str) -> str:
        return f"the ledger at LIENTHONG_LEDGER_URL={self.url} cannot be used ({why}); the connector waits for it"

    async def _once(self, path: str, body: Mapping[str, Any] | None, key: str | None) -> dict[str, Any]:
        """One request; ``Transient`` for a passing fault, ``LedgerRefused`` for a malformed request."""
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        if self.system is not None:
            headers[SYSTEM_HEADER] = self.system.value
        try:
            session = self._client()
            request = (
                session.get(self.url + path, headers=headers)
                if body is None
                else session.post(self.url + path, json=dict(body), headers=headers)
            )
            async with request as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                said = answer.get("error") if isinstance(answer, dict) else None
                if response.status == 200 and isinstance(answer, dict):
                    return answer
                if response.status == 400:
                    raise LedgerRefused(f"the ledger at LIENTHONG_LEDGER_URL={self.url} refused a request: {said}")
                raise Transient(f"HTTP {response.status}" + (f": {said}" if said else ""), status=response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def _call(self, path: str, body: Mapping[str, Any] | None = None, *, once: bool = False) -> dict[str, Any]:
        key = uuid.uuid4().hex if once else None
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self._once(path, body, key)
            except Transient as exc:
                problem = self._cannot(str(exc))
                if problem != self.last_problem:
                    log.warning("%s", problem)
                self.last_problem = problem
                if self._stopping.is_set():
                    raise LedgerUnavailable(problem) from None
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                try:
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                except TimeoutError:
                    pass
                continue
            if self.last_problem is not None:
                log.info("the ledger at LIENTHONG_LEDGER_URL=%s answers again", self.url)
                self.last_problem = None
            return answer

    async def problem(self) -> str | None:
        """Whether the ledger answers now (one request, not retried): for ``/readyz``."""
        try:
            await self._once(f"{PREFIX}/ping", None, None)
        except (Transient, LedgerRefused) as exc:
            return self._cannot(str(exc))
        return None

    # --- WriteNotes ---

    async def note_write(
        self,
        system: System,
        tenant: str,
        entity: str,
        *,
        record_id: str | None,
        code: str | None,
        fields: Mapping[str, Any],
    ) -> int:
        body = {
            "system": system.value,
            "tenant": tenant,
            "entity": entity,
            "record_id": record_id,
            "code": code,
            "fields": dict(fields),
        }
        return int((await self._call(f"{PREFIX}/writes", body, once=True))["note"])

    async def identify(self, note: int, record_id: str) -> None:
        await self._call(f"{PREFIX}/writes/identify", {"note": note, "record_id": record_id})

    async def expect_callback(self, tenant: str, org_refid: str, data_type: int, command_id: str | None) -> int:
        body = {"tenant": tenant, "org_refid": org_refid, "data_type": data_type, "command_id": command_id}
        return int((await self._call(f"{PREFIX}/callbacks", body, once=True))["expected"])

    async def file_callback_result(
        self,
        tenant: str,
        org_refid: str,
        data_type: int,
        success: bool,
        error_code: str | None,
        error_message: str | None,
    ) -> int:
        result = {"org_refid": org_refid, "success": success, "error_code": error_code, "error_message": error_message}
        body = {"tenant": tenant, "data_type": data_type, "results": [result]}
        return int((await self._call(f"{PREFIX}/callbacks/results", body))["settled"])

    async def file_results(self, callback: Callback, tenant: str) -> None:
        """As ``WriteLedger.file_results``: the results of ``save`` / ``delete`` the callback carries."""
        if callback.data_type not in (1, 2):
            return
        results = [
            {
                "org_refid": str(item["org_refid"]),
                "success": item.get("success") is True,
                "error_code": item.get("error_code"),
                "error_message": item.get("error_message"),
            }
            for item in callback.items
            if item.get("org_refid")
        ]
        if results:
            body = {"tenant": tenant, "data_type": callback.data_type, "results": results}
            await self._call(f"{PREFIX}/callbacks/results", body)

    async def callback_outcome(self, expected: int) -> CallbackOutcome | None:
        outcome = (await self._call(f"{PREFIX}/callbacks/outcome", {"expected": expected}))["outcome"]
        if outcome is None:
            return None
        return CallbackOutcome(
            success=bool(outcome["success"]), error_code=outcome["error_code"], error_message=outcome["error_message"]
        )

    # --- the command ids ---

    async def command_state(self, command_id: str) -> tuple[str, str | None] | None:
        state = (await self._call(f"{PREFIX}/commands/states", {"ids": [command_id]}))["states"].get(command_id)
        return None if state is None else (str(state[0]), optional_text(state[1]))

    async def record_command(self, command_id: str, status: str, target_id: str | None) -> None:
        await self._call(f"{PREFIX}/commands", {"command_id": command_id, "status": status, "target_id": target_id})
