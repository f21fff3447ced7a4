"""The faust application: ``create_app(settings)`` builds it; nothing happens at import time.

``create_app`` is the one place where the processor is put together: it reads the worker's settings
(``streams.settings.WorkerSettings``) once unless it is given them, validates the rule table, declares
the topics and tables, builds the output producer and hands the agents one ``AgentDeps``. Tests
inject their own producer (``producer=``).
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from dataclasses import dataclass
from typing import Any

import faust
from aiohttp import web
from confluent_kafka import Producer
from faust.sensors import Monitor
from mode import Service

from common import metrics
from common.kafka_config import aiokafka_config, confluent_config, ssl_context
from common.names import System
from common.settings import KafkaSettings
from streams.agents.aggregates import register_aggregates_agent
from streams.agents.batching import BatchingStream
from streams.agents.cdc import register_cdc_agent
from streams.agents.pipeline import AgentDeps, OutputTopics
from streams.agents.results import register_results_agent
from streams.core.rules import RuleBook, load_rules
from streams.outputs import Outputs, ProducerLike
from streams.settings import WorkerSettings
from streams.tables import OwnWritesGlobalTable, SharedMemoryTable, Tables, define_tables
from streams.tables.catch_up import BrokerEndOffsets, GlobalTablesCatchUp
from streams.tables.stores import limit_malloc_arenas
from streams.tables.tenants import TenantSettings
from streams.topics import AUDIT, DLQ_CDC, TENANT_CONFIG, cdc_topics, commands_topic, results_topic

log = logging.getLogger(__name__)


class QuietMonitor(Monitor):
    """faust's monitor without its per-message bookkeeping (a third of a no-op agent's time; see
    docs/performance.md). The processor counts what it does itself (``AgentDeps.counts``)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict[str, Any] | None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: dict[str, Any] | None = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


@dataclass
class Lienthong:
    """The app and what it is made of, for the CLI and for tests."""

    app: faust.App
    settings: WorkerSettings
    rules: RuleBook
    tables: Tables
    tenants: TenantSettings
    deps: AgentDeps
    topics: dict[str, Any]
    agents: dict[str, Any]


def output_producer(kafka: KafkaSettings, *, max_message_bytes: int, delivery_timeout: float) -> Producer:
    """The librdkafka producer of commands, audit records, dead letters and re-keyed documents."""
    return Producer(
        confluent_config(
            kafka,
            {
                "acks": "all",
                # retries never reorder or duplicate a partition's messages
                "enable.idempotence": True,
                "linger.ms": 5,
                # Not compressed: the worker reads its own changelogs and re-keyed documents back, and
                # should not need a codec library to do so (a topic can still compress on the broker).
                # the Java client's partitioner, as faust's producer had: keys land where they did
                "partitioner": "murmur2_random",
                "message.max.bytes": max_message_bytes + 65536,
                "queue.buffering.max.messages": 1_000_000,
                "message.timeout.ms": int(delivery_timeout * 1000),
            },
        )
    )


def broker_url(kafka: KafkaSettings) -> str:
    """The bootstrap servers as faust wants them (aiokafka driver)."""
    return ";".join(f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(","))


def faust_credentials(kafka: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The transport security of ``KafkaSettings`` as faust's ``broker_credentials`` (its consumer, producer
    and admin client); the same settings as every other client's (common/kafka_config.py)."""
    protocol = kafka.kafka_security_protocol
    context = ssl_context(kafka)
    if protocol.startswith("SASL_"):
        password = kafka.kafka_sasl_password
        return faust.SASLCredentials(
            username=kafka.kafka_sasl_username,
            password=password.get_secret_value() if password is not None else None,
            mechanism=kafka.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: WorkerSettings | None = None, *, producer: ProducerLike | None = None) -> Lienthong:
    settings = settings or WorkerSettings()
    rules = load_rules()  # a bad rule table stops here, naming the rule
    kafka = settings.kafka
    prefix = kafka.topic_prefix
    app = faust.App(
        settings.app_id,
        broker=broker_url(kafka),
        broker_credentials=faust_credentials(kafka),
        store=settings.tables.store,
        datadir=str(settings.tables.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # exactly_once is unreliable in faust-streaming; at-least-once + deterministic command ids.
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout,
        # a record larger than this is still fetched whole (the broker returns at least one batch)
        consumer_max_fetch_size=settings.consumer_fetch_kb * 1024,
        consumer_group_instance_id=settings.group_instance_id,
        broker_commit_interval=settings.commit_interval,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        # faust's own web server stays off: HealthServer serves /metrics, /healthz and /readyz on
        # LIENTHONG_WEB_PORT from before recovery (faust starts its server only after it).
        web_enabled=False,
        # Declared topics are created by `lienthong topics create`; faust creates only its own
        # internal ones (changelogs, leader topic).
        topic_allow_declare=True,
        Stream=BatchingStream,
        GlobalTable=OwnWritesGlobalTable,
        Table=SharedMemoryTable,
        monitor=QuietMonitor(),
    )

    faust_adapter.install(app)

    def raw_topic(*names: str) -> Any:
        """Contract topics as bytes in and out: agents decode themselves, to dead-letter bad input whole."""
        return app.topic(
            *[prefix + name for name in names],
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )

    aggregate_inputs_name = f"{settings.app_id}-aggregate-inputs"
    topics: dict[str, Any] = {
        "cdc": raw_topic(*[spec.name for spec in cdc_topics()]),
        "results": raw_topic(*[results_topic(s.value) for s in System]),
        # Acct documents re-keyed by their order: the aggregates agent and the ``orders`` table read
        # one topic, so each order's aggregate lives on the partition its documents arrive on.
        "aggregate_inputs": app.topic(
            aggregate_inputs_name,
            internal=True,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            replicas=settings.topic_replication_factor,
        ),
    }
    tables = define_tables(app, settings.tables, settings.topic_partitions)
    tenants = TenantSettings(aiokafka_config(kafka), prefix + TENANT_CONFIG)
    catch_up = GlobalTablesCatchUp(
        tables.global_tables(),
        BrokerEndOffsets(aiokafka_config(kafka)),
        max_wait=settings.global_tables_max_wait,
    )
    deps = AgentDeps(
        rules=rules,
        tables=tables,
        tenants=tenants,
        outputs=Outputs(
            producer
            if producer is not None
            else output_producer(
                kafka, max_message_bytes=settings.max_message_bytes, delivery_timeout=settings.delivery_timeout
            ),
            max_message_bytes=settings.max_message_bytes,
            delivery_timeout=settings.delivery_timeout + 30,
        ),
        topics=OutputTopics(
            commands={system: prefix + commands_topic(system.value) for system in System},
            audit=prefix + AUDIT,
            dead_letters=prefix + DLQ_CDC,
            aggregate_inputs=aggregate_inputs_name,
        ),
        topic_prefix=prefix,
        default_order_target=settings.default_order_target,
        batch_size=settings.batch_size,
        batch_wait=settings.batch_wait,
        catch_up=catch_up,
    )
    agents = {
        "cdc": register_cdc_agent(app, topics["cdc"], deps),
        "aggregates": register_aggregates_agent(app, topics["aggregate_inputs"], deps),
        "results": register_results_agent(app, topics["results"], deps),
    }

    @app.task
    async def follow_tenant_settings() -> None:
        """Every worker reads all of ``config.tenants`` (compacted) and follows it."""
        await tenants.run()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types handlers narrower than it calls them
    async def count_rebalance(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        metrics.REBALANCES.labels("worker").inc()
        catch_up.rebalanced()

    @app.timer(30.0)
    async def measure_tables() -> None:
        """``lienthong_table_entries``: a table's size in this worker; ``lienthong_table_memory_bytes``."""
        for name in ("links", "written", "crm_records", "seen_events", "orders"):
            metrics.TABLE_ENTRIES.labels(name).set(_table_entries(tables.table(name)))
        if tables.memory is not None:
            for kind, used in tables.memory.usage_bytes().items():
                metrics.TABLE_MEMORY.labels(kind).set(used)

    return Lienthong(
        app=app,
        settings=settings,
        rules=rules,
        tables=tables,
        tenants=tenants,
        deps=deps,
        topics=topics,
        agents=agents,
    )


async def worker_readiness(built: Lienthong, broker: metrics.BrokerCheck) -> dict[str, str | None]:
    """``/readyz`` of a worker: the broker answers, the group assigned its partitions, tables recovered."""
    app = built.app
    checks: dict[str, str | None] = {"broker": await broker.problem()}
    if app.rebalancing_count == 0 or app.rebalancing:
        checks["partitions"] = "waiting for the consumer group to assign this worker its partitions (rebalancing)"
    else:
        checks["partitions"] = None
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # faust's TableManager, not its interface
    if app.in_recovery or not recovery.completed.is_set():
        checks["tables"] = "recovering the tables from their changelog topics"
    else:
        checks["tables"] = None
    return checks


class HealthServer(Service):
    """The worker's ``/metrics``, ``/healthz``, ``/readyz`` on ``LIENTHONG_WEB_PORT``: started with the
    app, before its tables are recovered (``/readyz`` answers 503 until they are)."""

    def __init__(self, built: Lienthong, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = built
        self.runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        settings = self.built.settings
        broker = metrics.BrokerCheck(confluent_config(settings.kafka))
        lag = metrics.ConsumerGroupLagCollector(confluent_config(settings.kafka), [settings.app_id])
        self.runner = await metrics.serve_health(
            settings.web_host,
            settings.web_port,
            lambda: worker_readiness(self.built, broker),
            collectors=[lag],
        )

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class ClientsClosed(Service):
    """Closes, with the app, the broker clients the worker opened besides faust's own."""

    def __init__(self, built: Lienthong, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = built

    async def on_stop(self) -> None:
        catch_up = self.built.deps.catch_up
        if catch_up is not None and isinstance(catch_up.end_offsets, BrokerEndOffsets):
            await catch_up.end_offsets.close()


def run_worker(settings: WorkerSettings | None = None) -> None:
    """Start a faust worker for the app (blocks until SIGTERM/SIGINT)."""
    settings = settings or WorkerSettings()
    limit_malloc_arenas(settings.malloc_arenas)  # before the threads of RocksDB, librdkafka and faust start
    built = create_app(settings)
    settings.tables.data_dir.mkdir(parents=True, exist_ok=True)
    built.app.add_dependency(ClientsClosed(built))
    if settings.web_enabled:
        built.app.add_dependency(HealthServer(built))
    # logging is set up by the command line (common/logs.py): faust keeps it instead of installing its own
    worker = faust.Worker(built.app, loglevel=settings.log.log_level, quiet=True, override_logging=False)

    @built.app.task
    async def dump_tasks_on_sigusr2() -> None:
        """`kill -USR2 <pid>` logs every asyncio task's stack: where a stuck worker waits."""

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(limit=8, file=out)
            log.warning("asyncio tasks:\n%s", out.getvalue())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)

    worker.execute_from_commandline()


def _table_entries(table: Any) -> int:
    """Entries of a table in this worker. Counting a RocksDB table with ``len`` reads every key on the
    event loop (a second or more for a million keys), so RocksDB tables report RocksDB's own estimate
    (``rocksdb.estimate-num-keys``: overwrites not yet compacted count twice) per assigned partition."""
    databases = faust_adapter.active_rocksdb_databases(table.data)
    if databases is None:
        return len(table)
    return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in databases)
