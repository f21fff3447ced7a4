"""The worker: ``create_app(settings)`` puts the processor together; nothing happens at import time.

The worker is a faust application — its lifecycle, its tasks and timers, signals, the ``lienthong
worker`` command — that runs one processing loop (``streams.loop``) in a thread of its own. faust's
own Kafka machinery stays off (``NoKafkaClients``): the loop has its own librdkafka consumer, in
the group ``<app id>``, and one transactional producer, because a batch's outputs, state and
offsets are committed in one Kafka transaction (``streams.checkpoint``), which needs the consumer's
group metadata (KIP-447), and because faust's per-message machinery alone costs more than the whole
decision (docs/performance.md). Beside the loop the app runs the tenant-settings reader
(``streams.tables.tenants``), the worker's ``/metrics``, ``/healthz`` and ``/readyz``, and a timer
that measures the stores.

``create_app`` reads the settings once (when not given) and validates the rule table; the loop's
clients are made when the worker starts (``ProcessingService``), and the processor's own topics are
created then if missing. ``build_loop`` is the one place the loop is assembled, for the worker and
for the tests (which give it fake clients).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from aiohttp import web
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # see ops/admin.py
from faust.app.base import BootStrategy
from mode import Service

from common import metrics
from common.kafka_config import aiokafka_config, confluent_config
from common.names import (
    AUDIT,
    DLQ_CDC,
    TENANT_CONFIG,
    System,
    changes_topic,
    commands_topic,
    results_topic,
    state_changelog_topic,
)
from common.settings import KafkaSettings
from common.topic_wait import TopicWait
from streams.agents.batch import OutputTopics, Processing
from streams.checkpoint import Checkpoint, TransactionalProducer
from streams.core.rules import RuleBook, load_rules
from streams.loop import GroupOffsets, LoopConfig, ProcessingLoop
from streams.settings import WorkerSettings
from streams.tables.memory import RocksDBMemory, limit_malloc_arenas, tune_garbage_collection
from streams.tables.store import Stores
from streams.tables.tenants import TenantSettings, TopicEnds
from streams.topics import cdc_topics

log = logging.getLogger(__name__)

# The worker's exit status when a batch cannot be made durable (EX_SOFTWARE): run again, it reads
# the batch again from the last committed offsets.
EXIT_BATCH_NOT_DURABLE = 70

# How long the fetch of a partition with nothing new waits before answering: the latency a quiet
# input adds, and part of a router's slack for "read to the end" (streams.agents.time_order).
FETCH_WAIT_MS = 20


class NoKafkaClients(BootStrategy):
    """faust's worker without its consumer, producer, agents' streams and tables: the processing loop
    has its own clients (module docstring)."""

    enable_kafka = False


class WorkerApp(faust.App):
    BootStrategy = NoKafkaClients


@dataclass
class Lienthong:
    """The worker and what it is made of, for the command line and the tests."""

    app: faust.App
    settings: WorkerSettings
    rules: RuleBook
    tenants: TenantSettings
    processing: ProcessingService = field(repr=False)


# --- the processor's topics and clients ----------------------------------------------------------


def internal_topics(settings: WorkerSettings) -> list[NewTopic]:
    """The processor's own topics: every change routed by tenant, and the state of its partitions.
    Named after the app id (which a deployment makes its own), without the topic prefix, as faust
    names its internal topics.

    The partition count of the changes topic fixes which partition each tenant lives on: it is
    created once and never changed (docs/deploy.md says how to move to more partitions)."""
    partitions, replication = settings.topic_partitions, settings.topic_replication_factor
    return [
        NewTopic(changes_topic(settings.app_id), partitions, replication),
        NewTopic(
            state_changelog_topic(settings.app_id),
            partitions,
            replication,
            config={"cleanup.policy": "compact"},
        ),
    ]


def public_topics(settings: WorkerSettings) -> list[str]:
    """The contract topics the worker reads (change events, results, tenant settings) and writes
    (commands, audit, dead letters), with the deployment's prefix: ``lienthong topics create``
    makes them, and the worker waits for them at start (``common.topic_wait``)."""
    prefix = settings.kafka.topic_prefix
    names = [spec.name for spec in cdc_topics()]
    names += [results_topic(system) for system in System] + [commands_topic(system) for system in System]
    names += [TENANT_CONFIG, AUDIT, DLQ_CDC]
    return [prefix + name for name in names]


def ensure_internal_topics(settings: WorkerSettings, timeout: float = 30.0) -> int:
    """Create the internal topics when missing, wait until the broker lists both, and return the
    changes topic's partition count."""
    admin = AdminClient(confluent_config(settings.kafka))
    wanted = internal_topics(settings)
    existing = admin.list_topics(timeout=timeout).topics
    missing = [topic for topic in wanted if topic.topic not in existing]
    if missing:
        for name, future in admin.create_topics(missing).items():
            try:
                future.result()
            except Exception as exc:  # another worker created it meanwhile: what was wanted
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
                log.debug("topic %s was created by another worker", name)
    deadline = time.monotonic() + timeout
    while True:
        described = admin.list_topics(timeout=timeout).topics
        if all(topic.topic in described and not described[topic.topic].error for topic in wanted):
            return len(described[wanted[0].topic].partitions)
        if time.monotonic() > deadline:
            names = ", ".join(topic.topic for topic in wanted)
            raise RuntimeError(f"the processor's topics ({names}) did not appear on the broker within {timeout:g}s")
        time.sleep(0.1)


def transactional_id(settings: WorkerSettings) -> str:
    """With static membership (``LIENTHONG_GROUP_INSTANCE_ID``) the same at every start, so a restarted
    worker ends its predecessor's open transaction at once; else new each start, and the broker aborts
    a dead worker's open transaction after ``LIENTHONG_TRANSACTION_TIMEOUT``."""
    return f"{settings.app_id}-{settings.group_instance_id or uuid.uuid4().hex}"


def loop_consumer(settings: WorkerSettings) -> Consumer:
    """The loop's consumer: the group ``<app id>``, offsets committed only in the batches' transactions."""
    extra: dict[str, Any] = {
        "group.id": settings.app_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": True,  # a router knows when an input is read to its end
        "fetch.wait.max.ms": FETCH_WAIT_MS,
        "session.timeout.ms": int(settings.session_timeout * 1000),
        "heartbeat.interval.ms": int(min(3.0, settings.session_timeout / 3) * 1000),
        "max.partition.fetch.bytes": settings.consumer_fetch_kb * 1024,
        # what the consumer reads ahead, over every partition it has (docs/state.md, "Memory")
        "queued.max.messages.kbytes": max(1024, settings.consumer_fetch_kb * 16),
    }
    if settings.group_instance_id:
        extra["group.instance.id"] = settings.group_instance_id
    return Consumer(confluent_config(settings.kafka, extra))


def restore_consumer(kafka: KafkaSettings, app_id: str) -> Consumer:
    """Reads the state changelog back into a partition's store (assigned, never subscribed)."""
    return Consumer(
        confluent_config(
            kafka,
            {
                "group.id": f"{app_id}-restore",  # never joined, never committed: librdkafka wants one
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": FETCH_WAIT_MS,
            },
        )
    )


def loop_producer(settings: WorkerSettings) -> TransactionalProducer:
    """The transactional producer of everything a batch writes."""
    return Producer(
        confluent_config(
            settings.kafka,
            {
                "transactional.id": transactional_id(settings),
                "transaction.timeout.ms": int(settings.transaction_timeout * 1000),
                "linger.ms": 5,
                # the Java client's partitioner: keys land where Kafka Streams and faust would put them
                "partitioner": "murmur2_random",
                "message.max.bytes": settings.max_message_bytes + 65536,
                "queue.buffering.max.messages": 1_000_000,
                # librdkafka: a message may not outlive the transaction it belongs to
                "message.timeout.ms": int(settings.transaction_timeout * 1000),
            },
        )
    )


def build_loop(
    settings: WorkerSettings,
    rules: RuleBook,
    *,
    tenant_settings: Any,
    settings_current: Callable[[int], None],
    stop_worker: Callable[[], None],
    consumer: Any = None,
    restore: Any = None,
    producer: TransactionalProducer | None = None,
    group_offsets: Callable[[list[TopicPartition], float], list[TopicPartition]] | None = None,
    changes_partitions: int | None = None,
) -> ProcessingLoop:
    """The processing loop from the worker's settings; tests give their own clients (and the changes
    topic's partition count, which the worker asks the broker for)."""
    prefix = settings.kafka.topic_prefix
    if changes_partitions is None:
        changes_partitions = ensure_internal_topics(settings)
    processing = Processing(
        rules=rules,
        topics=OutputTopics(
            commands={system: prefix + commands_topic(system) for system in System},
            audit=prefix + AUDIT,
            dead_letters=prefix + DLQ_CDC,
            changes=changes_topic(settings.app_id),
            state_changelog=state_changelog_topic(settings.app_id),
        ),
        topic_prefix=prefix,
        default_order_target=settings.default_order_target,
        max_message_bytes=settings.max_message_bytes,
    )
    tables = settings.tables
    on_rocksdb = tables.store.startswith("rocksdb")
    memory = RocksDBMemory.of(tables.rocksdb_block_cache_mb, tables.rocksdb_memtables_mb) if on_rocksdb else None
    config = LoopConfig(
        input_topics=[prefix + spec.name for spec in cdc_topics()]
        + [prefix + results_topic(system) for system in System],
        changes_topic=processing.topics.changes,
        changelog_topic=processing.topics.state_changelog,
        changes_partitions=changes_partitions,
        batch_size=settings.batch_size,
        order_max_wait_s=settings.order_max_wait,
    )
    return ProcessingLoop(
        config=config,
        processing=processing,
        consumer=consumer or loop_consumer(settings),
        restore_consumer=restore or restore_consumer(settings.kafka, settings.app_id),
        checkpoint=Checkpoint(producer or loop_producer(settings), timeout=settings.delivery_timeout),
        group_offsets=group_offsets or GroupOffsets(AdminClient(confluent_config(settings.kafka)), settings.app_id),
        stores=Stores(tables.data_dir if on_rocksdb else None, memory),
        tenant_settings=tenant_settings,
        settings_current=settings_current,
        stop_worker=stop_worker,
    )


# --- the worker ---------------------------------------------------------------------------------


def _exit_now() -> None:
    logging.shutdown()
    os._exit(EXIT_BATCH_NOT_DURABLE)


class ProcessingService(Service):
    """Runs the processing loop in a thread of its own from the worker's start to its stop."""

    def __init__(self, settings: WorkerSettings, rules: RuleBook, tenants: TenantSettings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.rules = rules
        self.tenants = tenants
        self.processing_loop: ProcessingLoop | None = None
        self.thread: threading.Thread | None = None
        self.topics = TopicWait(confluent_config(settings.kafka), public_topics(settings), service="the worker")
        self._stopping = threading.Event()
        # What a loop that cannot make a batch durable does to the worker: stop it at once, before
        # anything else is committed (run again, it reads the batch again).
        self.stop_worker: Callable[[], None] = _exit_now

    def settings_current(self, as_of_ms: int) -> None:
        """From the loop's thread: wait until every tenant setting written before ``as_of_ms`` is read."""
        if as_of_ms <= self.tenants.current_as_of_ms:
            return
        waiting = asyncio.run_coroutine_threadsafe(self.tenants.wait_until_current(as_of_ms), self.event_loop)
        waiting.result()

    async def on_start(self) -> None:
        self.event_loop = asyncio.get_running_loop()
        self.settings.tables.data_dir.mkdir(parents=True, exist_ok=True)
        # The wait for the topics and the loop run in the loop's thread: the worker serves its probes
        # meanwhile (a liveness probe must not restart a worker that waits for `lienthong topics create`).
        self.thread = threading.Thread(target=self._run, name="processing-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        """The loop's thread: wait for the topics, then build and run the loop."""
        if not self.topics.wait(stopped=self._stopping.is_set):
            return
        try:
            loop = build_loop(
                self.settings,
                self.rules,
                tenant_settings=self.tenants,
                settings_current=self.settings_current,
                stop_worker=self.stop_worker,
            )
        # a loop that cannot be built (the broker refused the internal topics, the data dir is not
        # writable) stops the worker, said in one line, rather than leave it alive and idle
        except Exception as exc:  # noqa: BLE001
            log.critical("the worker cannot start its processing loop: %s", exc)
            self.stop_worker()
            return
        self.processing_loop = loop
        if self._stopping.is_set():  # stopped while it was built: on_stop may not have seen it
            loop.stop()
        loop.run()

    async def on_stop(self) -> None:
        self._stopping.set()
        if self.processing_loop is not None:
            self.processing_loop.stop()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, self.settings.delivery_timeout + 30)

    def member_id(self) -> str | None:
        """This worker's member id in its consumer group (None until it has joined): the lag of the
        group is exported by one member only (common.metrics.ConsumerGroupLagCollector)."""
        loop = self.processing_loop
        return loop.member_id if loop is not None else None

    def readiness(self) -> dict[str, str | None]:
        loop = self.processing_loop
        status = loop.status if loop is not None else None
        checks: dict[str, str | None] = {}
        waiting = self.topics.readiness()
        if waiting is not None:
            checks["topics"] = waiting
        if status is None or status.assignments == 0:
            checks["partitions"] = "waiting for the consumer group to assign this worker its partitions"
        else:
            checks["partitions"] = None
        if status is not None and status.restoring:
            checks["tables"] = f"restoring the state of partition(s) {sorted(status.restoring)} from the changelog"
        else:
            checks["tables"] = None
        if status is not None and status.stopped:
            checks["partitions"] = "the processing loop has stopped"
        return checks


class HealthServer(Service):
    """The worker's ``/metrics``, ``/healthz``, ``/readyz`` on ``LIENTHONG_WEB_PORT``, from its start
    (``/readyz`` answers 503 until its partitions are assigned and their state restored)."""

    def __init__(self, built: Lienthong, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.built = built
        self.runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        settings = self.built.settings
        broker = metrics.BrokerCheck(confluent_config(settings.kafka))
        lag = metrics.ConsumerGroupLagCollector(
            confluent_config(settings.kafka), [settings.app_id], member_id=self.built.processing.member_id
        )

        async def readiness() -> dict[str, str | None]:
            return {"broker": await broker.problem(), **self.built.processing.readiness()}

        self.runner = await metrics.serve_health(settings.web_host, settings.web_port, readiness, collectors=[lag])

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def create_app(settings: WorkerSettings | None = None) -> Lienthong:
    """The worker, not started: its faust app, the tenant-settings reader and the processing service."""
    settings = settings or WorkerSettings()
    rules = load_rules()  # a bad rule table stops here, naming the rule
    app = WorkerApp(
        settings.app_id,
        broker=";".join(f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")),
        store="memory://",
        # faust keeps nothing of ours on disk but makes its folder anyway: under our data dir, not the cwd
        datadir=str(settings.tables.data_dir / "faust"),
        web_enabled=False,  # HealthServer serves /metrics, /healthz and /readyz (LIENTHONG_WEB_PORT)
    )
    tenants = TenantSettings(
        aiokafka_config(settings.kafka),
        settings.kafka.topic_prefix + TENANT_CONFIG,
        rules=rules,
        ends=TopicEnds(AdminClient(confluent_config(settings.kafka))),
    )
    processing = ProcessingService(settings, rules, tenants)
    built = Lienthong(app=app, settings=settings, rules=rules, tenants=tenants, processing=processing)

    @app.task
    async def follow_tenant_settings() -> None:
        """Every worker reads all of ``config.tenants`` (compacted) and follows it."""
        await tenants.run()

    @app.timer(30.0)
    async def measure_stores() -> None:
        """``lienthong_table_entries``: keys of the partition stores this worker holds (RocksDB's estimate);
        ``lienthong_table_memory_bytes``: their shared cache and memtables."""
        loop = processing.processing_loop
        if loop is None:
            return
        stores = loop.stores
        metrics.TABLE_ENTRIES.labels("state").set(sum(store.count() for store in list(stores.open.values())))
        if stores.memory is not None:
            for kind, used in stores.memory.usage_bytes().items():
                metrics.TABLE_MEMORY.labels(kind).set(used)
        metrics.HELD_CHANGES.set(sum(len(owned.held) for owned in list(loop.owned.values())))

    app.add_dependency(processing)
    return built


def run_worker(settings: WorkerSettings | None = None) -> None:
    """Start the worker (blocks until SIGTERM/SIGINT)."""
    settings = settings or WorkerSettings()
    limit_malloc_arenas(settings.malloc_arenas)  # before the threads of RocksDB and librdkafka start
    built = create_app(settings)
    # faust makes its own folder (datadir) at start, but not the folders above it
    settings.tables.data_dir.mkdir(parents=True, exist_ok=True)
    tune_garbage_collection()  # once start-up has made what lives as long as the worker
    if settings.web_enabled:
        built.app.add_dependency(HealthServer(built))
    # logging is set up by the command line (common/logs.py): faust keeps it instead of installing its own
    worker = faust.Worker(built.app, loglevel=settings.log.log_level, quiet=True, override_logging=False)

    @built.app.task
    async def dump_tasks_on_sigusr2() -> None:
        """`kill -USR2 <pid>` logs every asyncio task's stack and the loop thread's: where a stuck worker waits."""

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(limit=8, file=out)
            log.warning("asyncio tasks:\n%s", out.getvalue())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)

    worker.execute_from_commandline()
