"""Prometheus metrics and health probes of every lienthong service (docs/operations.md lists them all).

One module, importable by every side of the project (processor, connectors, capture, sandboxes):
it imports prometheus-client, confluent-kafka's admin client and aiohttp, never faust or the
processor. What is here:

* the metrics themselves, in the default registry of the process (names agreed with the
  dashboard and deploy/; a service only moves the ones it owns);
* ``ConsumerGroupLagCollector``: ``kafka_consumergroup_lag`` / ``kafka_consumergroup_lag_sum`` as
  kafka_exporter names them, from committed vs end offsets read with the admin client at scrape
  time, with a short timeout and a cache so a slow broker never hangs a scrape;
* ``BrokerCheck``: whether the broker answers, cached, for readiness;
* ``add_health_routes``: ``GET /metrics``, ``/healthz``, ``/readyz`` on an aiohttp application,
  given a readiness callback; ``serve_health`` runs such an application on its own port;
* ``add_health_routes`` guards the application it is given (``common.listeners.guard_requests``), as
  ``common.listeners`` guards every application it serves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported for type checkers
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.listeners import guard_requests, serve_app
from common.names import System

log = logging.getLogger(__name__)

# --- the metrics (names and labels: docs/operations.md) -------------------------------------------

EVENTS_PROCESSED = Counter(
    "lienthong_events_processed_total",
    "Events the worker's agents processed, by source system, entity, matched rule and outcome "
    "(command, skipped, duplicate, forwarded, dead_letter, result).",
    ["system", "entity", "rule", "outcome"],
)
COMMANDS_EMITTED = Counter(
    "lienthong_commands_emitted_total", "Commands the worker emitted, by target system and rule.", ["target", "rule"]
)
CONNECTOR_RESULTS = Counter(
    "lienthong_connector_results_total",
    "Commands a connector finished, by target and status (applied, duplicate, rejected, failed; pending: an "
    "accounting proposal queued, awaiting its callback).",
    ["target", "status"],
)
API_CALLS = Counter(
    "lienthong_api_calls_total",
    "HTTP calls to a system's API, by system, endpoint (path) and status (the HTTP status, or error / timeout).",
    ["system", "endpoint", "status"],
)
API_CALL_DURATION = Histogram(
    "lienthong_api_call_duration_seconds",
    "Duration of HTTP calls to a system's API.",
    ["system", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RETRIES = Counter(
    "lienthong_retries_total",
    "Passing faults a connector retried, by system and the endpoint that failed.",
    [
        "system",
        "endpoint",
    ],
)
DEAD_LETTERS = Counter(
    "lienthong_dead_letters_total",
    "Messages written to a dead-letter topic (dlq.cdc, dlq.commands), by reason (error.kind).",
    ["topic", "reason"],
)
SYNC_LATENCY = Histogram(
    "lienthong_sync_latency_seconds",
    "From the source change (its ts_ms) to the command applied in the target system.",
    ["target"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
REBALANCES = Counter("lienthong_rebalances_total", "Consumer-group rebalances a service went through.", ["service"])
TABLE_ENTRIES = Gauge(
    "lienthong_table_entries",
    "Keys of a worker's partition stores (RocksDB's estimate), every table together.",
    ["table"],
)
TABLE_MEMORY = Gauge(
    "lienthong_table_memory_bytes",
    "Memory of a worker's RocksDB tables: the shared block cache and memtables, against their budget.",
    ["kind"],
)
BATCH_SIZE = Histogram(
    "lienthong_batch_size",
    "Change events and results a batch of the worker decided (routing and progress not counted).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 4096),
)
HELD_CHANGES = Gauge(
    "lienthong_held_changes",
    "Changes a worker holds until every input has passed the moment they reached Kafka (their decision "
    "rests on an absent record): docs/state.md.",
)
TOKEN_RENEWALS = Counter(
    "lienthong_token_renewals_total",
    "API tokens fetched (log-in / connect), by system and outcome (ok, failed).",
    [
        "system",
        "outcome",
    ],
)
CAPTURE_EVENTS = Counter(
    "lienthong_capture_events_total",
    "Change events a capture service (or the webhook receiver) produced to cdc.*, by system, entity and op.",
    ["system", "entity", "op"],
)
CAPTURE_LAST_POLL = Gauge(
    "lienthong_capture_last_poll_timestamp_seconds",
    "When a capture service last finished a poll of an entity (unix seconds).",
    ["system", "entity"],
)
SANDBOX_REQUESTS = Counter(
    "lienthong_sandbox_requests_total",
    "Requests a sandbox served, by system, endpoint (route) and HTTP status.",
    ["system", "endpoint", "status"],
)
WEBHOOKS = Counter(
    "lienthong_webhooks_total", "Webhooks received, by system and HTTP status answered.", ["system", "status"]
)

# --- API calls ------------------------------------------------------------------------------------

# The endpoint the current task called last: a connector's retry loop counts its retry against it.
_LAST_ENDPOINT: ContextVar[str] = ContextVar("lienthong_last_endpoint", default="")


@contextmanager
def api_call(system: System, endpoint: str) -> Iterator[Callable[[int | str], None]]:
    """Time one API call and count it: ``with api_call(System.CRM, "/Account") as done: ...; done(200)``.

    An exception before ``done`` is counted as ``timeout`` (a ``TimeoutError``) or ``error``.
    """
    _LAST_ENDPOINT.set(endpoint)
    outcome: list[str] = []
    started = time.perf_counter()
    try:
        yield lambda status: outcome.append(str(status))
    except TimeoutError:
        outcome.append("timeout")
        raise
    except BaseException:
        outcome.append("error")
        raise
    finally:
        API_CALL_DURATION.labels(system, endpoint).observe(time.perf_counter() - started)
        API_CALLS.labels(system, endpoint, outcome[0] if outcome else "error").inc()


def last_endpoint() -> str:
    """The endpoint this task called last (``api_call``), or ``unknown``."""
    return _LAST_ENDPOINT.get() or "unknown"


def observe_sync_latency(target: System, source_ts_ms: int, now: float | None = None) -> None:
    seconds = (time.time() if now is None else now) - source_ts_ms / 1000
    SYNC_LATENCY.labels(target).observe(max(0.0, seconds))


# --- consumer-group lag -------------------------------------------------------------------------


class ConsumerGroupLagCollector(Collector):
    """``kafka_consumergroup_lag{consumergroup,topic,partition}`` and ``kafka_consumergroup_lag_sum
    {consumergroup,topic}``, as kafka_exporter exports them: end offset minus committed offset, for
    every partition a group has committed.

    Read at scrape time with the admin client, at most once per ``cache_seconds``; a scrape waits at
    most ``timeout`` seconds for a refresh and otherwise answers the last values (a refresh goes on
    in a background thread, one at a time). A broker that does not answer leaves the last values.

    **Once per group.** Every replica of a service (workers, connectors) serves ``/metrics``; if each
    exported its group's lag, ``sum by (consumergroup)`` would count it once per replica. Given
    ``member_id`` (this process's consumer's member id in the group, ``Consumer.memberid()``), a
    collector exports a group's lag only while it is the group's elected exporter: the member whose
    id sorts first among the group's members (``describe_consumer_groups``). A group with no member
    then has no exporter (nothing runs it: ``lienthong lag`` says so). Without ``member_id`` (one
    reader, such as the dashboard) it exports every group it is given.
    """

    def __init__(
        self,
        kafka: str | Mapping[str, Any],
        groups: Iterable[str] | Callable[[], Iterable[str]],
        *,
        timeout: float = 2.0,
        cache_seconds: float = 5.0,
        admin: AdminClient | None = None,
        member_id: Callable[[], str | None] | None = None,
    ) -> None:
        self.kafka = _client_config(kafka)
        self._member_id = member_id
        self._groups = groups if callable(groups) else (lambda fixed=list(groups): fixed)
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._admin = admin
        self._lock = threading.Lock()
        self._lags: dict[tuple[str, str, int], int] = {}
        self._taken_at = float("-inf")
        self._refreshing: threading.Thread | None = None
        self.last_error: str | None = None

    def describe(self) -> list[Metric]:
        return []  # unchecked: its samples come and go with the groups' partitions

    def collect(self) -> Iterable[Metric]:
        lags = self.lags()
        per_partition = GaugeMetricFamily(
            "kafka_consumergroup_lag",
            "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
            labels=["consumergroup", "topic", "partition"],
        )
        total = GaugeMetricFamily(
            "kafka_consumergroup_lag_sum",
            "Current Approximate Lag of a ConsumerGroup at Topic for all partitions",
            labels=["consumergroup", "topic"],
        )
        sums: dict[tuple[str, str], int] = {}
        for (group, topic, partition), lag in sorted(lags.items()):
            per_partition.add_metric([group, topic, str(partition)], lag)
            sums[(group, topic)] = sums.get((group, topic), 0) + lag
        for (group, topic), lag in sorted(sums.items()):
            total.add_metric([group, topic], lag)
        return [per_partition, total]

    def lags(self) -> dict[tuple[str, str, int], int]:
        """(group, topic, partition) -> lag; fresh within ``cache_seconds``, else refreshed (waiting
        at most ``timeout``)."""
        with self._lock:
            if time.monotonic() - self._taken_at < self.cache_seconds:
                return dict(self._lags)
            if self._refreshing is None or not self._refreshing.is_alive():
                self._refreshing = threading.Thread(target=self._refresh, name="lag-collector", daemon=True)
                self._refreshing.start()
            thread = self._refreshing
        thread.join(self.timeout)
        with self._lock:
            return dict(self._lags)

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.kafka)
        return self._admin

    def _refresh(self) -> None:
        try:
            lags = self.read_lags()
        except (KafkaException, RuntimeError, TimeoutError, ValueError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("consumer-group lag not read (%s); /metrics shows the last values", self.last_error)
            return
        with self._lock:
            self._lags, self._taken_at, self.last_error = lags, time.monotonic(), None

    def exported_groups(self) -> list[str]:
        """The groups this collector exports: all it is given, or (with ``member_id``) those it is the
        elected exporter of."""
        groups = list(self._groups())
        if self._member_id is None or not groups:
            return groups
        own = self._member_id()
        if not own:
            return []  # not (yet) a member: the members export
        futures = self._admin_client().describe_consumer_groups(groups, request_timeout=self.timeout)
        elected = []
        for group in groups:
            members = sorted(m.member_id for m in futures[group].result(timeout=self.timeout + 1).members or [])
            if members and members[0] == own:
                elected.append(group)
        return elected

    def read_lags(self) -> dict[tuple[str, str, int], int]:
        """Read committed and end offsets now (blocking, bounded by ``timeout`` per request)."""
        admin = self._admin_client()
        committed: dict[tuple[str, str, int], int] = {}
        for group in self.exported_groups():
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=self.timeout
            )
            answer = futures[group].result(timeout=self.timeout + 1)
            for tp in answer.topic_partitions or []:
                if tp.offset >= 0 and tp.error is None:
                    committed[(group, tp.topic, tp.partition)] = tp.offset
        if not committed:
            return {}
        wanted = {TopicPartition(topic, partition): OffsetSpec.latest() for _, topic, partition in committed}
        ends: dict[tuple[str, int], int] = {}
        for tp, future in admin.list_offsets(wanted, request_timeout=self.timeout).items():
            ends[(tp.topic, tp.partition)] = future.result(timeout=self.timeout + 1).offset
        return {
            key: max(0, ends[(key[1], key[2])] - offset)
            for key, offset in committed.items()
            if (key[1], key[2]) in ends
        }


# --- readiness ---------------------------------------------------------------------------------


def _client_config(kafka: str | Mapping[str, Any]) -> dict[str, Any]:
    """A client config (common.kafka_config.confluent_config), or bootstrap servers alone (plaintext)."""
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


class BrokerCheck:
    """Whether the Kafka broker answers a metadata request, at most once per ``cache_seconds``."""

    def __init__(self, kafka: str | Mapping[str, Any], *, timeout: float = 2.0, cache_seconds: float = 5.0) -> None:
        self.kafka = _client_config(kafka)
        self.bootstrap_servers = self.kafka["bootstrap.servers"]
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._admin: AdminClient | None = None
        self._checked_at = float("-inf")
        self._problem: str | None = None

    def _check(self) -> str | None:
        if self._admin is None:
            self._admin = AdminClient(self.kafka)
        try:
            metadata = self._admin.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            return (
                f"no Kafka broker answers at {self.bootstrap_servers} ({exc.args[0]}); "
                "check LIENTHONG_BOOTSTRAP_SERVERS and that the broker runs"
            )
        if not metadata.brokers:
            return f"the cluster at {self.bootstrap_servers} names no broker"
        return None

    async def problem(self) -> str | None:
        """None when the broker answers; else what is wrong and what to check."""
        if time.monotonic() - self._checked_at >= self.cache_seconds:
            self._problem = await asyncio.to_thread(self._check)
            self._checked_at = time.monotonic()
        return self._problem


# A readiness callback: check name -> None when that part is ready, else what is not.
Readiness = Callable[[], Awaitable[dict[str, str | None]]]


async def always_ready() -> dict[str, str | None]:
    """For a service that is ready once it serves (a sandbox, the webhook receiver)."""
    return {"serving": None}


class _Registries:
    """The process's default registry plus a service's own collectors (its consumer groups' lag)."""

    def __init__(self, extra: Iterable[Collector]) -> None:
        self.extra = list(extra)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        for collector in self.extra:
            yield from collector.collect()


METRICS_PATH, HEALTH_PATH, READY_PATH = "/metrics", "/healthz", "/readyz"


def add_health_routes(
    app: web.Application,
    ready: Readiness = always_ready,
    *,
    collectors: Iterable[Collector] = (),
    ready_timeout: float = 5.0,
) -> web.Application:
    """Add ``GET /metrics`` (Prometheus text format: this process's metrics and ``collectors``),
    ``GET /healthz`` (200 while the process serves) and ``GET /readyz`` (200 when every check of
    ``ready`` passes; else 503 with a JSON body naming what is not ready). Returns ``app``, guarded
    (``guard_requests``): every listener of the project serves these routes, so every one is guarded."""
    guard_requests(app)
    registry = _Registries(collectors)

    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def readyz(request: web.Request) -> web.Response:
        try:
            checks = await asyncio.wait_for(ready(), timeout=ready_timeout)
        except TimeoutError:
            checks = {"readiness": f"the readiness checks took longer than {ready_timeout:g}s"}
        except Exception as exc:  # a probe must answer: the failure is the answer
            log.exception("readiness check failed")
            checks = {"readiness": f"the readiness check failed: {type(exc).__name__}: {exc}"}
        problems = {name: problem for name, problem in checks.items() if problem is not None}
        body = {
            "ready": not problems,
            "checks": {name: problem or "ok" for name, problem in checks.items()},
            "not_ready": problems,
        }
        return web.json_response(body, status=503 if problems else 200)

    app.router.add_get(METRICS_PATH, metrics)
    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(READY_PATH, readyz)
    return app


async def serve_health(
    host: str, port: int, ready: Readiness = always_ready, *, collectors: Iterable[Collector] = ()
) -> web.AppRunner:
    """Serve only the three routes on host:port (a service without a web server of its own).
    The caller cleans up the returned runner. Port 0 takes a free port (``bound_port``)."""
    runner = await serve_app(add_health_routes(web.Application(), ready, collectors=collectors), host, port)
    log.info("metrics and probes on http://%s:%s%s", host, bound_port(runner), METRICS_PATH)
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port a started runner's site listens on (the OS-chosen one when port 0 was asked for)."""
    addresses = runner.addresses  # one getsockname() per listening socket: (host, port, ...) for TCP
    for address in addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError(f"the web runner listens on no TCP socket ({addresses!r}): was its site started?")
