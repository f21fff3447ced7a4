"""Topic administration with confluent-kafka's AdminClient (no faust, no app)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException

# confluent-kafka documents NewTopic as confluent_kafka.admin.NewTopic, but that module imports it from
# cimpl without re-exporting it (no `as NewTopic`, no __all__): mypy's no_implicit_reexport refuses it.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from common.kafka_config import confluent_config, describe_connection, unreachable
from common.settings import KafkaSettings
from streams.topics import TopicSpec, contract_topics


@dataclass
class TopicOutcome:
    name: str
    status: str  # created | exists | mismatch
    detail: str = ""


def admin_client(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(confluent_config(kafka, {"socket.timeout.ms": 10000}))


def refused_connection(kafka: KafkaSettings, timeout: float = 15.0) -> str | None:
    """Connect to the cluster once: what it refused (the SASL login, the TLS handshake) and what to set, or
    None when it answered, or did not answer at all (a broker still starting is waited for as before).

    Services call this at start so that a wrong password is an error that says so, not an endless retry."""
    errors: list[KafkaError] = []
    admin = AdminClient(confluent_config(kafka, {"error_cb": errors.append, "socket.timeout.ms": 10000}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return None
        except KafkaException:
            admin.poll(0.1)  # serves error_cb
        problem = _refusal(kafka, errors)
        if problem is not None:
            return problem
    return None


def _refusal(kafka: KafkaSettings, errors: list[KafkaError]) -> str | None:
    for error in errors:
        if error.code() == KafkaError._AUTHENTICATION:
            return (
                f"Kafka at {describe_connection(kafka)} refused the login ({error.str()}): check "
                "LIENTHONG_KAFKA_SASL_USERNAME, LIENTHONG_KAFKA_SASL_PASSWORD and LIENTHONG_KAFKA_SASL_MECHANISM"
            )
        if error.code() == KafkaError._SSL or "SSL handshake failed" in error.str():
            return (
                f"no TLS connection to Kafka at {describe_connection(kafka)} ({error.str()}): check "
                "LIENTHONG_KAFKA_SECURITY_PROTOCOL, LIENTHONG_KAFKA_SSL_CAFILE and the broker's certificate"
            )
    return None


def broker_problem(kafka: KafkaSettings) -> str | None:
    """None when a broker answers at the bootstrap servers within ``LIENTHONG_BROKER_TIMEOUT``; else what
    every one-shot command says of it (``common.kafka_config.unreachable``)."""
    admin = AdminClient(confluent_config(kafka, {"socket.timeout.ms": max(1000, int(kafka.broker_timeout * 1000))}))
    try:
        admin.list_topics(timeout=kafka.broker_timeout)
    except KafkaException as exc:
        return unreachable(kafka, exc)
    return None


def create_topics(
    kafka: KafkaSettings,
    *,
    partitions: int,
    replication_factor: int,
    specs: list[TopicSpec] | None = None,
    timeout: float = 30.0,
) -> list[TopicOutcome]:
    """Create every contract topic (with the settings' prefix), of ``partitions`` partitions and
    ``replication_factor`` replicas (``LIENTHONG_TOPIC_PARTITIONS``, ``LIENTHONG_TOPIC_REPLICATION_FACTOR``);
    existing topics are left as they are."""
    specs = contract_topics() if specs is None else specs
    admin = admin_client(kafka)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise RuntimeError(unreachable(kafka, exc)) from None
    outcomes: list[TopicOutcome] = []
    wanted: list[NewTopic] = []
    for spec in specs:
        name = kafka.topic_prefix + spec.name
        if name in existing:
            has = len(existing[name].partitions)
            if has != partitions:
                outcomes.append(TopicOutcome(name, "mismatch", f"has {has} partitions, settings say {partitions}"))
            else:
                outcomes.append(TopicOutcome(name, "exists"))
            continue
        wanted.append(
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                config=spec.kafka_config(),
            )
        )
    if wanted:
        for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                outcomes.append(TopicOutcome(name, "created"))
            except KafkaException as exc:
                error = exc.args[0]
                if getattr(error, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    outcomes.append(TopicOutcome(name, "exists"))
                else:
                    raise RuntimeError(f"creating topic {name} failed: {error}") from None
    order = {kafka.topic_prefix + s.name: i for i, s in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order.get(o.name, 0))


def delete_topics_with_prefix(kafka: KafkaSettings, prefix: str, timeout: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (test clean-up). Refuses an empty prefix."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = admin_client(kafka)
    names = [n for n in admin.list_topics(timeout=timeout).topics if n.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout).values():
            with contextlib.suppress(KafkaException):
                future.result(timeout=timeout)
    return names
