"""The faust application: ``create_app(settings)`` builds it; nothing happens at import time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from streams import kafka_driver
from streams.agents.aggregates import register_aggregates_agent
from streams.agents.cdc import Outputs, register_cdc_agent
from streams.agents.results import register_results_agent
from streams.core.contract import System
from streams.core.rules import RuleBook, load_rules
from streams.settings import Settings
from streams.tables import Tables, TableState, define_tables
from streams.tables.tenants import TenantSettings
from streams.topics import AUDIT, DLQ_CDC, TENANT_CONFIG, cdc_topics, commands_topic, results_topic

log = logging.getLogger(__name__)


@dataclass
class Lienthong:
    """The app and what it is made of, for the CLI and for tests."""

    app: faust.App
    settings: Settings
    rules: RuleBook
    tables: Tables
    state: TableState
    tenants: TenantSettings
    topics: dict[str, Any]
    agents: dict[str, Any]


def create_app(settings: Settings | None = None) -> Lienthong:
    settings = settings or Settings()
    rules = load_rules()  # a bad rule table stops here, naming the rule
    prefix = settings.topic_prefix
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        # exactly_once is unreliable in faust-streaming; at-least-once + deterministic command ids.
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout,
        broker_commit_interval=settings.commit_interval,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        # Declared topics are created by `lienthong topics create`; faust creates only its own
        # internal ones (changelogs, leader topic).
        topic_allow_declare=True,
    )

    kafka_driver.install(app)

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

    topics: dict[str, Any] = {
        "cdc": raw_topic(*[spec.name for spec in cdc_topics()]),
        "results": raw_topic(*[results_topic(s.value) for s in System]),
        DLQ_CDC: raw_topic(DLQ_CDC),
        AUDIT: raw_topic(AUDIT),
    }
    commands = {system: raw_topic(commands_topic(system.value)) for system in System}
    tables = define_tables(app, settings)
    tenants = TenantSettings(settings.bootstrap_servers, prefix + TENANT_CONFIG)
    state = TableState(tables, tenants, settings.default_order_target)

    # Acct documents re-keyed by their order: the aggregates agent and the ``orders`` table read
    # one topic, so each order's aggregate lives on the partition its documents arrive on.
    topics["aggregate_inputs"] = app.topic(
        f"{settings.app_id}-aggregate-inputs",
        internal=True,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=settings.topic_replication_factor,
    )
    outputs = Outputs(commands=commands, audit=topics[AUDIT], dead_letters=topics[DLQ_CDC])

    agents = {
        "cdc": register_cdc_agent(
            app,
            source=topics["cdc"],
            outputs=outputs,
            aggregate_inputs=topics["aggregate_inputs"],
            tables=tables,
            state=state,
            tenants=tenants,
            rules=rules,
            topic_prefix=prefix,
        ),
        "aggregates": register_aggregates_agent(
            app,
            source=topics["aggregate_inputs"],
            outputs=outputs,
            orders=tables.orders,
            tables=tables,
            state=state,
            tenants=tenants,
            rules=rules,
        ),
        "results": register_results_agent(
            app,
            source=topics["results"],
            dead_letters=topics[DLQ_CDC],
            tables=tables,
        ),
    }

    @app.task
    async def follow_tenant_settings() -> None:
        """Every worker reads all of ``config.tenants`` (compacted) and follows it."""
        await tenants.run()

    return Lienthong(
        app=app,
        settings=settings,
        rules=rules,
        tables=tables,
        state=state,
        tenants=tenants,
        topics={**topics, **{commands_topic(s.value): t for s, t in commands.items()}},
        agents=agents,
    )


def run_worker(settings: Settings | None = None) -> None:
    """Start a faust worker for the app (blocks until SIGTERM/SIGINT)."""
    settings = settings or Settings()
    built = create_app(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(built.app, loglevel=settings.log_level, quiet=True)

    @built.app.task
    async def dump_tasks_on_sigusr2() -> None:
        """`kill -USR2 <pid>` logs every asyncio task's stack: where a stuck worker waits."""
        import asyncio
        import io
        import signal

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(limit=8, file=out)
            log.warning("asyncio tasks:\n%s", out.getvalue())
            try:  # the consumer's own view of its partitions (it runs in faust's consumer thread)
                kafka = built.app.consumer._thread._ensure_consumer()
                assignment = kafka._subscription.subscription.assignment
                for tp in sorted(assignment.tps):
                    state = assignment.state_value(tp)
                    log.warning(
                        "partition %s:%s paused=%s valid=%s position=%s",
                        tp.topic,
                        tp.partition,
                        state.paused,
                        state.has_valid_position,
                        state._position if state.has_valid_position else None,
                    )
            except Exception:
                log.exception("could not read the consumer's partition states")

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)

    worker.execute_from_commandline()
