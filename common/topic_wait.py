"""A service waits, at start, until every topic it reads or writes exists; only then does it consume.

Why: a consumer subscribed to topics that do not all exist yet sees the late ones only at its next
metadata refresh: aiokafka's (``metadata_max_age_ms``, 5 minutes) for any topic; librdkafka's
(``topic.metadata.refresh.interval.ms``, 5 minutes) once one of its topics exists (measured with
librdkafka 2.16: a consumer subscribed to three missing topics read the first 1 s after its
creation, and the two created 3 s later not within 90 s; a lone topic it picks up at once). A
service started a moment before ``lienthong topics create`` sat idle for minutes; and a producer to
a missing topic fails its messages after ``topic.metadata.propagation.max.ms``. So a service asks
the broker for its topics every ``CHECK_EVERY_S`` (a fresh metadata request each time), says every
``SAY_EVERY_S`` which are missing and what to do, and subscribes once they all exist: the
consumer's first metadata request finds them all.

Public topics are created by ``lienthong topics create`` only (with the contract's settings: a
compacted ``config.tenants``, the deployment's partitions); a service never creates them. The
worker creates its own internal topics (``streams.app.ensure_internal_topics``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

# How often a waiting service asks the broker again: the delay between a topic's creation and its
# consumption, at most (plus one metadata request).
CHECK_EVERY_S = 0.5
# How often the waiting line is logged again.
SAY_EVERY_S = 15.0
# One metadata request's time limit.
REQUEST_TIMEOUT_S = 10.0


class TopicWait:
    """Waits until every topic of ``names`` exists with a leader for each partition.

    ``readiness()`` says what the last check found missing, for a service's ``/readyz``.
    """

    def __init__(
        self,
        kafka: Mapping[str, Any],
        names: Iterable[str],
        *,
        service: str,
        check_every: float = CHECK_EVERY_S,
        say_every: float = SAY_EVERY_S,
    ) -> None:
        self.kafka = dict(kafka)  # a librdkafka config: common.kafka_config.confluent_config
        self.names = sorted(set(names))
        self.service = service
        self.check_every = check_every
        self.say_every = say_every
        self.missing: list[str] = []  # what the last check found missing (none before the first)
        self.problem: str | None = None  # the broker did not answer the last check
        self._admin: AdminClient | None = None
        self._said_at: float | None = None

    def readiness(self) -> str | None:
        """What ``/readyz`` says while the service waits; None once every topic exists."""
        if not self.missing:
            return None
        return f"waiting for topic(s) {', '.join(self.missing)}: run `lienthong topics create`"

    def check(self) -> bool:
        """Ask the broker once (blocking); whether every topic exists. Logs the waiting line when due."""
        if self._admin is None:
            self._admin = AdminClient(self.kafka)
        try:
            # every topic, not the named ones: a request naming a missing topic may create it with
            # the broker's defaults where the broker allows that
            topics = self._admin.list_topics(timeout=REQUEST_TIMEOUT_S).topics
        except KafkaException as exc:
            self.problem = f"the broker did not list its topics ({exc.args[0]})"
        else:
            return self.found(topics)
        return self._said()

    def found(self, topics: Mapping[str, Any]) -> bool:
        """Whether every topic is in ``topics`` (a metadata answer's ``.topics``, for a service that
        asks the broker itself); logs the waiting line when due."""
        self.problem = None
        self.missing = [name for name in self.names if not _usable(topics.get(name))]
        return self._said()

    def _said(self) -> bool:
        if not self.missing and self.problem is None:
            if self._said_at is not None:
                self._said_at = None
                log.info("%s: every topic it needs exists now; starting", self.service)
            return True
        now = time.monotonic()
        if self._said_at is None or now - self._said_at >= self.say_every:
            self._said_at = now
            log.warning("%s", self._line())
        return False

    def _line(self) -> str:
        if self.problem is not None:
            return f"{self.service} waits for Kafka: {self.problem}; asking again every {self.check_every:g}s"
        return (
            f"{self.service} waits for topic(s) that do not exist: {', '.join(self.missing)}. "
            "Run `lienthong topics create` with the same LIENTHONG_BOOTSTRAP_SERVERS and LIENTHONG_TOPIC_PREFIX; "
            f"it starts by itself once they exist (checked every {self.check_every:g}s)"
        )

    def wait(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Block until every topic exists (True) or ``stopped()`` (False)."""
        while not self.check():
            deadline = time.monotonic() + self.check_every
            while time.monotonic() < deadline:
                if stopped():
                    return False
                time.sleep(min(0.1, self.check_every))
        return True

    async def wait_async(self, stop: asyncio.Event | None = None) -> bool:
        """``wait`` for asyncio: True once every topic exists, False when ``stop`` is set first."""
        stop = stop or asyncio.Event()
        while not await asyncio.to_thread(self.check):
            try:
                async with asyncio.timeout(self.check_every):
                    await stop.wait()
            except TimeoutError:
                continue
            return False
        return True


def _usable(topic: Any) -> bool:
    """Listed without an error, with a leader for every partition (a topic just created may be listed
    before its partitions have leaders, and a consumer assigned then waits for a refresh)."""
    if topic is None or topic.error is not None or not topic.partitions:
        return False
    return all(partition.leader >= 0 for partition in topic.partitions.values())


# What a partition answers for a moment, then passes: no leader yet (a topic just created, or one
# whose leader moves; seen in CI: `lienthong history` asked for the offsets of topics created a moment
# before and got NOT_LEADER_FOR_PARTITION), or no broker reachable yet (one starting or restarting).
_ASK_AGAIN = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
    }
)


def watermarks(consumer: Consumer, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """A partition's low and high offsets, asked again (within ``timeout``) while it has no leader or
    no broker answers, and on any error librdkafka says may pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=max(0.1, deadline - time.monotonic()))
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            passes = isinstance(error, KafkaError) and (error.code() in _ASK_AGAIN or error.retriable())
            if not passes or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


def end_offsets(consumer: Consumer, topics: Iterable[str], timeout: float) -> dict[tuple[str, int], int]:
    """Where each partition of ``topics`` ends now, by (topic, partition); a topic the broker does not
    list has no partitions here."""
    listed = consumer.list_topics(timeout=timeout).topics
    return {
        (topic, partition): watermarks(consumer, TopicPartition(topic, partition), timeout)[1]
        for topic in topics
        if topic in listed
        for partition in listed[topic].partitions
    }
