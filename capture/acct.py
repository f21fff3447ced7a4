"""Change capture for AMIS Kế toán: dictionaries by polling, vouchers by ACT's signed callbacks.

* **Dictionaries** (customers, items; the sandbox's extension types too when asked):
  ``get_dictionary`` by ``last_sync_time`` (the watermark less ``overlap_s``, since the filter has
  whole seconds and takes records changed at or after it), ``take`` 100 a page until a short page,
  read again when a record changed under the scan (it skips a row: ``_pages``);
  ``get_dictionary_delete`` the same way for deletions. Only account objects that are customers are
  reported (vendors and employees share data_type 1).
* **Callbacks** (``POST /callback``, the APICallBack URL registered with MISA): the signature
  (HMAC-SHA256 of ``data`` keyed with the ``app_id``) is checked first; a bad one is answered
  ``Success: false, ErrorCode: InvalidParam`` and produces nothing. ``data_type`` 1 / 2 (results
  of ``save`` / ``delete``) are filed in the connectors' shared ledger, where the accounting
  connector waits for them; 18 (a proposal generated into a voucher) and 22 (the accountant added,
  edited, deleted, posted a voucher) become change events. A sales voucher or receipt names its
  order by any of the links ACT may use (``acct_mapping.order_of``); an order generated already
  recorded is reported as proposed, then recorded (``_proposed_first``). The answer is ``Success: true`` only
  once the events are on the broker, so a callback that could not be taken is kept by ACT and
  pulled back from ``get_call_back_detail_error`` every ``poll_interval``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from amis import acct_mapping
from amis.acct_client import TAKE_MAX, VN, ActClient, Callback, parse_callback, signature_holds, sync_time
from amis.errors import ProtocolError
from amis.ledger import WriteLedger
from capture.polling import PollingCapture, tried_again_next_poll
from capture.state import ChangeReporter
from common import metrics
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
        self.by_company = {code: tenant for tenant, code in tenants.items()}
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

    async def take(self, callback: Callback, tenant: str) -> int:
        """One verified callback: file results, report voucher changes. Returns events produced."""
        if callback.data_type in (1, 2):
            self.ledger.file_results(callback)
            return 0
        if callback.data_type not in (18, 22):
            log.info("callback data_type %s of %s not used", callback.data_type, tenant)
            return 0
        produced = 0
        for item in callback.items:
            entity = acct_mapping.ENTITY_OF_VOUCHER_TYPE.get(int(item.get("voucher_type") or 0))
            if callback.data_type == 18 and not item.get("refid") and item.get("org_refid"):
                # generated from our proposal, saved with is_get_new_id false: the voucher keeps its id
                item = {**item, "refid": item["org_refid"]}
            refid = item.get("refid")
            if entity is None or not refid:
                log.info("callback %s: voucher_type %s is not synced", callback.data_type, item.get("voucher_type"))
                continue
            state = int((item.get("custom_param") or {}).get("ModelState") or 0) if callback.data_type == 22 else 1
            stamp = stamp_ms(item.get("modified_date"), time.time())
            marker = f"{callback.data_type}:{state}:{item.get('modified_date')}"
            if MODEL_STATES.get(state) == "d":
                event = await self.reporter.gone(tenant, entity, str(refid), marker=marker, ts_ms=stamp)
            else:
                record = acct_mapping.record_map(entity).from_wire(
                    {k: v for k, v in item.items() if k != "custom_param"}
                )
                if entity in ("sales_voucher", "receipt") and not record.get("order_id"):
                    order_id = acct_mapping.order_of(item)  # the reference header or the lines name it
                    if order_id:
                        record["order_id"] = order_id
                if callback.data_type == 18:
                    produced += await self._proposed_first(tenant, entity, record, marker, stamp)
                # generating a voucher from a proposal is the accountant's act, not this integration's write
                event = await self.reporter.observed(
                    tenant,
                    entity,
                    record,
                    marker=marker,
                    ts_ms=stamp,
                    origin="user" if callback.data_type == 18 else None,
                )
            produced += event is not None
        return produced

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
            tenant, entity, proposed, marker=f"{marker}:proposed", ts_ms=stamp, origin="user"
        )
        return event is not None

    async def pull_undelivered(self, tenant: str) -> int:
        """Callbacks ACT could not deliver (this service was down, or refused them): take them now."""
        name = f"acct:{tenant}:undelivered"
        now = time.time()
        since = self.state.watermark(name)
        start = (since / 1000 - self.overlap_ms / 1000) if since is not None else now - 24 * 3600
        produced = 0
        for callback in await self.client.undelivered(tenant, start, now + 1):
            if signature_holds(callback, self.client.app_id):
                produced += await self.take(callback, tenant)
        self.state.set_watermark(name, int(now * 1000))
        return produced

    def callback_app(self, path: str = "/callback") -> web.Application:
        app = web.Application()

        async def receive(request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                callback = parse_callback(raw)
            except (ProtocolError, orjson.JSONDecodeError) as exc:
                return answer(False, "InvalidParam", f"not a callback: {exc}")
            if not signature_holds(callback, self.client.app_id):
                self.refused_callbacks += 1
                log.warning("callback refused: its signature does not match (data_type %s)", callback.data_type)
                return answer(False, "InvalidParam", "Signature invalid")
            tenant = self.by_company.get(str(callback.org_company_code or ""))
            if tenant is None and len(self.tenants) == 1:
                tenant = next(iter(self.tenants))
            if tenant is None:
                return answer(False, "InvalidParam", f"unknown org_company_code {callback.org_company_code!r}")
            try:
                await self.take(callback, tenant)
            except (RuntimeError, TimeoutError) as exc:  # the broker did not take the events: ACT keeps the callback
                log.warning("callback of %s not taken: %s", tenant, exc, extra=about(tenant=tenant))
                return answer(False, "Exception", f"not taken, send it again: {exc}")
            return answer(True, None, None)

        app.router.add_post(path, receive)
        return app


def answer(success: bool, code: str | None, message: str | None) -> web.Response:
    """The answer ACT expects from a partner's callback URL: HTTP 200 always."""
    return web.json_response({"Success": success, "ErrorCode": code, "ErrorMessage": message, "Data": None})
