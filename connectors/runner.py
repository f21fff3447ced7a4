"""A connector service: ``commands.<system>`` -> the system's API -> ``results.<system>``.

* **Speaks the public AMIS APIs** through ``connectors.writers`` (mapping tables, token caching
  and renewal, documented batch limits). A command to accounting that becomes a *proposal* is
  ``applied`` only when ACT's callback says so (filed in the shared ledger by the accounting capture
  service); when none comes within ``callback_timeout`` the connector pulls the callbacks ACT could
  not deliver, and saves again (the same ``org_refid``: the same proposal) if the result is not there.
  When the pull itself fails (a passing fault), it pulls again rather than saving again: an
  accountant may have generated the voucher meanwhile, and a second save would be refused.
* **Idempotent by command id**: a durable SQLite ledger of applied ids; a repeat gets a
  ``duplicate`` result and nothing is written again. Writes are upserts by code, id or derived
  ``org_refid``, so a crash between the API call and the ledger entry repeats a write with the same effect.
* **Retries** of passing faults (connection errors, timeouts, 408, 429, 5xx, answers without the
  documented shape) with exponential backoff and full jitter, honouring ``Retry-After``; ``failed``
  when they run out, ``rejected`` when the system refuses (a 4xx, a validation message,
  ``IsCreatedVoucher``: the kind is the HTTP status that means the same, the message the system's).
  Both are copied to ``dlq.commands`` with the reason in headers.
* **Order and parallelism**: commands with one message key run one after another, in offset
  order; different keys run concurrently, at most ``concurrency`` per tenant, at most ``rate``
  requests a second per tenant. ``depends_on`` waits until those commands are in the ledger.
* **At least once**: an offset is committed only once its result is on the broker and every
  earlier offset of its partition is done. SIGTERM stops consuming, finishes what is in flight
  and commits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from aiohttp import web
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from amis.acct_client import ActClient, ActCredentials
from amis.credentials import token_problems
from amis.crm_client import CrmClient, CrmCredentials
from amis.errors import Refused, Transient
from amis.ledger import CallbackOutcome, WriteLedger
from common import metrics
from common.delivery import produce_acknowledged
from common.logs import bind_record
from connectors.writers import ActWriter, CrmWriter, Pending, ResultNotFound, Writer, Written, no_callback
from streams.core.contract import Command, Result, ResultError, dead_letter_headers, parse_command
from streams.topics import DLQ_COMMANDS, commands_topic, results_topic

log = logging.getLogger(__name__)

# How a command ended: the values of the contract's ``Result.status`` (mypy checks each is one of them).
Status = Literal["applied", "duplicate", "rejected", "failed"]


def position(message: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (the client types them optional: only a
    message it produced itself, or an error event, lacks them)."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ValueError(
            f"a consumed message without a position: topic {topic}, partition {partition}, offset {offset}"
        )
    return topic, partition, offset


class Ledger:
    """Command ids and how they ended (applied / rejected / failed), durable (SQLite).

    Only ``applied`` makes a repeat a ``duplicate``: a failed or rejected command replayed from
    ``dlq.commands`` is tried again. A command depending on a rejected or failed one fails at once.
    """

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS applied (command_id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "target_id TEXT, ts_ms INTEGER NOT NULL)"
        )

    def get(self, command_id: str) -> tuple[str, str | None] | None:
        row = self._db.execute("SELECT status, target_id FROM applied WHERE command_id=?", (command_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def record(self, command_id: str, status: str, target_id: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO applied VALUES (?, ?, ?, ?)",
            (command_id, status, target_id, int(time.time() * 1000)),
        )

    def close(self) -> None:
        self._db.close()


class Stopping(Exception):
    """The connector is stopping before this command could finish: leave it for the next run."""


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


@dataclass
class ConnectorSettings:
    system: str
    base_url: str
    # the Kafka client config (common.kafka_config.confluent_config): servers and transport security
    kafka: dict[str, Any] = field(default_factory=lambda: {"bootstrap.servers": "127.0.0.1:9092"})
    topic_prefix: str = ""
    group_id: str | None = None
    ledger_path: Path = Path("var/connector-ledger.sqlite")
    max_attempts: int = 20  # API attempts of one command; with the backoff cap, about a minute of passing faults
    backoff_base: float = 0.1
    backoff_cap: float = 5.0
    concurrency: int = 8  # per tenant
    max_in_flight: int | None = None  # commands taken but not finished; default 4 × concurrency
    rate: float = 50.0  # requests per second per tenant
    dependency_timeout: float = 60.0
    request_timeout: float = 10.0
    extra_consumer_config: dict[str, Any] = field(default_factory=dict)
    crm_credentials: dict[str, CrmCredentials] = field(default_factory=dict)
    acct_app_id: str = ""
    acct_credentials: dict[str, ActCredentials] = field(default_factory=dict)
    shared_ledger_path: Path = Path("var/connectors/acct-shared.sqlite")  # recent writes and callbacks, with capture
    callback_timeout: float = 30.0  # seconds a proposal waits for its callback before pulling undelivered ones
    token_renew_before: float = 300.0  # a token is fetched again this many seconds before it ends
    # /metrics, /healthz, /readyz (docs/operations.md): None serves none; 0 takes a free port (health_port())
    health_port: int | None = None
    health_host: str = "127.0.0.1"


@dataclass
class Outcome:
    status: Status
    target_id: str | None = None
    code: str | None = None
    error: ResultError | None = None
    attempts: int = 0


class Connector:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.ledger = Ledger(settings.ledger_path)
        self.consumer = Consumer(
            {
                **settings.kafka,
                "group.id": settings.group_id or f"{self.prefix}lienthong-connector-{settings.system}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **settings.extra_consumer_config,
            }
        )
        self.producer = Producer({**settings.kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 2})
        self._stopping = asyncio.Event()
        self._tails: dict[bytes, asyncio.Task[None]] = {}
        self._in_flight: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._done_up_to: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._applied = asyncio.Condition()
        self.stats: dict[str, int] = defaultdict(int)
        self.group_id = settings.group_id or f"{self.prefix}lienthong-connector-{settings.system}"
        self.writer: Writer | None = None
        self._health: web.AppRunner | None = None
        self._broker = metrics.BrokerCheck(settings.kafka)

    def stop(self) -> None:
        self._stopping.set()

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        topic = self.prefix + commands_topic(self.settings.system)
        service = f"connector-{self.settings.system}"
        await asyncio.to_thread(
            self.consumer.subscribe, [topic], on_assign=lambda *_: metrics.REBALANCES.labels(service).inc()
        )
        async with aiohttp.ClientSession() as session:
            self.shared = WriteLedger(self.settings.shared_ledger_path)
            self.writer = self._writer(session)
            if self.settings.health_port is not None:
                self._health = await metrics.serve_health(
                    self.settings.health_host,
                    self.settings.health_port,
                    self.readiness,
                    collectors=[metrics.ConsumerGroupLagCollector(self.settings.kafka, [self.group_id])],
                )
            try:
                limit = self.settings.max_in_flight or 4 * self.settings.concurrency
                while not self._stopping.is_set():
                    # Take no more than can be finished soon: what is taken is what a stop must finish.
                    room = limit - sum(len(offsets) for offsets in self._in_flight.values())
                    if room <= 0:
                        await asyncio.sleep(0.05)
                        continue
                    messages = await asyncio.to_thread(self.consumer.consume, room, 0.2)
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() != KafkaError._PARTITION_EOF:
                                log.warning("consumer: %s", error)
                            continue
                        self._schedule(message)
                    await self._commit()
                # graceful stop: finish what was taken, then commit it
                if self._tails:
                    await asyncio.gather(*self._tails.values(), return_exceptions=True)
                await self._commit()
            finally:
                if self._health is not None:
                    await self._health.cleanup()
                await asyncio.to_thread(self.producer.flush, 30)
                await asyncio.to_thread(self.consumer.close)
                self.ledger.close()
                self.shared.close()

    # --- health ----------------------------------------------------------------------------------

    def health_port(self) -> int | None:
        """The port /metrics, /healthz and /readyz are served on, once ``run`` serves them."""
        return metrics.bound_port(self._health) if self._health is not None else None

    async def readiness(self) -> dict[str, str | None]:
        """Ready when the broker answers and a token of the target API can be had for every tenant."""
        checks: dict[str, str | None] = {"broker": await self._broker.problem()}
        writer = self.writer
        if writer is None:
            checks["api"] = "the connector has not started"
            return checks
        client = writer.client
        name = "CRM" if self.settings.system == "crm" else "the accounting API"
        if not client.credentials:
            variable = "LIENTHONG_CRM_CREDENTIALS" if self.settings.system == "crm" else "LIENTHONG_ACCT_CREDENTIALS"
            checks["api"] = f"no tenant credentials for {name}: set {variable}"
            return checks
        problems = await token_problems(client)
        checks["api"] = (
            f"no token from {name} at {self.settings.base_url} ({'; '.join(problems)})" if problems else None
        )
        return checks

    def _writer(self, session: aiohttp.ClientSession) -> Writer:
        settings = self.settings
        if settings.system == "crm":
            crm = CrmClient(
                settings.base_url,
                session,
                settings.crm_credentials,
                timeout=settings.request_timeout,
                renew_before=settings.token_renew_before,
            )
            return CrmWriter(crm, self.shared)
        acct = ActClient(
            settings.base_url,
            session,
            settings.acct_app_id,
            settings.acct_credentials,
            timeout=settings.request_timeout,
            renew_before=settings.token_renew_before,
        )
        return ActWriter(acct, self.shared)

    def _schedule(self, message: Message) -> None:
        topic, partition, offset = position(message)
        self._in_flight[(topic, partition)].add(offset)
        key = message.key() or b""
        previous = self._tails.get(key)
        task = asyncio.create_task(self._after(previous, message))
        self._tails[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tails.get(key) is done:
                self._tails.pop(key, None)

        task.add_done_callback(forget)

    async def _after(self, previous: asyncio.Task[None] | None, message: Message) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)  # one key: one after another
        topic, partition, offset = position(message)
        tp = (topic, partition)
        try:
            await self._handle(message)
        except Stopping:
            # Not done: its offset stays in flight, so nothing at or after it is committed, and the
            # next run takes it again (the ledger makes that safe).
            log.info("left %s@%s:%s for the next run", topic, partition, offset)
            return
        except Exception:  # never lose the offset's place: report and move on
            log.exception("connector failed on %s@%s:%s", topic, partition, offset)
            await self._dead_letter(message, "internal", "unexpected error in the connector")
        self._in_flight[tp].discard(offset)
        self._done_up_to[tp] = max(self._done_up_to.get(tp, -1), offset)

    async def _commit(self) -> None:
        offsets = []
        for tp, done in self._done_up_to.items():
            pending = self._in_flight[tp]
            next_offset = min(pending) if pending else done + 1
            offsets.append(TopicPartition(tp[0], tp[1], next_offset))
        wanted = {(o.topic, o.partition): o.offset for o in offsets}
        if offsets and wanted != self._committed:
            try:
                await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
                self._committed = wanted
            except KafkaException as exc:  # a rebalance in progress: the next commit carries it
                log.info("commit deferred: %s", exc)

    # --- one command -----------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        try:
            command = parse_command(message.value() or b"")
        except ValidationError as exc:
            await self._dead_letter(message, "schema", f"not a command: {exc.errors()[0]['msg']}")
            return
        if command.target.value != self.settings.system:
            await self._dead_letter(message, "wrong_target", f"command for {command.target.value} on {message.topic()}")
            return
        # every later line of this command's task names it (common/logs.py)
        bind_record(
            tenant=command.tenant,
            entity=command.entity,
            record_id=command.key.as_text(),
            rule=command.rule,
            command_id=command.command_id,
        )
        seen = self.ledger.get(command.command_id)
        if seen is not None and seen[0] == "applied":
            self.stats["duplicate"] += 1
            await self._report(message, command, Outcome("duplicate", target_id=seen[1], code=command.key.code))
            return
        if command.depends_on:
            problem = await self._dependencies_problem(command)
            if problem:
                await self._report(
                    message,
                    command,
                    Outcome("failed", code=command.key.code, error=ResultError(kind="dependency", message=problem)),
                )
                return
        outcome = await self._apply(command)
        self.ledger.record(command.command_id, outcome.status, outcome.target_id)
        async with self._applied:
            self._applied.notify_all()
        self.stats[outcome.status] += 1
        await self._report(message, command, outcome)

    async def _dependencies_problem(self, command: Command) -> str | None:
        """None once every ``depends_on`` command is applied; else why this command cannot go."""
        deadline = time.monotonic() + self.settings.dependency_timeout
        async with self._applied:
            while True:
                states = {d: self.ledger.get(d) for d in command.depends_on}
                refused = [(d, state[0]) for d, state in states.items() if state and state[0] in ("rejected", "failed")]
                if refused:
                    return f"depends_on {[d for d, _ in refused]} was {refused[0][1]}: this command is not applied"
                if all(state and state[0] == "applied" for state in states.values()):
                    return None
                if self._stopping.is_set():
                    raise Stopping()  # the dependency may be among what this run no longer takes
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return (
                        f"depends_on {[d for d, s in states.items() if not s]} not applied within "
                        f"{self.settings.dependency_timeout:g}s"
                    )
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
                # the waited event happens, and the task would go on after being cancelled
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, 0.5)):
                        await self._applied.wait()

    async def _apply(self, command: Command) -> Outcome:
        tenant = command.tenant
        semaphore = self._semaphores.setdefault(tenant, asyncio.Semaphore(self.settings.concurrency))
        bucket = self._buckets.setdefault(tenant, TokenBucket(self.settings.rate, max(1.0, self.settings.rate)))
        writer = self._started_writer()
        attempt = 0
        # ACT took the proposal: while looking for its result fails, a later attempt only looks
        # again. Saved again, it could meet the voucher an accountant generated from it meanwhile
        # and be refused (IsCreatedVoucher). Looked for and not found, it is saved again.
        pending: Pending | None = None
        while True:
            attempt += 1
            try:
                if pending is None:
                    async with semaphore:
                        await bucket.take()
                        answer = await writer.apply(command)
                    if isinstance(answer, Pending):
                        metrics.CONNECTOR_RESULTS.labels(self.settings.system, "pending").inc()
                        pending = answer
                    else:
                        written = answer
                if pending is not None:
                    written = await self._settled(pending, bucket)
                return Outcome(
                    "applied",
                    target_id=written.target_id or command.key.id,
                    code=written.code or command.key.code,
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
                metrics.RETRIES.labels(self.settings.system, metrics.last_endpoint()).inc()
                if attempt >= self.settings.max_attempts:
                    return Outcome(
                        "failed",
                        code=command.key.code,
                        attempts=attempt,
                        error=ResultError(kind="retries_exhausted", message=str(exc)),
                    )
                delay = random.uniform(0, min(self.settings.backoff_cap, self.settings.backoff_base * 2**attempt))
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                await asyncio.sleep(delay)

    async def _settled(self, pending: Pending, bucket: TokenBucket) -> Written:
        """A proposal ACT queued: wait for its callback (filed in the shared ledger by the accounting
        capture service); when none comes in time, pull the callbacks ACT could not deliver."""
        writer = self._started_writer()
        if not isinstance(writer, ActWriter):
            raise TypeError("only the accounting API answers by callback")
        deadline = time.monotonic() + self.settings.callback_timeout
        outcome: CallbackOutcome | None = None
        while outcome is None and time.monotonic() < deadline:
            if self._stopping.is_set():
                raise Stopping()  # not known to be applied: the next run saves it again (same org_refid)
            await asyncio.sleep(0.05)
            outcome = writer.outcome(pending)
        if outcome is None:
            await bucket.take()
            outcome = await writer.recover(pending)
            self.stats["callbacks_recovered" if outcome else "callbacks_missing"] += 1
        if outcome is None:
            raise no_callback(pending, self.settings.callback_timeout)
        return writer.settle(pending, outcome)

    def _started_writer(self) -> Writer:
        if self.writer is None:
            raise RuntimeError("the connector applies commands only while it runs")
        return self.writer

    # --- output ----------------------------------------------------------------------------------

    async def _report(self, message: Message, command: Command, outcome: Outcome) -> None:
        result = Result(
            command_id=command.command_id,
            tenant=command.tenant,
            target=command.target,
            entity=command.entity,
            status=outcome.status,
            target_id=outcome.target_id or command.key.id,
            code=outcome.code or command.key.code,
            error=outcome.error,
            attempts=outcome.attempts,
            ts_ms=int(time.time() * 1000),
        )
        log.info(
            "%s %s after %s attempt(s)%s",
            outcome.status,
            command.op.value,
            outcome.attempts,
            f": {outcome.error.kind}: {outcome.error.message[:300]}" if outcome.error else "",
        )
        await self._produce(
            self.prefix + results_topic(self.settings.system),
            message.key(),
            orjson.dumps(result.model_dump(mode="json")),
        )
        metrics.CONNECTOR_RESULTS.labels(self.settings.system, outcome.status).inc()
        if outcome.status == "applied":
            metrics.observe_sync_latency(self.settings.system, source_ts_ms(message, command))
        if outcome.status in ("rejected", "failed"):
            await self._dead_letter(
                message,
                outcome.error.kind if outcome.error else outcome.status,
                outcome.error.message if outcome.error else outcome.status,
            )

    async def _dead_letter(self, message: Message, kind: str, text: str) -> None:
        topic, partition, offset = position(message)
        log.warning("dead-lettered %s@%s:%s to %s: %s: %s", topic, partition, offset, DLQ_COMMANDS, kind, text[:300])
        headers = dead_letter_headers(
            kind, text, topic=topic, partition=partition, offset=offset, failed_at_ms=int(time.time() * 1000)
        )
        await self._produce(self.prefix + DLQ_COMMANDS, message.key(), message.value(), headers)
        metrics.DEAD_LETTERS.labels(DLQ_COMMANDS, kind).inc()

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list | None = None) -> None:
        """Produce and wait until the broker has it (the offset is committed only after)."""
        await produce_acknowledged(self.producer, topic, key, value, headers)


# The header the worker puts on a command: its source change's ts_ms (streams/agents/pipeline.py).
SOURCE_TS_MS = "lienthong.source_ts_ms"


def source_ts_ms(message: Message, command: Command) -> int:
    """When the change behind a command happened: its header, else when the command was decided."""
    for header in message.headers() or []:
        name, value = header[0], header[1]
        if name == SOURCE_TS_MS and value:
            try:
                return int(value)
            except ValueError:
                break
    return command.ts_ms
