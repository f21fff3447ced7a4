"""Change capture for AMIS Kế toán: dictionaries by polling, vouchers by ACT's signed callbacks.

* **Dictionaries** (customers, items; the sandbox's extension types too when asked):
  ``get_dictionary`` by ``last_sync_time`` (the watermark less ``overlap_s``, since the filter has
  whole seconds and takes records changed at or after it), ``take`` 100 a page until a short page,
  read again when a record changed under the scan (it skips a row: ``_pages``);
  ``get_dictionary_delete`` the same way for deletions. Only account objects that are customers are
  reported (vendors and employees share data_type 1).
* **Callbacks** (``POST /callback/<callback_secret>``, the company's APICallBack URL registered with
  MISA): the path names the tenant, then the signature (HMAC-SHA256 of ``data`` keyed with the
  ``app_id``) and the ``org_company_code`` (the path's company) are checked; a bad one is answered
  ``Success: false, ErrorCode: InvalidParam`` and produces nothing. The signature's key is shared by
  every company and sent in clear, so only the path binds a callback to a tenant (SECURITY.md). Each
  item is read on its own: a bad one is refused by name in the answer, the others taken. An item
  older than the version capture holds of the voucher (its ``modified_date``), a deleted voucher's
  older versions, and a callback taken whole before change nothing. ``data_type`` 1 / 2 (results
  of ``save`` / ``delete``) are filed in the connectors' shared ledger, where the accounting
  connector waits for them; 18 (a proposal generated into a voucher) and 22 (the accountant added,
  edited, deleted, posted a voucher) become change events. A sales voucher or receipt names its
  order by any of the links ACT may use (``acct_mapping.order_of``); an order generated already
  recorded is reported as proposed, then recorded (``_proposed_first``). The answer is ``Success: true`` only
  once the events are on the broker, so a callback that could not be taken is kept by ACT and
  pulled back from ``get_call_back_detail_error`` every ``poll_interval``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from amis import acct_mapping
from amis.acct_client import TAKE_MAX, VN, ActClient, Callback, parse_callback, signature_holds, sync_time
from amis.errors import ProtocolError
from amis.ledger import WriteLedger
from capture.polling import PollingCapture, tried_again_next_poll
from capture.state import ChangeReporter
from common import metrics
from common.listeners import guard_requests
from common.logs import about
from common.names import System

log = logging.getLogger(__name__)

MODEL_STATES = {1: "c", 2: "u", 3: "d", 7: "u", 8: "u"}  # added, edited, deleted, posted, unposted


def stamp_ms(text: Any, default: float) -> int:
    if not text:
        return int(default * 1000)
    moment = datetime.fromisoformat(str(text).strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    return int((moment if moment.tzinfo else moment.replace(tzinfo=VN)).timestamp() * 1000)


class ActCapture(PollingCapture):
    def __init__(
        self,
        client: ActClient,
        reporter: ChangeReporter,
        ledger: WriteLedger,
        tenants: dict[str, str],  # tenant -> its org_company_code (how callbacks name it)
        *,
        callback_secrets: Mapping[str, SecretStr] | None = None,  # tenant -> the secret of its callback URL
        entities: Sequence[str] = ("customer", "product"),
        overlap_s: float = 60.0,
        poll_interval: float = 5.0,
        rescans: int = 2,
    ) -> None:
        super().__init__(poll_interval)
        self.client = client
        self.rescans = rescans  # how many times a scan that met a record moving under it is read again
        self.reporter = reporter
        self.state = reporter.state
        self.ledger = ledger
        self.tenants = dict(tenants)
        self.callback_secrets = dict(callback_secrets or {})
        self.entities = list(entities)
        self.overlap_ms = int(overlap_s * 1000)
        self.refused_callbacks = 0

    async def poll_all(self) -> None:
        for tenant in self.tenants:
            for entity in self.entities:
                with tried_again_next_poll(f"accounting capture of {tenant} {entity}", tenant=tenant, entity=entity):
                    await self.poll(tenant, entity)
                    await self.poll_deletions(tenant, entity)
            with tried_again_next_poll(f"accounting capture, undelivered callbacks of {tenant}", tenant=tenant):
                await self.pull_undelivered(tenant)

    # --- dictionaries --------------------------------------------------------------------------------

    async def _pages(self, tenant: str, data_type: int, since: int | None, deleted: bool) -> list[dict[str, Any]]:
        """Every record changed (or deleted) since the watermark, oldest first.

        ``get_dictionary`` lists oldest first: a record changed while the scan pages through moves to
        the end and every row after it moves up one place, so one row is skipped at the next ``skip``.
        A scan of more than one page that met a record changed after it began (by ACT's clock, the
        ``LastSyncTime`` of its first answer) is read again from the same ``last_sync_time``: the
        second pass finds what the first skipped (the others equal their images: no news). Deleted
        records do not move, and a deletion leaves ``get_dictionary`` alone when the scan is over.
        """
        last_sync = sync_time((since - self.overlap_ms) / 1000) if since is not None else None
        name = "get_dictionary_delete" if deleted else "get_dictionary"
        rows: list[dict[str, Any]] = []
        for _pass in range(1 + self.rescans):
            began: int | None = None
            skip, pages, moved = 0, 0, False
            while True:
                page, server_time = await self.client.dictionary_page(
                    tenant, name, data_type, skip, TAKE_MAX, last_sync
                )
                if began is None:
                    began = stamp_ms(server_time, time.time() - 1)
                pages += 1
                rows += page
                moved = moved or any(stamp_ms(r.get("modified_date"), 0) >= began for r in page)
                if len(page) < TAKE_MAX:
                    break
                skip += TAKE_MAX
            if deleted or pages == 1 or not moved:
                break
        return rows

    async def poll(self, tenant: str, entity: str) -> int:
        """The changed records of a dictionary since its watermark; returns how many events it produced."""
        record = acct_mapping.DICTIONARIES[entity].record

        async def report(row: dict[str, Any], stamp: int, watermark: int | None) -> dict[str, Any] | None:
            return await self.reporter.observed(
                tenant,
                entity,
                record.from_wire(row),
                marker=str(row.get("modified_date")),
                ts_ms=stamp,
                snapshot=watermark is None,
            )

        produced = await self._scan(tenant, entity, report, deleted=False)
        metrics.CAPTURE_LAST_POLL.labels(System.ACCT, entity).set_to_current_time()
        return produced

    async def poll_deletions(self, tenant: str, entity: str) -> int:
        """The deleted records of a dictionary since its watermark; returns how many events it produced."""
        id_field = acct_mapping.DICTIONARIES[entity].id_field

        async def report(row: dict[str, Any], stamp: int, _watermark: int | None) -> dict[str, Any] | None:
            record_id = row.get(id_field)
            if not record_id:
                return None
            return await self.reporter.gone(
                tenant, entity, str(record_id), marker=f"deleted:{row.get('deleted_date')}", ts_ms=stamp
            )

        return await self._scan(tenant, entity, report, deleted=True)

    async def _scan(
        self,
        tenant: str,
        entity: str,
        report: Callable[[dict[str, Any], int, int | None], Awaitable[dict[str, Any] | None]],
        *,
        deleted: bool,
    ) -> int:
        """``report`` each row changed (or deleted) since the watermark, with its time and the
        watermark; then move the watermark to the newest row's time. Returns the events produced."""
        spec = acct_mapping.DICTIONARIES[entity]
        name = f"acct:{tenant}:{entity}:deleted" if deleted else f"acct:{tenant}:{entity}"
        watermark = self.state.watermark(name)
        newest = watermark or 0
        produced = 0
        for row in await self._pages(tenant, spec.data_type, watermark, deleted=deleted):
            if not deleted and not spec.holds(row):
                continue  # a vendor or an employee
            stamp = stamp_ms(row.get("deleted_date" if deleted else "modified_date"), time.time())
            newest = max(newest, stamp)
            event = await report(row, stamp, watermark)
            produced += event is not None
        self.state.set_watermark(name, newest)
        return produced

    # --- callbacks -----------------------------------------------------------------------------------

    async def take(self, callback: Callback, tenant: str) -> Taken:
        """One verified callback of ``tenant``: file results, report voucher changes; each item on its
        own, an item that cannot be read refused (and said) without stopping the others. An item of a
        version older than what capture holds of the record changes nothing (``newer_only``)."""
        items = callback_items(callback)
        if isinstance(items, str):
            return Taken(0, [items])
        if callback.data_type not in (1, 2, 18, 22):
            log.info("callback data_type %s of %s not used", callback.data_type, tenant, extra=about(tenant=tenant))
            return Taken(0, [])
        produced, refused = 0, []
        for n, item in enumerate(items, start=1):
            try:
                if callback.data_type in (1, 2):
                    org_refid, success = result_of(item)
                    self.ledger.file_callback_result(
                        tenant,
                        org_refid,
                        callback.data_type,
                        success,
                        text_or_none(item, "error_code"),
                        text_or_none(item, "error_message"),
                    )
                    continue
                change = voucher_change(callback.data_type, item)
            except BadItem as exc:
                refused.append(f"item {n}: {exc}")
                continue
            if change is None:
                continue
            produced += await self._report(tenant, callback.data_type, change)
        return Taken(produced, refused)

    async def _report(self, tenant: str, data_type: int, change: VoucherChange) -> int:
        entity, refid, stamp, marker = change.entity, change.refid, change.stamp, change.marker
        if change.record is None:
            event = await self.reporter.gone(tenant, entity, refid, marker=marker, ts_ms=stamp, newer_only=True)
            return event is not None
        produced = 0
        if data_type == 18:
            produced += await self._proposed_first(tenant, entity, change.record, marker, stamp)
        # generating a voucher from a proposal is the accountant's act, not this integration's write
        event = await self.reporter.observed(
            tenant,
            entity,
            change.record,
            marker=marker,
            ts_ms=stamp,
            origin="user" if data_type == 18 else None,
            newer_only=True,
        )
        return produced + (event is not None)

    async def _proposed_first(self, tenant: str, entity: str, record: dict[str, Any], marker: str, stamp: int) -> int:
        """An order generated already recorded (callback 18 carrying revenue_status 1; its shape is only
        observed): reported as what happened, the order as proposed (not recorded) and then its
        revenue recorded, so that the recording is a transition the rules see (SO-8: CRM shows "Đã ghi").
        Only for an order capture has not seen: a later 18 or 22 with the same status changes nothing."""
        if entity not in ("sale_order", "contract") or record.get("revenue_status") != "recorded":
            return 0
        seen = self.state.image(System.ACCT, tenant, entity, str(record.get("id") or ""))
        if seen is not None and not seen.deleted:
            return 0
        proposed = {**record, "revenue_status": "not_recorded"}
        event = await self.reporter.observed(
            tenant, entity, proposed, marker=f"{marker}:proposed", ts_ms=stamp, origin="user", newer_only=True
        )
        return event is not None

    async def pull_undelivered(self, tenant: str) -> int:
        """Callbacks ACT could not deliver (this service was down, or refused them): take them now.
        Pulled with the tenant's own token, so they are the tenant's (their org_company_code is checked
        all the same)."""
        name = f"acct:{tenant}:undelivered"
        now = time.time()
        since = self.state.watermark(name)
        start = (since / 1000 - self.overlap_ms / 1000) if since is not None else now - 24 * 3600
        produced = 0
        for callback in await self.client.undelivered(tenant, start, now + 1):
            problem = self._refusal(callback, tenant)
            if problem is not None:
                log.warning("undelivered callback of %s not taken: %s", tenant, problem[1], extra=about(tenant=tenant))
                continue
            produced += (await self._take_once(callback, tenant)).produced
        self.state.set_watermark(name, int(now * 1000))
        return produced

    def callback_path(self, tenant: str) -> str | None:
        """The path of the tenant's callback URL (``/callback/<its callback_secret>``), to register with
        MISA for that company; None when it has no secret. A secret: never logged."""
        secret = self.callback_secrets.get(tenant)
        return f"/callback/{secret.get_secret_value()}" if secret is not None else None

    def _tenant_of_path(self, secret: str) -> str | None:
        given = secret.encode("utf-8", "replace")
        found = None
        for tenant, known in self.callback_secrets.items():  # every one compared: no early exit to time
            if hmac.compare_digest(known.get_secret_value().encode(), given):
                found = tenant
        return found

    def _refusal(self, callback: Callback, tenant: str) -> tuple[str, str] | None:
        """(ErrorCode, reason) when the callback is not the tenant's or not ACT's; None when it is both."""
        if not signature_holds(callback, self.client.app_id):
            return "InvalidParam", "Signature invalid"
        company = callback.org_company_code
        if str(company or "") != self.tenants[tenant]:
            return "InvalidParam", f"org_company_code {str(company)[:40]!r} is not the company of this callback URL"
        return None

    async def _take_once(self, callback: Callback, tenant: str) -> Taken:
        """``take``, unless this tenant's same callback was taken whole before (ACT retried it, a pull
        brought it back, someone replayed it): then nothing changes."""
        digest = hashlib.sha256(f"{callback.data_type}\n{callback.data}".encode("utf-8", "replace")).hexdigest()
        if self.state.callback_taken(tenant, digest):
            return Taken(0, [])
        taken = await self.take(callback, tenant)
        if not taken.refused:
            self.state.note_callback_taken(tenant, digest)
        return taken

    def callback_app(self) -> web.Application:
        """``POST /callback/<callback_secret>``: one URL per company, registered with MISA for it; the
        path names the tenant, the callback's org_company_code must be that tenant's. ``POST /callback``
        (no secret: any company) is answered with a refusal: ACT's signature is keyed with the app_id,
        which every company shares and ACT sends in clear, so a callback there could be anyone's
        (SECURITY.md). ACT keeps a refused callback; ``pull_undelivered`` takes it with the tenant's token.
        Every answer is HTTP 200 (ACT's contract), whatever came."""
        # guarded as it is made (a body-read timeout, client faults in one line): it faces the internet,
        # however it is served
        app = guard_requests(web.Application())

        async def receive(request: web.Request) -> web.Response:
            tenant = self._tenant_of_path(request.match_info.get("secret", ""))
            if tenant is None:
                return self._refused(
                    None,
                    "InvalidParam",
                    "this URL names no company: ACT posts to /callback/<callback_secret> of "
                    "the company, as registered with MISA (SECURITY.md)",
                )
            try:
                callback = parse_callback(await request.read())
            except (ProtocolError, orjson.JSONDecodeError, ValueError, TypeError, OverflowError) as exc:
                return self._refused(tenant, "InvalidParam", f"not a callback: {one_line(exc)}")
            problem = self._refusal(callback, tenant)
            if problem is not None:
                return self._refused(tenant, *problem, data_type=callback.data_type)
            try:
                taken = await self._take_once(callback, tenant)
            except (RuntimeError, TimeoutError) as exc:  # the broker did not take the events: ACT keeps the callback
                log.warning("callback of %s not taken: %s", tenant, exc, extra=about(tenant=tenant))
                return answer(False, "Exception", f"not taken, send it again: {exc}")
            if taken.refused:
                # the good items are taken; ACT keeps the callback and a pull brings it back, and the
                # items taken then change nothing
                return self._refused(
                    tenant, "InvalidParam", "refused " + "; ".join(taken.refused)[:900], data_type=callback.data_type
                )
            return answer(True, None, None)

        app.router.add_post("/callback", receive)
        app.router.add_post("/callback/{secret}", receive)
        return app

    def _refused(self, tenant: str | None, code: str, reason: str, *, data_type: int | None = None) -> web.Response:
        self.refused_callbacks += 1
        log.warning(
            "callback%s refused (data_type %s): %s",
            f" of {tenant}" if tenant else "",
            data_type,
            reason,
            extra=about(tenant=tenant) if tenant else None,
        )
        return answer(False, code, reason)


@dataclass(frozen=True)
class Taken:
    """What a callback did: events produced, and the items refused (``item <n>: <why>``)."""

    produced: int
    refused: list[str]


@dataclass(frozen=True)
class VoucherChange:
    entity: str
    refid: str
    record: dict[str, Any] | None  # None: deleted
    stamp: int  # the version's time (modified_date), ms
    marker: str


class BadItem(ValueError):
    """An item of a callback that cannot be read: the message says what is wrong with it."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def callback_items(callback: Callback) -> list[Any] | str:
    """The items of ``data`` (a JSON array, or one object), or why there are none to read."""
    if callback.data_type not in (1, 2, 18, 22):
        return []
    try:
        parsed = orjson.loads(callback.data)
    except orjson.JSONDecodeError:
        return "data is not JSON"
    if isinstance(parsed, dict):
        return [parsed]
    if not isinstance(parsed, list):
        return f"data is a JSON {type(parsed).__name__}, not an array of items"
    return parsed


def text_or_none(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value)[:500]


def result_of(item: Any) -> tuple[str, bool]:
    """(org_refid, success) of a save / delete result."""
    if not isinstance(item, dict):
        raise BadItem("not an object")
    org_refid, success = item.get("org_refid"), item.get("success")
    if not isinstance(org_refid, str) or not org_refid:
        raise BadItem(f"org_refid {str(org_refid)[:40]!r} is not an id")
    if not isinstance(success, bool):
        raise BadItem(f"success {str(success)[:40]!r} is not true or false")
    return org_refid, success


def voucher_change(data_type: int, item: Any) -> VoucherChange | None:
    """What an item of callback 18 / 22 says of a voucher; None for a voucher type not synced."""
    if not isinstance(item, dict):
        raise BadItem("not an object")
    voucher_type = item.get("voucher_type")
    if isinstance(voucher_type, bool) or not isinstance(voucher_type, (int, str)):
        raise BadItem(f"voucher_type {str(voucher_type)[:40]!r} is not a number")
    try:
        entity = acct_mapping.ENTITY_OF_VOUCHER_TYPE.get(int(voucher_type))
    except ValueError:
        raise BadItem(f"voucher_type {str(voucher_type)[:40]!r} is not a number") from None
    if data_type == 18 and not item.get("refid") and item.get("org_refid"):
        # generated from our proposal, saved with is_get_new_id false: the voucher keeps its id
        item = {**item, "refid": item["org_refid"]}
    if entity is None:
        log.info("callback %s: voucher_type %s is not synced", data_type, voucher_type)
        return None
    refid = item.get("refid")
    if not isinstance(refid, str) or not refid:
        raise BadItem(f"refid {str(refid)[:40]!r} is not an id")
    state = 1
    if data_type == 22:
        custom = item.get("custom_param")
        model_state = custom.get("ModelState") if isinstance(custom, dict) else None
        if isinstance(model_state, bool) or not isinstance(model_state, int) or model_state not in MODEL_STATES:
            raise BadItem(f"custom_param.ModelState {str(model_state)[:40]!r} is not one of 1, 2, 3, 7, 8")
        state = model_state
    modified = item.get("modified_date")
    try:
        stamp = stamp_ms(modified, time.time())
    except (ValueError, TypeError, OverflowError, OSError):
        raise BadItem(f"modified_date {str(modified)[:40]!r} is not a date") from None
    marker = f"{data_type}:{state}:{modified}"
    if MODEL_STATES[state] == "d":
        return VoucherChange(entity, refid, None, stamp, marker)
    try:
        record = acct_mapping.record_map(entity).from_wire({k: v for k, v in item.items() if k != "custom_param"})
        if entity in ("sales_voucher", "receipt") and not record.get("order_id"):
            order_id = acct_mapping.order_of(item)  # the reference header or the lines name it
            if order_id:
                record["order_id"] = order_id
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # MappingError is a ValueError
        raise BadItem(f"{entity} {refid[:40]}: {one_line(exc)}") from None
    return VoucherChange(entity, refid, record, stamp, marker)


def answer(success: bool, code: str | None, message: str | None) -> web.Response:
    """The answer ACT expects from a partner's callback URL: HTTP 200 always."""
    return web.json_response({"Success": success, "ErrorCode": code, "ErrorMessage": message, "Data": None})
