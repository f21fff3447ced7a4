"""How a batch becomes durable: one Kafka transaction, then the stores.

Everything a batch produced — routed changes, commands, audit records, dead letters, the state
changelog — and the offsets of the inputs it consumed are written in **one
transaction** (Kafka's exactly-once v2, KIP-447: a transactional producer that sends the consumer's
offsets into the transaction, fenced by the consumer group's generation). Either all of it becomes
visible to ``read_committed`` readers (the connectors, the owners of the changes topic, the
recovery of a store, the dashboard) together with the offsets, or none of it does and the batch is
read again. Only then are the batch's state changes written to the partition stores, with the
changelog offset they bring each store to (``streams.tables.store``): a worker that dies between
the commit and the stores finds them behind their changelog and reads the rest back when it
restarts.

A batch that cannot be made durable (the broker refuses it, a newer worker fenced this one, the
broker stays away past ``LIENTHONG_DELIVERY_TIMEOUT``) raises ``BatchNotDurable``: the transaction
is aborted when it can be, and the worker stops (``streams.loop``); run again, it reads the batch
again from the last committed offsets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaException, TopicPartition

from streams.agents.batch import Batch
from streams.outputs import OutputMessage

log = logging.getLogger(__name__)


class TransactionalProducer(Protocol):
    """The part of a transactional ``confluent_kafka.Producer`` a checkpoint uses (a fake in tests)."""

    def init_transactions(self, timeout: float = ...) -> None: ...

    def begin_transaction(self) -> None: ...

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None: ...

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], group_metadata: Any, timeout: float
    ) -> None: ...

    def commit_transaction(self, timeout: float = ...) -> None: ...

    def abort_transaction(self, timeout: float = ...) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...


class BatchNotDurable(RuntimeError):
    """The batch's transaction did not commit; nothing of it is visible.

    ``retriable``: the transaction was aborted and the producer can begin another (the broker was
    away longer than a message may wait, a rebalance fenced the offsets): the worker reads the batch
    again at once. Otherwise (a newer worker with this transactional id, a fatal error) it must stop."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class Checkpoint:
    """Commits one batch at a time (``commit``), on one transactional producer."""

    def __init__(self, producer: TransactionalProducer, *, timeout: float) -> None:
        self.producer = producer
        self.timeout = timeout
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def start(self) -> None:
        """Register the producer's transactional id, fencing an earlier worker of the same id."""
        self.producer.init_transactions(self.timeout)

    def make_durable(self, batch: Batch, offsets: Sequence[TopicPartition], group_metadata: Any) -> None:
        """The batch's outputs and state changelog with the inputs' offsets in one transaction; then
        each partition's state in its store, at the changelog offset it reached. (Its tallies are the
        loop's, in the loop's thread, once it knows this returned: ``streams.loop``.)"""
        changelog_topic = batch.processing.topics.state_changelog
        changelog = [message for state in batch.states.values() for message in state.changelog(changelog_topic)]
        if not batch.messages and not changelog and not offsets:
            return
        written = self.commit(batch.messages, changelog, offsets, group_metadata)
        for partition, state in batch.states.items():
            state.write_to_store(written.get((changelog_topic, partition)))

    def commit(
        self,
        outputs: Sequence[OutputMessage],
        changelog: Sequence[OutputMessage],
        offsets: Sequence[TopicPartition],
        group_metadata: Any,
    ) -> dict[tuple[str, int], int]:
        """Write ``outputs``, the state ``changelog`` and the consumer's ``offsets`` in one transaction;
        return the offset of the last changelog message per (topic, partition), once committed.

        A message the broker refuses fails the commit (librdkafka aborts the transaction with its
        error), so only the changelog's last message per partition asks for its delivery report."""
        producer = self.producer
        with self._lock:
            self._errors, self._offsets = [], {}
        try:
            producer.begin_transaction()
            for message in outputs:
                self._produce(message, None)
            last: dict[int, int] = {message.partition: index for index, message in enumerate(changelog)}
            tracked = set(last.values())
            for index, message in enumerate(changelog):
                self._produce(message, self._on_delivery if index in tracked else None)
            if offsets:
                producer.send_offsets_to_transaction(list(offsets), group_metadata, self.timeout)
            self._commit()
        except KafkaException as exc:
            aborted = self._abort(exc)
            raise BatchNotDurable(f"the batch's transaction failed: {exc.args[0]}", retriable=aborted) from exc
        with self._lock:
            errors, written = self._errors, self._offsets
        if errors:  # not expected once committed; never ignored
            raise BatchNotDurable(
                f"{len(errors)} message(s) refused by the broker, first: {errors[0]}", retriable=False
            )
        return written

    def _produce(self, message: OutputMessage, on_delivery: Any) -> None:
        while True:
            try:
                self.producer.produce(
                    message.topic,
                    message.value,
                    message.key,
                    partition=message.partition,
                    headers=message.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:  # librdkafka's queue is full: let it send, then queue again
                self.producer.poll(0.05)

    def _commit(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.retriable() and time.monotonic() < deadline:
                    continue
                raise

    def _abort(self, exc: KafkaException) -> bool:
        """Abort the failed transaction when it can be; whether another can begin."""
        error = exc.args[0]
        log.error("aborting the batch's transaction: %s", error)
        if error.fatal():
            return False
        try:
            self.producer.abort_transaction(self.timeout)
        except KafkaException as again:
            log.error("the transaction could not be aborted either (the broker aborts it on its timeout): %s", again)
            return False
        return True

    def _on_delivery(self, error: Any, message: Any) -> None:
        with self._lock:
            if error is not None:
                where = message.topic() if message is not None else "?"
                self._errors.append(f"{where}: {error}")
            elif message is not None and message.offset() is not None:
                where = (message.topic(), message.partition())
                self._offsets[where] = max(self._offsets.get(where, -1), message.offset())
