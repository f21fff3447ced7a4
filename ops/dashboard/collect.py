"""What the operator's page shows, gathered in two background threads.

* the **tail**: one confluent-kafka consumer (no group, from the beginning) over ``audit.sync``,
  ``results.*`` and ``dlq.*`` feeding ``SyncHealth``;
* the **sampler**: every ``interval`` seconds, the consumer groups' lag (``kafka_consumergroup_lag``,
  read exactly as ``common.metrics.ConsumerGroupLagCollector`` reads it for /metrics), the end
  offsets of every contract topic (throughput) and the ``/metrics`` text of the services given
  (``lienthong_*`` counters and histograms), kept as a history for the charts.

It reads the broker and HTTP; it starts no faust app and imports no agent.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.kafka_config import confluent_config
from common.metrics import ConsumerGroupLagCollector
from common.names import AUDIT, DLQ_CDC, DLQ_COMMANDS, System, results_topic
from common.settings import KafkaSettings
from common.topic_wait import TopicWait, watermarks
from ops.dashboard.health import SyncHealth
from streams.topics import contract_topics

log = logging.getLogger(__name__)

# (metric name, labels as a sorted tuple of pairs) -> value, summed over the services scraped
Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Sample:
    """One look at the system."""

    at: float  # unix seconds
    lag: dict[tuple[str, str], int]  # (group, topic) -> messages not yet committed
    ends: dict[str, int]  # topic (without prefix) -> messages written so far (end offsets summed)
    scraped: Scraped
    scrape_errors: dict[str, str] = field(default_factory=dict)  # url -> what went wrong
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # target -> decided → applied percentiles

    def lag_by_group(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (group, _), lag in self.lag.items():
            out[group] = out.get(group, 0) + lag
        return dict(sorted(out.items()))


def scrape(url: str, timeout: float = 3.0) -> Scraped:
    """The samples of one ``/metrics`` page (Prometheus text format)."""
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return parse(answer.read().decode())


def parse(text: str) -> Scraped:
    """The samples of a Prometheus text exposition, by name and labels."""
    out: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            out[key] = out.get(key, 0.0) + sample.value
    return out


def total(scraped: Scraped, name: str, by: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    """Sum of metric ``name`` grouped by the labels ``by`` (``()``: one grand total)."""
    out: dict[tuple[str, ...], float] = {}
    for (sample_name, labels), value in scraped.items():
        if sample_name != name:
            continue
        named = dict(labels)
        group = tuple(named.get(label, "") for label in by)
        out[group] = out.get(group, 0.0) + value
    return dict(sorted(out.items()))


def histogram_buckets(scraped: Scraped, name: str, by: str) -> dict[str, list[tuple[float, float]]]:
    """``<name>_bucket`` per value of label ``by``: [(upper bound, cumulative count)], summed over the rest."""
    out: dict[str, dict[float, float]] = {}
    for (sample_name, labels), value in scraped.items():
        if sample_name != f"{name}_bucket":
            continue
        named = dict(labels)
        bound = float(named.get("le", "+Inf"))
        row = out.setdefault(named.get(by, ""), {})
        row[bound] = row.get(bound, 0.0) + value
    return {key: sorted(row.items()) for key, row in sorted(out.items())}


class DashboardData:
    """The tail and the sampler; ``health`` and ``history`` are read under ``lock``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        scrape_urls: list[str] | None = None,
        *,
        interval: float = 5.0,
        history: int = 720,
        own_metrics: bool = False,
    ) -> None:
        """``own_metrics``: also count this process's metrics (services running in it, as in the demo)."""
        self.kafka = kafka
        self.own_metrics = own_metrics
        self.prefix = kafka.topic_prefix
        self.scrape_urls = list(scrape_urls or [])
        self.interval = interval
        self.lock = threading.Lock()
        self.health = SyncHealth()
        self.history: deque[Sample] = deque(maxlen=history)
        self.tail_error: str | None = None
        self.sample_error: str | None = None  # why the last look failed (None: it did not)
        self.tail_position: dict[str, int] = {}  # topic -> messages read
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._admin = AdminClient(confluent_config(kafka))
        self.lag_collector = ConsumerGroupLagCollector(
            confluent_config(kafka), self.groups, admin=self._admin, cache_seconds=min(5.0, interval)
        )

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        for name, target in (("dashboard-tail", self._tail), ("dashboard-sampler", self._sampler)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    # --- the consumer groups -----------------------------------------------------------------------

    def groups(self) -> list[str]:
        """Every consumer group of this deployment (all groups when there is no topic prefix)."""
        listed = self._admin.list_consumer_groups(request_timeout=5).result(timeout=10)
        return sorted(g.group_id for g in listed.valid if g.group_id.startswith(self.prefix))

    # --- the sampler ---------------------------------------------------------------------------------

    def sample_now(self) -> Sample:
        ours = {self.prefix + spec.name: spec.name for spec in contract_topics()}
        try:
            lags = self.lag_collector.read_lags()
        except (KafkaException, RuntimeError, TimeoutError, ValueError) as exc:
            log.warning("lag not read: %s", exc)
            lags = {}
        lag: dict[tuple[str, str], int] = {}
        for (group, topic, _), value in lags.items():
            if topic in ours:
                lag[(group, ours[topic])] = lag.get((group, ours[topic]), 0) + value
        ends: dict[str, int] = {}
        probe = Consumer(
            confluent_config(self.kafka, {"group.id": f"dashboard-probe-{uuid.uuid4()}", "enable.auto.commit": False})
        )
        try:
            metadata = probe.list_topics(timeout=5).topics
            for name, short in ours.items():
                if name in metadata:
                    for partition in metadata[name].partitions:
                        _, high = watermarks(probe, TopicPartition(name, partition), 5)
                        ends[short] = ends.get(short, 0) + high
        finally:
            probe.close()
        scraped: Scraped = {}
        errors: dict[str, str] = {}
        for url in self.scrape_urls:
            try:
                for key, number in scrape(url).items():
                    scraped[key] = scraped.get(key, 0.0) + number
            except (OSError, urllib.error.URLError, ValueError) as exc:
                errors[url] = f"{type(exc).__name__}: {exc}"
        if self.own_metrics:
            for key, number in parse(generate_latest(REGISTRY).decode()).items():
                scraped[key] = scraped.get(key, 0.0) + number
        return Sample(time.time(), dict(sorted(lag.items())), ends, scraped, errors)

    def _sampler(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self.sample_now()
            except KafkaException as exc:
                log.warning("the broker did not answer the dashboard's sample: %s", exc)
                self.sample_error = f"the broker at {self.kafka.bootstrap_servers} did not answer the last look: {exc}"
            else:
                with self.lock:
                    sample.latency = self.health.latency.percentiles()
                    self.history.append(sample)
                    self.sample_error = None
            self._stop.wait(self.interval)

    # --- the tail ------------------------------------------------------------------------------------

    def _tail(self) -> None:
        topics = [AUDIT, *(results_topic(system) for system in System), DLQ_CDC, DLQ_COMMANDS]
        consumer = Consumer(
            confluent_config(
                self.kafka,
                {
                    "group.id": f"dashboard-tail-{uuid.uuid4()}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                },
            )
        )
        waiting = TopicWait({}, [self.prefix + t for t in topics], service="the dashboard")
        try:
            assigned: set[str] = set()
            while not self._stop.is_set():
                if len(assigned) < len(topics):
                    # Topics created later are assigned as they appear (asked every turn, never left to
                    # a metadata refresh); only the new ones, so that nothing is read twice.
                    metadata = consumer.list_topics(timeout=5).topics
                    waiting.found(metadata)
                    new = [t for t in topics if t not in assigned and self.prefix + t not in waiting.missing]
                    if new:
                        assigned.update(new)
                        consumer.incremental_assign(
                            [
                                TopicPartition(self.prefix + t, p, 0)
                                for t in sorted(new)
                                for p in metadata[self.prefix + t].partitions
                            ]
                        )
                messages = consumer.consume(500, timeout=0.5)
                with self.lock:
                    for message in messages:
                        if message.error():
                            continue
                        self._take(message.topic() or "", message.key(), message.value(), message.headers() or [])
        except KafkaException as exc:
            self.tail_error = f"reading the topics stopped: {exc}"
            log.error("%s", self.tail_error)
        finally:
            consumer.close()

    def _take(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        short = topic.removeprefix(self.prefix)
        self.tail_position[short] = self.tail_position.get(short, 0) + 1
        if short in (DLQ_CDC, DLQ_COMMANDS):
            self.health.dead_letter(short, key, list(headers))
            return
        try:
            decoded = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            return  # not ours to judge: the processor dead-letters unreadable results
        if not isinstance(decoded, dict):
            return
        if short == AUDIT:
            self.health.audit(decoded)
        else:
            self.health.result(decoded)
