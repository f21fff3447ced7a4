"""The Kafka ACLs of a deployment: one principal per service, each allowed exactly what its code does.

Derived from the names the services use (``common.names``: topics, the worker's app id, its consumer
group, internal topics and transactional ids, the connectors' groups), with the deployment's topic
prefix (``LIENTHONG_TOPIC_PREFIX``) and app id (``LIENTHONG_APP_ID``). Two ways out, one table:

    python -m ops.acls apply      create them on the cluster the LIENTHONG_KAFKA_* settings name
                                  (as a super user: the admin's settings), with AdminClient.create_acls
    python -m ops.acls commands   print them as ``kafka-acls.sh`` commands (SECURITY.md lists these)

``deploy/kafka/secure.sh start`` runs ``apply`` on the local SASL_SSL broker. Everything not allowed
here is refused: the broker runs ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``.
Operators' commands (``lienthong topics create``, ``tenant set``, ``dlq replay``) run as the admin.

Read and Write imply Describe in Kafka's authorizer, so Describe appears only where nothing more is needed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported from cimpl, see ops/admin.py
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from common.names import AUDIT, DLQ_CDC, DLQ_COMMANDS, TENANT_CONFIG, changes_topic, state_changelog_topic
from common.settings import KafkaSettings
from ops.admin import admin_client

# The services and the SCRAM user each authenticates as (deploy/kafka/secure.sh makes these users).
SERVICES = ("worker", "capture", "connector", "dashboard")
ADMIN = "admin"  # super user: the brokers' own user and the operators' commands


@dataclass(frozen=True)
class Acl:
    """Allow ``principal`` the ``operations`` on the resources ``names`` (a kafka-acls.sh --add)."""

    principal: str  # User:<name>
    resource: str  # topic | group | transactional-id
    pattern: str  # literal | prefixed
    names: tuple[str, ...]
    operations: tuple[str, ...]


def deployment_acls(topic_prefix: str, app_id: str, users: dict[str, str] | None = None) -> list[Acl]:
    """Every ACL of a deployment with this topic prefix and worker app id; ``users``: service -> SCRAM user."""
    user = {service: f"User:{name}" for service, name in ({s: s for s in SERVICES} | (users or {})).items()}
    p = topic_prefix
    worker, capture, connector, dashboard = (user[s] for s in SERVICES)
    return [
        # Capture services, the webhook receiver and the sandboxes' outbox publishers: the only writers
        # of change events, which make lienthong write into any tenant's systems (SECURITY.md).
        Acl(capture, "topic", "prefixed", (f"{p}cdc.",), ("Write",)),
        # The worker reads changes, results and tenant settings (the settings reader joins no group) ...
        Acl(worker, "topic", "prefixed", (f"{p}cdc.", f"{p}results."), ("Read",)),
        Acl(worker, "topic", "literal", (f"{p}{TENANT_CONFIG}",), ("Read",)),
        # ... writes commands, the audit and dead letters, in its transactions ...
        Acl(worker, "topic", "prefixed", (f"{p}commands.",), ("Write",)),
        Acl(worker, "topic", "literal", (f"{p}{AUDIT}", f"{p}{DLQ_CDC}"), ("Write",)),
        # ... creates (at its first start), writes and reads its own topics, named after the app id
        # without the topic prefix (common.names) ...
        Acl(
            worker,
            "topic",
            "literal",
            (changes_topic(app_id), state_changelog_topic(app_id)),
            ("Create", "Read", "Write"),
        ),
        # ... in its group (the loop's consumer; "-restore" is the changelog reader's, which librdkafka
        # wants named though it never joins) ...
        Acl(worker, "group", "literal", (app_id, f"{app_id}-restore"), ("Read",)),
        # ... with a transactional id "<app id>-<instance id or random>" (streams.app.transactional_id).
        Acl(worker, "transactional-id", "prefixed", (f"{app_id}-",), ("Write",)),
        # Connectors: read their system's commands in their group, write results and rejected commands.
        Acl(connector, "topic", "prefixed", (f"{p}commands.",), ("Read",)),
        Acl(connector, "group", "prefixed", (f"{p}lienthong-connector-",), ("Read",)),
        Acl(connector, "topic", "prefixed", (f"{p}results.",), ("Write",)),
        Acl(connector, "topic", "literal", (f"{p}{DLQ_COMMANDS}",), ("Write",)),
        # The operator's page: reads what it tails (audit, results, dead letters), the ends of every
        # contract topic, the groups' committed offsets; its own consumers join no group (assigned).
        Acl(dashboard, "topic", "prefixed", (f"{p}results.", f"{p}dlq."), ("Read",)),
        Acl(dashboard, "topic", "literal", (f"{p}{AUDIT}",), ("Read",)),
        Acl(dashboard, "topic", "prefixed", (f"{p}cdc.", f"{p}commands."), ("Describe",)),
        Acl(dashboard, "topic", "literal", (f"{p}{TENANT_CONFIG}",), ("Describe",)),
        Acl(dashboard, "group", "literal", (app_id,), ("Describe",)),
        Acl(dashboard, "group", "prefixed", (f"{p}lienthong-connector-",), ("Describe",)),
    ]


_RESOURCE = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional-id": ResourceType.TRANSACTIONAL_ID,
}
_PATTERN = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}


def bindings(acls: Iterable[Acl]) -> list[AclBinding]:
    """The ACLs as AdminClient bindings: one per principal, resource and operation, from any host."""
    return [
        AclBinding(
            _RESOURCE[acl.resource],
            name,
            _PATTERN[acl.pattern],
            acl.principal,
            "*",
            AclOperation[operation.upper()],
            AclPermissionType.ALLOW,
        )
        for acl in acls
        for name in acl.names
        for operation in acl.operations
    ]


def commands(
    acls: Iterable[Acl], bootstrap: str = "broker:9093", command_config: str = "admin.properties"
) -> list[str]:
    """The ACLs as the ``kafka-acls.sh`` commands an operator runs (one per line of the table)."""
    out = []
    for acl in acls:
        words = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", command_config, "--add"]
        words += ["--allow-principal", acl.principal]
        for operation in acl.operations:
            words += ["--operation", operation]
        for name in acl.names:
            words += [f"--{acl.resource}", name]
        words += ["--resource-pattern-type", acl.pattern]
        out.append(shlex.join(words))
    return out


def apply(kafka: KafkaSettings, acls: Iterable[Acl], timeout: float = 30.0) -> int:
    """Create the ACLs (creating an existing one is a no-op); how many bindings. Raises what the broker refused."""
    wanted = bindings(acls)
    admin = admin_client(kafka)  # kept while the futures are waited for: a dropped client cancels them
    for binding, future in admin.create_acls(wanted, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise RuntimeError(f"the broker refused the ACL {binding}: {exc.args[0]}") from exc
    return len(wanted)


def main(argv: list[str] | None = None) -> int:
    from streams.settings import WorkerSettings  # the app id and the topic prefix, as the worker reads them

    parser = argparse.ArgumentParser(prog="python -m ops.acls", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("apply", "commands"))
    parser.add_argument(
        "--user", action="append", default=[], metavar="SERVICE=NAME", help=f"SCRAM user of a service ({SERVICES})"
    )
    parser.add_argument("--bootstrap-server", default="broker:9093", help="for commands")
    parser.add_argument("--command-config", default="admin.properties", help="for commands")
    args = parser.parse_args(argv)
    users = dict(item.split("=", 1) for item in args.user if "=" in item)
    if unknown := set(users) - set(SERVICES):
        parser.error(f"unknown service(s) {sorted(unknown)} in --user: use {', '.join(SERVICES)}")
    settings = WorkerSettings()
    acls = deployment_acls(settings.kafka.topic_prefix, settings.app_id, users)
    if args.action == "commands":
        print("\n".join(commands(acls, args.bootstrap_server, args.command_config)))
        return 0
    try:
        count = apply(settings.kafka, acls)
    except (RuntimeError, KafkaException) as exc:
        print(f"ops.acls: {exc}; run it with a super user's LIENTHONG_KAFKA_* settings", file=sys.stderr)
        return 1
    prefix = settings.kafka.topic_prefix or "(no topic prefix)"
    print(f"ops.acls: {count} ACL bindings in place for topic prefix {prefix}, app id {settings.app_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
