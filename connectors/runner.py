"""A connector service: ``commands.<system>`` -> the system's API -> ``results.<system>``.

* **Speaks the public AMIS APIs** through ``connectors.writers`` (mapping tables, token caching
  and renewal, documented batch limits). A command to accounting that becomes a *proposal* is
  ``applied`` only when ACT's callback says so (filed in the shared ledger by the accounting capture
  service); when none comes within ``callback_timeout`` the connector pulls the callbacks ACT could
  not deliver, and saves again (the same ``org_refid``: the same proposal) if the result is not there.
  When the pull itself fails (a passing fault), it pulls again rather than saving again: an
  accountant may have generated the voucher meanwhile, and a second save would be refused.
* **Idempotent by command id**: a durable ledger of applied ids; a repeat gets a
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
* **Batches** (accounting): commands of one tenant taken together go to ACT in one call as far as
  the API allows (``save_dictionary``: 200 records, ``save`` / ``delete``: 100 proposals); each keeps
  its own result, ledger entry and retries (``connectors.applying``).
* **At least once**: an offset is committed only once its result is on the broker and every
  earlier offset of its partition is done. SIGTERM stops consuming, finishes what is in flight
  and commits it.

Here is the consume loop and what one command goes through; the pieces are their own modules:
``connectors.in_flight`` (order per key, offsets to commit), ``connectors.command_ledger`` (the
ledger of command ids, ``depends_on``), ``connectors.applying`` (limits, retries, callbacks),
``connectors.reporting`` (results and dead letters), ``connectors.writers`` (the API calls).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import SecretStr, ValidationError

from amis.acct_client import DICTIONARY_BATCH, ActClient, ActCredentials
from amis.credentials import token_problems
from amis.crm_client import CrmClient, CrmCredentials
from amis.ledger import CommandLedger, ConnectorLedger, LocalLedger, WriteLedger
from amis.ledger_http import HttpLedger, LedgerUnavailable
from common import metrics
from common.logs import bind_record
from common.names import DLQ_COMMANDS, System, commands_topic, results_topic
from common.topic_wait import TopicWait
from connectors.applying import Applier
from connectors.command_ledger import Dependencies
from connectors.in_flight import InFlight, Stopping, position
from connectors.reporting import Outcome, ResultReporter
from connectors.writers import ActWriter, CrmWriter, Writer
from streams.core.contract import ResultError, parse_command

log = logging.getLogger(__name__)


def group_id(topic_prefix: str, system: System) -> str:
    """The consumer group of a system's connector replicas (what deploy/k8s/keda.yaml sizes by its lag)."""
    return f"{topic_prefix}lienthong-connector-{system}"


@dataclass
class ConnectorSettings:
    system: System
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
    max_in_flight: int | None = None  # commands taken but not finished; default Connector.default_in_flight()
    rate: float = 50.0  # requests per second per tenant
    dependency_timeout: float = 60.0
    request_timeout: float = 10.0
    extra_consumer_config: dict[str, Any] = field(default_factory=dict)
    crm_credentials: dict[str, CrmCredentials] = field(default_factory=dict)
    acct_app_id: str = field(default="", repr=False)  # the key of ACT's callback signature: never shown
    acct_credentials: dict[str, ActCredentials] = field(default_factory=dict)
    acct_branches: dict[str, str] = field(default_factory=dict)  # tenant -> ACT branch_id of its proposals
    shared_ledger_path: Path = Path("var/connectors/acct-shared.sqlite")  # recent writes and callbacks, with capture
    # the capture service's ledger API (LIENTHONG_LEDGER_URL): set, it replaces ledger_path and
    # shared_ledger_path, and replicas of the connector may share the group (docs/deploy.md)
    ledger_url: str | None = None
    ledger_token: SecretStr | None = field(default=None, repr=False)
    callback_timeout: float = 30.0  # seconds a proposal waits for its callback before pulling undelivered ones
    # accounting: commands arriving within this of each other go in one call (0: one by one); longer
    # than the consumer's poll, so that what it takes in a few polls as room frees goes together
    batch_linger: float = 0.25
    token_renew_before: float = 300.0  # a token is fetched again this many seconds before it ends
    extensions: bool = False  # write the sandboxes' extensions too (LIENTHONG_CONNECTOR_EXTENSIONS)
    # /metrics, /healthz, /readyz (docs/operations.md): None serves none; 0 takes a free port (health_port())
    health_port: int | None = None
    health_host: str = "127.0.0.1"


class Connector:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self._stopping = asyncio.Event()
        self.ledger = self._ledger()
        self.member_id: str | None = None  # in the consumer group (set at each assignment)
        self.consumer = Consumer(
            {
                **settings.kafka,
                "group.id": settings.group_id or group_id(self.prefix, settings.system),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # only commands of committed batches (the worker writes them in transactions): librdkafka's
                # default, said here because applying an aborted batch's command would write twice
                "isolation.level": "read_committed",
                # the end of a partition is past the transactions' markers: committed once all is done
                "enable.partition.eof": True,
                **settings.extra_consumer_config,
            }
        )
        self.producer = Producer({**settings.kafka, "acks": "all", "enable.idempotence": True, "linger.ms": 2})
        self.reporter = ResultReporter(self.producer, system=settings.system, topic_prefix=self.prefix)
        self._in_flight = InFlight()
        self.dependencies = Dependencies(self.ledger, timeout=settings.dependency_timeout, stopping=self._stopping)
        self.stats: dict[str, int] = defaultdict(int)
        self.group_id = settings.group_id or group_id(self.prefix, settings.system)
        self.writer: Writer | None = None
        self._applier: Applier | None = None
        self._health: web.AppRunner | None = None
        self._broker = metrics.BrokerCheck(settings.kafka)
        # what it reads and writes: made by `lienthong topics create`, waited for at start
        self.topics = TopicWait(
            settings.kafka,
            [
                self.prefix + commands_topic(settings.system),
                self.prefix + results_topic(settings.system),
                self.prefix + DLQ_COMMANDS,
            ],
            service=f"connector {settings.system}",
        )

    def stop(self) -> None:
        self._stopping.set()

    def _ledger(self) -> ConnectorLedger:
        """The capture service's ledger API when ``ledger_url`` is set (replicas share it), else the
        SQLite files on this host (or volume), shared with capture by path."""
        settings = self.settings
        if settings.ledger_url:
            if settings.ledger_token is None or not settings.ledger_token.get_secret_value():
                raise ValueError("LIENTHONG_LEDGER_URL is set but LIENTHONG_LEDGER_TOKEN is not: set capture's token")
            return HttpLedger(
                settings.ledger_url,
                settings.ledger_token,
                system=settings.system,
                stopping=self._stopping,
                timeout=settings.request_timeout,
                backoff_base=settings.backoff_base,
                backoff_cap=settings.backoff_cap,
            )
        return LocalLedger(WriteLedger(settings.shared_ledger_path), CommandLedger(settings.ledger_path))

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        topic = self.prefix + commands_topic(self.settings.system)
        async with aiohttp.ClientSession() as session:
            self.writer = self._writer(session)
            self._applier = Applier(
                self.writer,
                system=self.settings.system,
                concurrency=self.settings.concurrency,
                rate=self.settings.rate,
                max_attempts=self.settings.max_attempts,
                backoff_base=self.settings.backoff_base,
                backoff_cap=self.settings.backoff_cap,
                callback_timeout=self.settings.callback_timeout,
                stopping=self._stopping,
                stats=self.stats,
                batch_linger=self.settings.batch_linger,
                # a callback is looked for in the ledger this often: less often over HTTP (one request each)
                callback_poll=0.25 if self.ledger.shared_by_replicas else 0.05,
            )
            if self.settings.health_port is not None:
                self._health = await metrics.serve_health(
                    self.settings.health_host,
                    self.settings.health_port,
                    self.readiness,
                    collectors=[
                        metrics.ConsumerGroupLagCollector(
                            self.settings.kafka, [self.group_id], member_id=self._member_id
                        )
                    ],
                )
            try:
                # Subscribed once its topics exist (the probes answer meanwhile): it says what is missing
                # and writes results and dead letters only to topics made with the contract's settings
                # (and a subscription made before would depend on librdkafka's refreshes: common.topic_wait).
                if await self.topics.wait_async(self._stopping):
                    await asyncio.to_thread(self.consumer.subscribe, [topic], on_assign=self._on_assign)
                limit = self.settings.max_in_flight or self.default_in_flight()
                while not self._stopping.is_set():
                    # Take no more than can be finished soon: what is taken is what a stop must finish.
                    room = limit - self._in_flight.count()
                    if room <= 0:
                        await asyncio.sleep(0.05)
                        continue
                    messages = await asyncio.to_thread(self.consumer.consume, room, 0.2)
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                self._in_flight.reached_end(*position(message))

                            else:
                                log.warning("consumer: %s", error)
                            continue

                        self._in_flight.start(message, self._work)
                    await self._commit()
                # graceful stop: finish what was taken, then commit it
                await self._in_flight.finish()
                await self._commit()
            finally:
                if self._health is not None:
                    await self._health.cleanup()
                await asyncio.to_thread(self.producer.flush, 30)
                await asyncio.to_thread(self.consumer.close)
                await self.ledger.close()

    def _on_assign(self, consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(f"connector-{self.settings.system}").inc()
        # read here, in the consumer's own thread: asked from another it is a round trip to librdkafka's
        self.member_id = consumer.memberid()

    def _member_id(self) -> str | None:
        """This connector's member id in its group: one replica exports the group's lag (common.metrics)."""
        return self.member_id

    def default_in_flight(self) -> int:
        """Commands taken at once unless told: 4 × ``concurrency``; to accounting at least two full
        ``save_dictionary`` calls (400), since what is taken together is written together (``Applier``):
        one call's worth is written while the next is taken whole, not a few at a time as room frees."""
        taken = 4 * self.settings.concurrency
        return max(taken, 2 * DICTIONARY_BATCH) if self.settings.system == System.ACCT else taken

    # --- health ----------------------------------------------------------------------------------

    def health_port(self) -> int | None:
        """The port /metrics, /healthz and /readyz are served on, once ``run`` serves them."""
        return metrics.bound_port(self._health) if self._health is not None else None

    async def readiness(self) -> dict[str, str | None]:
        """Ready when the broker answers and a token of the target API can be had for every tenant."""
        checks: dict[str, str | None] = {"broker": await self._broker.problem()}
        if self.settings.ledger_url:  # the capture service's ledger API: commands wait while it cannot be reached
            checks["ledger"] = await self.ledger.problem()
        if self.topics.missing:
            checks["topics"] = self.topics.readiness()
        writer = self.writer
        if writer is None:
            checks["api"] = "the connector has not started"
            return checks
        client = writer.client
        name = "CRM" if self.settings.system == System.CRM else "the accounting API"
        if not client.credentials:
            variable = (
                "LIENTHONG_CRM_CREDENTIALS" if self.settings.system == System.CRM else "LIENTHONG_ACCT_CREDENTIALS"
            )
            checks["api"] = f"no tenant credentials for {name}: set {variable}"
            return checks
        problems = await token_problems(client)
        checks["api"] = (
            f"no token from {name} at {self.settings.base_url} ({'; '.join(problems)})" if problems else None
        )
        return checks

    def _writer(self, session: aiohttp.ClientSession) -> Writer:
        settings = self.settings
        if settings.system == System.CRM:
            crm = CrmClient(
                settings.base_url,
                session,
                settings.crm_credentials,
                timeout=settings.request_timeout,
                renew_before=settings.token_renew_before,
            )
            return CrmWriter(crm, self.ledger, extensions=settings.extensions)
        acct = ActClient(
            settings.base_url,
            session,
            settings.acct_app_id,
            settings.acct_credentials,
            timeout=settings.request_timeout,
            renew_before=settings.token_renew_before,
        )
        return ActWriter(acct, self.ledger, branches=settings.acct_branches, extensions=settings.extensions)

    async def _work(self, message: Message) -> bool:
        """Handle one taken command; whether it is done (False: left for the next run)."""
        try:
            await self._handle(message)
        except (Stopping, LedgerUnavailable):
            # Not done: its offset stays in flight, so nothing at or after it is committed, and the
            # next run takes it again (the ledger makes that safe).
            topic, partition, offset = position(message)
            log.info("left %s@%s:%s for the next run", topic, partition, offset)
            return False
        except Exception:  # never lose the offset's place: report and move on
            topic, partition, offset = position(message)
            log.exception("connector failed on %s@%s:%s", topic, partition, offset)
            await self.reporter.dead_letter(message, "internal", "unexpected error in the connector")
        return True

    async def _commit(self) -> None:
        offsets = self._in_flight.to_commit()
        if offsets:
            try:
                await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
                self._in_flight.committed(offsets)
            except KafkaException as exc:  # a rebalance in progress: the next commit carries it
                log.info("commit deferred: %s", exc)

    # --- one command -----------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        try:
            command = parse_command(message.value() or b"")
        except ValidationError as exc:
            await self.reporter.dead_letter(message, "schema", f"not a command: {exc.errors()[0]['msg']}")
            return
        if command.target != self.settings.system:
            await self.reporter.dead_letter(
                message, "wrong_target", f"command for {command.target.value} on {message.topic()}"
            )
            return
        # every later line of this command's task names it (common/logs.py)
        bind_record(
            tenant=command.tenant,
            entity=command.entity,
            record_id=command.key.as_text(),
            rule=command.rule,
            command_id=command.command_id,
        )
        seen = await self.ledger.command_state(command.command_id)
        if seen is not None and seen[0] == "applied":
            self.stats["duplicate"] += 1
            await self.reporter.report(message, command, Outcome("duplicate", target_id=seen[1], code=command.key.code))
            return
        if command.depends_on:
            problem = await self.dependencies.problem(command)
            if problem:
                await self.reporter.report(
                    message,
                    command,
                    Outcome("failed", code=command.key.code, error=ResultError(kind="dependency", message=problem)),
                )
                return
        outcome = await self._started_applier().apply(command)
        await self.ledger.record_command(command.command_id, outcome.status, outcome.target_id)
        await self.dependencies.recorded()
        self.stats[outcome.status] += 1
        await self.reporter.report(message, command, outcome)

    def _started_applier(self) -> Applier:
        if self._applier is None:
            raise RuntimeError("the connector applies commands only while it runs")
        return self._applier
