"""Every topic of the wire contract (``docs/contract.md``), declared in one place.

The CLI (``lienthong topics create``) creates these with the admin client and the faust app
declares the same names; both read ``contract_topics()``. No faust import here, so the CLI and
connectors can use it without starting an app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.names import ENTITIES, System

DLQ_CDC = "dlq.cdc"
DLQ_COMMANDS = "dlq.commands"
AUDIT = "audit.sync"
TENANT_CONFIG = "config.tenants"


def cdc_topic(system: str, entity: str) -> str:
    return f"cdc.{system}.{entity}"


def commands_topic(system: str) -> str:
    return f"commands.{system}"


def results_topic(system: str) -> str:
    return f"results.{system}"


@dataclass(frozen=True)
class TopicSpec:
    """One contract topic: its name (without the deployment prefix) and how it is configured."""

    name: str
    role: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)

    def kafka_config(self) -> dict[str, str]:
        config = dict(self.config)
        if self.compacted:
            config["cleanup.policy"] = "compact"
        return config


def cdc_topics() -> list[TopicSpec]:
    return [
        TopicSpec(cdc_topic(system.value, entity), role="cdc")
        for system in System
        for entity in sorted(ENTITIES[system])
    ]


def contract_topics() -> list[TopicSpec]:
    """All topics of the contract, in a stable order."""
    topics = cdc_topics()
    for system in System:
        topics.append(TopicSpec(commands_topic(system.value), role="commands"))
    for system in System:
        topics.append(TopicSpec(results_topic(system.value), role="results"))
    topics += [
        TopicSpec(DLQ_CDC, role="dlq"),
        TopicSpec(DLQ_COMMANDS, role="dlq"),
        TopicSpec(AUDIT, role="audit"),
        TopicSpec(TENANT_CONFIG, role="config", compacted=True),
    ]
    return topics


def parse_cdc_topic(name: str, prefix: str = "") -> tuple[str, str] | None:
    """``[prefix]cdc.<system>.<entity>`` -> (system, entity); None when it is not a CDC topic name."""
    if prefix:
        if not name.startswith(prefix):
            return None
        name = name[len(prefix) :]
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "cdc":
        return None
    return parts[1], parts[2]
