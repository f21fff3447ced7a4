"""Every Kafka client's connection settings, from one place: the bootstrap servers and transport
security (TLS, SASL/SCRAM) of ``KafkaSettings`` turned into the config of each client kind the project uses.

- ``confluent_config(kafka, extra)``: confluent-kafka ``Producer``, ``Consumer`` and ``AdminClient``
  (librdkafka property names). Every confluent client in streams/, connectors/, capture/, demo/ and
  bench/ is built from it; client-wide properties (a ``logger``, statistics) are added here, once.
- ``aiokafka_config(kafka)``: keyword arguments of aiokafka's clients (the tenant settings reader).
- the faust app gets the same as ``broker_credentials`` (``streams.app.faust_credentials``, which needs
  faust, a library the connectors must not import); it is built from ``ssl_context(kafka)`` here.

No client library is imported here, so every side (processor, connectors, capture, sandboxes, demo)
may use it. Secrets are read from their ``SecretStr`` only into the returned configs, which are never
logged (``describe_connection(kafka)`` says what is configured, without them).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any

from common.settings import KafkaSettings

# Hooks adding client-wide librdkafka properties to every confluent config (e.g. a ``logger``): each
# gets the config built so far and returns properties to add. Registered once at start-up.
CONFLUENT_HOOKS: list[Callable[[dict[str, Any]], dict[str, Any]]] = []


def confluent_config(kafka: KafkaSettings, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The librdkafka config of a client of the configured cluster, plus the client's own ``extra``
    properties (``{"group.id": ..., "acks": "all"}``)."""
    config: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    protocol = kafka.kafka_security_protocol
    if protocol != "PLAINTEXT":
        config["security.protocol"] = protocol.lower()
    if protocol.startswith("SASL_"):
        config["sasl.mechanisms"] = kafka.kafka_sasl_mechanism
        config["sasl.username"] = kafka.kafka_sasl_username
        config["sasl.password"] = _secret(kafka.kafka_sasl_password)
    if protocol in ("SSL", "SASL_SSL"):
        if kafka.kafka_ssl_cafile is not None:
            config["ssl.ca.location"] = str(kafka.kafka_ssl_cafile)
        if kafka.kafka_ssl_certfile is not None:
            config["ssl.certificate.location"] = str(kafka.kafka_ssl_certfile)
        if kafka.kafka_ssl_keyfile is not None:
            config["ssl.key.location"] = str(kafka.kafka_ssl_keyfile)
        if kafka.kafka_ssl_key_password is not None:
            config["ssl.key.password"] = _secret(kafka.kafka_ssl_key_password)
        config["ssl.endpoint.identification.algorithm"] = "https" if kafka.kafka_ssl_check_hostname else "none"
    # A topic is made by `lienthong topics create` (or the worker, its own) with the contract's settings;
    # never by a broker that allows it, with its defaults, because a client named it (librdkafka lets
    # producers ask that by default).
    config["allow.auto.create.topics"] = False
    config.update(extra or {})
    for hook in CONFLUENT_HOOKS:
        for key, value in hook(config).items():
            config.setdefault(key, value)
    return config


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of the Python clients (aiokafka, faust), or None without TLS."""
    if kafka.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = str(kafka.kafka_ssl_cafile) if kafka.kafka_ssl_cafile is not None else None
    context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if kafka.kafka_ssl_certfile is not None and kafka.kafka_ssl_keyfile is not None:
        context.load_cert_chain(
            str(kafka.kafka_ssl_certfile),
            str(kafka.kafka_ssl_keyfile),
            password=_secret(kafka.kafka_ssl_key_password),
        )
    if not kafka.kafka_ssl_check_hostname:
        context.check_hostname = False
    return context


def aiokafka_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments of ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` for the configured cluster."""
    protocol = kafka.kafka_security_protocol
    config: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers, "security_protocol": protocol}
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = kafka.kafka_sasl_mechanism
        config["sasl_plain_username"] = kafka.kafka_sasl_username
        config["sasl_plain_password"] = _secret(kafka.kafka_sasl_password)
    context = ssl_context(kafka)
    if context is not None:
        config["ssl_context"] = context
    return config


def describe_connection(kafka: KafkaSettings) -> str:
    """What the clients connect with, for a log line or an error message: never a secret."""
    protocol = kafka.kafka_security_protocol
    said = f"{kafka.bootstrap_servers} ({protocol}"
    if protocol.startswith("SASL_"):
        said += f", {kafka.kafka_sasl_mechanism} as {kafka.kafka_sasl_username}"
    return said + ")"


def unreachable(kafka: KafkaSettings, error: object) -> str:
    """What every command says of a broker that did not answer (one wording): where it looked, for how
    long, what librdkafka said, and what to do."""
    said = error.args[0] if isinstance(error, Exception) and error.args else error
    detail = said.str() if hasattr(said, "str") else str(said)
    return (
        f"no Kafka broker answers at {describe_connection(kafka)} within {kafka.broker_timeout:g}s ({detail}): "
        "start one (lienthong kafka start) or say where one is (-b HOST:PORT or LIENTHONG_BOOTSTRAP_SERVERS); "
        "LIENTHONG_BROKER_TIMEOUT waits longer"
    )


def _secret(value: Any) -> str | None:
    return None if value is None else value.get_secret_value()
