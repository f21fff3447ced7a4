"""The accounting sandbox's asynchronous side: what ``save`` / ``delete`` / ``request_data`` queued
is processed later, and every result (and every voucher the accountant generates, enters or
deletes) is owed to the partner as a signed callback, delivered with retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import uuid
from typing import Any

import aiohttp
import orjson

from sandboxes.acct_store import EXTENSION_VOUCHER_TYPES, ActStore
from sandboxes.faults import FaultConfig

log = logging.getLogger(__name__)

ORDER_REFTYPES = {20: 3520, 9001: 9001}  # sa_order, and the sandbox's contracts (an extension)


def callback_signature(data: str, key: str) -> str:
    return hmac.new(key.encode(), data.encode(), hashlib.sha256).hexdigest()


def callback_extension(items: list[dict[str, Any]]) -> str | None:
    """Why a callback carries something ACT does not send (an extension voucher type, issuance statuses)."""
    reasons = {
        EXTENSION_VOUCHER_TYPES[i["voucher_type"]] for i in items if i.get("voucher_type") in EXTENSION_VOUCHER_TYPES
    }
    if any("issue_status" in i for i in items):
        reasons.add("not part of the ACT Open API: issuance-proposal statuses (issue_status) are not reported")
    return "; ".join(sorted(reasons)) or None


class ActSandbox:
    """Runs what ``save`` / ``delete`` queued and delivers the callbacks it owes."""

    def __init__(self, store: ActStore, config: dict[str, Any], faults: FaultConfig) -> None:
        self.store = store
        self.config = config
        self.faults = faults
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def later(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _callback(self, tenant: str, data_type: int, items: list[dict[str, Any]]) -> None:
        data = orjson.dumps(items).decode()
        app_id = self.config["app_id"]
        body = {
            "success": all(i.get("success", True) is not False for i in items),
            "error_code": None,
            "error_message": None,
            "signature": callback_signature(data, app_id),
            "data_type": data_type,
            "data": data,
            "org_company_code": self.config["company_codes"].get(tenant, ""),
            "app_id": app_id,
        }
        extension = callback_extension(items)
        if extension:
            body["x_sandbox_extension"] = extension  # outside "data": the signature is unchanged
        self.store.queue_callback(tenant, data_type, body)
        self._wake.set()

    async def process_save(self, tenant: str, vouchers: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        session_id = str(uuid.uuid4())
        results = []
        for voucher in vouchers:
            code, message = self.store.save_proposal(tenant, voucher)
            results.append(
                {
                    "org_refid": voucher.get("org_refid"),
                    "success": code is None,
                    "error_code": code,
                    "error_message": message,
                    "session_id": session_id,
                    "voucher_type": voucher.get("voucher_type"),
                    "error_call_back_message": None,
                }
            )
        self._callback(tenant, 1, results)

    async def process_save_dictionary(self, tenant: str, items: list[dict[str, Any]]) -> None:
        """save_dictionary answered "queued" (``LIENTHONG_SANDBOX_ACCT_ANSWERS``): the items are saved a
        moment later."""
        await asyncio.sleep(self.config["processing_delay_s"])
        for item in items:
            self.store.save_dictionary_item(tenant, item, "api")

    async def process_delete(self, tenant: str, vouchers: list[dict[str, Any]]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        session_id = str(uuid.uuid4())
        results = []
        for voucher in vouchers:
            code, message = self.store.delete_proposal(tenant, str(voucher.get("org_refid") or ""))
            results.append(
                {
                    "org_refid": voucher.get("org_refid"),
                    "success": code is None,
                    "error_code": code,
                    "error_message": message,
                    "session_id": session_id,
                    "voucher_type": voucher.get("voucher_type"),
                    "error_call_back_message": None,
                }
            )
        self._callback(tenant, 2, results)

    async def process_request_data(self, tenant: str, request_id: str, org_refids: list[str]) -> None:
        await asyncio.sleep(self.config["processing_delay_s"])
        items = []
        for ref in org_refids:
            voucher = self.store.voucher(tenant, ref)
            items.append(
                {
                    "request_id": request_id,
                    "org_refid": ref,
                    "found": voucher is not None,
                    "is_paid": bool((voucher or {}).get("is_paid")),
                }
            )
        self._callback(tenant, 3, items)

    def generate(self, tenant: str, org_refid: str) -> dict[str, Any] | None:
        recorded = self.config["answers"].generated == "recorded"
        voucher = self.store.generate(tenant, org_refid, recorded=recorded)
        if voucher is not None:
            self._callback(tenant, 18, [voucher])
        return voucher

    def enter_voucher(self, tenant: str, voucher: dict[str, Any]) -> dict[str, Any]:
        """The accountant's voucher; the order it names (``sa_order_refid`` on the screen) is linked the way
        ``LIENTHONG_SANDBOX_ACCT_ANSWERS`` says ACT links documents."""
        voucher = self.link_order(tenant, voucher)
        data, state = self.store.enter_voucher(tenant, voucher)
        self._callback(tenant, 22, [{**data, "custom_param": {"ModelState": state}}])
        return data

    def link_order(self, tenant: str, voucher: dict[str, Any]) -> dict[str, Any]:
        style = self.config["answers"].order_link
        order_id = voucher.get("sa_order_refid")
        if style == "sa_order_refid" or not order_id:
            return voucher
        linked = {k: v for k, v in voucher.items() if k != "sa_order_refid"}
        if style == "reference":
            order = self.store.voucher(tenant, str(order_id)) or {}
            reftype = ORDER_REFTYPES.get(int(order.get("voucher_type") or 20), 3520)
            linked["reference"] = [
                {"org_refer_refid": order_id, "org_refer_refno": order.get("refno"), "org_refer_reftype": reftype}
            ]
        else:  # on each line, as the purchase side's pu_order_refid
            lines = voucher.get("detail") or [{"amount": voucher.get("total_amount")}]
            linked["detail"] = [{**line, "sa_order_refid": order_id} for line in lines]
        return linked

    def remove_voucher(self, tenant: str, refid: str) -> dict[str, Any] | None:
        existing = self.store.remove_voucher(tenant, refid)
        if existing is not None:
            self._callback(tenant, 22, [{**existing, "custom_param": {"ModelState": 3}}])
        return existing

    async def deliver_forever(self) -> None:
        self._session = aiohttp.ClientSession()
        try:
            while True:
                for seq, tenant, body in self.store.queued_callbacks():
                    await self._deliver(seq, tenant, body)
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
                # the wake-up does, and this loop would outlive close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._wake.wait()
        finally:
            await self._session.close()

    async def _deliver(self, seq: int, tenant: str, body: dict[str, Any]) -> None:
        url = self.config["callback_urls"].get(tenant) or self.config["callback_url"]
        if not url:
            self.store.callback_done(seq, False, 0, "no APICallBack URL is registered")
            return
        if self.faults.drop_callback():
            self.store.callback_done(seq, False, 1, "injected: the callback was not delivered")
            return
        error = None
        attempts = self.config["callback_attempts"]
        for attempt in range(1, attempts + 1):
            try:
                if self._session is None:
                    raise RuntimeError("the deliverer is not running")
                async with self._session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=5)) as response:
                    answer = await response.read()
                    if response.status == 200 and orjson.loads(answer or b"{}").get("Success") is True:
                        self.store.callback_done(seq, True, attempt, None)
                        return
                    error = f"HTTP {response.status}: {answer[:200].decode(errors='replace')}"
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, RuntimeError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                await asyncio.sleep(self.config["callback_retry_s"] * attempt)
        self.store.callback_done(seq, False, attempts, error)
        log.info("callback %s of %s not delivered: %s", seq, tenant, error)  # the URL holds the tenant's secret

    async def close(self) -> None:
        # cancelled again until done: a task may have swallowed one cancel (asyncio.wait_for on 3.11)
        while pending := [task for task in self._tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1)
