"""Applying one command to the system's API, within the tenant's limits, until it is known to have
ended: passing faults are retried, a proposal's result is awaited by callback.

* **Limits**: at most ``concurrency`` API calls at once and ``rate`` requests a second, per tenant.
* **Retries** of passing faults (``Transient``: connection errors, timeouts, 408, 429, 5xx, answers
  without the documented shape) with exponential backoff and full jitter, honouring
  ``Retry-After``; ``failed`` when they run out, ``rejected`` when the system refuses (``Refused``).
* **Batches**: commands to accounting of one tenant that arrive together go in one call (a
  ``save_dictionary`` of up to 200 records, a ``save`` / ``delete`` of up to 100 proposals); each
  still gets its own answer and its own retries.
* **Proposals**: a command to accounting that ACT queued (``Pending``) is applied when its callback
  is filed in the shared ledger by the accounting capture service; when none comes within
  ``callback_timeout`` the callbacks ACT could not deliver are pulled.
"""

from __future__ import annotations

import asyncio
import random
import time

from amis.errors import Refused, Transient
from amis.ledger import CallbackOutcome
from common import metrics
from common.names import System
from connectors.in_flight import Stopping
from connectors.reporting import Outcome
from connectors.writers import BATCH_LIMITS, ActWriter, Applied, Pending, ResultNotFound, Writer, no_callback
from streams.core.contract import Command, ResultError


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.capacity = rate, burst
        self.tokens, self.updated = burst, time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Applier:
    """Applies commands through ``writer`` (the ``system``'s API) and says how each ended.

    ``stats`` counts retries and recovered / missing callbacks; ``stopping`` set makes a command
    not known to be written raise ``Stopping`` (the next run tries it again)."""

    def __init__(
        self,
        writer: Writer,
        *,
        system: System,
        concurrency: int,
        rate: float,
        max_attempts: int,
        backoff_base: float,
        backoff_cap: float,
        callback_timeout: float,
        stopping: asyncio.Event,
        stats: dict[str, int],
        batch_linger: float = 0.25,
        callback_poll: float = 0.05,
    ) -> None:
        self.writer = writer
        self.system = system
        self.concurrency, self.rate = concurrency, rate
        self.max_attempts, self.backoff_base, self.backoff_cap = max_attempts, backoff_base, backoff_cap
        self.callback_timeout = callback_timeout
        self._stopping = stopping
        self.stats = stats
        # commands to accounting arriving within batch_linger of each other go in one call (0: one by one)
        self.batch_linger = batch_linger
        self.callback_poll = callback_poll  # seconds between two looks for a proposal's callback in the ledger
        self._batches: dict[tuple[str, str], list[tuple[Command, asyncio.Future[Applied | Pending]]]] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}

    async def apply(self, command: Command) -> Outcome:
        tenant = command.tenant
        semaphore = self._semaphores.setdefault(tenant, asyncio.Semaphore(self.concurrency))
        bucket = self._buckets.setdefault(tenant, TokenBucket(self.rate, max(1.0, self.rate)))
        attempt = 0
        # ACT took the proposal: while looking for its result fails, a later attempt only looks
        # again. Saved again, it could meet the voucher an accountant generated from it meanwhile
        # and be refused (IsCreatedVoucher). Looked for and not found, it is saved again.
        pending: Pending | None = None
        while True:
            attempt += 1
            try:
                if pending is None:
                    answer = await self._write(command, semaphore, bucket)
                    if isinstance(answer, Pending):
                        metrics.CONNECTOR_RESULTS.labels(self.system, "pending").inc()
                        pending = answer
                    else:
                        applied = answer
                if pending is not None:
                    applied = await self._settled(pending, bucket)
                return Outcome(
                    "applied",
                    target_id=applied.target_id or command.key.id,
                    code=applied.code or command.key.code,
                    attempts=attempt,
                )
            except Refused as exc:
                return Outcome(
                    "rejected",
                    code=command.key.code,
                    attempts=attempt,
                    error=ResultError(kind=f"http_{exc.status}", message=str(exc)),
                )
            except Transient as exc:
                if isinstance(exc, ResultNotFound):
                    pending = None
                if self._stopping.is_set():
                    raise Stopping() from None  # not written: the next run tries again
                self.stats["retries"] += 1
                metrics.RETRIES.labels(self.system, metrics.last_endpoint()).inc()
                if attempt >= self.max_attempts:
                    return Outcome(
                        "failed",
                        code=command.key.code,
                        attempts=attempt,
                        error=ResultError(kind="retries_exhausted", message=str(exc)),
                    )
                delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                await asyncio.sleep(delay)

    async def _write(self, command: Command, semaphore: asyncio.Semaphore, bucket: TokenBucket) -> Applied | Pending:
        """Write one command; to accounting, together with the others of its tenant and kind that arrive
        meanwhile (``batch_linger``): one ``save_dictionary`` for up to 200 records, one ``save`` or
        ``delete`` for up to 100 proposals. Each command still gets its own answer."""
        writer = self.writer
        kind = writer.batch_kind(command) if isinstance(writer, ActWriter) and self.batch_linger > 0 else None
        if kind is None or not isinstance(writer, ActWriter):
            async with semaphore:
                await bucket.take()
                return await writer.apply(command)
        key = (command.tenant, kind)
        answer: asyncio.Future[Applied | Pending] = asyncio.get_running_loop().create_future()
        waiting = self._batches.setdefault(key, [])
        waiting.append((command, answer))
        if len(waiting) == 1:
            task = asyncio.create_task(self._flush(key, BATCH_LIMITS[kind], semaphore, bucket))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        return await answer

    async def _flush(self, key: tuple[str, str], limit: int, semaphore: asyncio.Semaphore, bucket: TokenBucket) -> None:
        """Once no command of this tenant and kind has come for ``batch_linger`` (or a full call's worth
        has, or a second has passed: a steady stream is not held), write what came, ``limit`` a call."""
        started = time.monotonic()
        while True:
            seen = len(self._batches.get(key, ()))
            await asyncio.sleep(self.batch_linger)
            now = len(self._batches.get(key, ()))
            if now == seen or now >= limit or time.monotonic() - started >= max(1.0, self.batch_linger):
                break
        taken = self._batches.pop(key, [])
        writer = self.writer
        if not isinstance(writer, ActWriter):
            raise TypeError("only the accounting API takes commands in batches")

        async def call(group: list[tuple[Command, asyncio.Future[Applied | Pending]]]) -> None:
            try:
                async with semaphore:
                    await bucket.take()
                    answers = await writer.apply_many([command for command, _ in group])
            except Exception as exc:  # noqa: BLE001 - every command of the call ends with it
                answers = [exc] * len(group)
            for (_, future), answer in zip(group, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

        await asyncio.gather(*(call(taken[n : n + limit]) for n in range(0, len(taken), limit)))

    async def _settled(self, pending: Pending, bucket: TokenBucket) -> Applied:
        """A proposal ACT queued: wait for its callback (filed in the shared ledger by the accounting
        capture service); when none comes in time, pull the callbacks ACT could not deliver."""
        writer = self.writer
        if not isinstance(writer, ActWriter):
            raise TypeError("only the accounting API answers by callback")
        deadline = time.monotonic() + self.callback_timeout
        outcome: CallbackOutcome | None = None
        while outcome is None and time.monotonic() < deadline:
            if self._stopping.is_set():
                raise Stopping()  # not known to be applied: the next run saves it again (same org_refid)
            await asyncio.sleep(self.callback_poll)
            outcome = await writer.outcome(pending)
        if outcome is None:
            await bucket.take()
            outcome = await writer.recover(pending)
            self.stats["callbacks_recovered" if outcome else "callbacks_missing"] += 1
        if outcome is None:
            raise no_callback(pending, self.callback_timeout)
        return writer.settle(pending, outcome)
