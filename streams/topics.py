"""Every topic of the wire contract (``docs/contract.md``) as the deployment creates it.

The names are ``common.names``'s; this module says which topics there are and how each is
configured. The CLI (``lienthong topics create``) creates these with the admin client and the faust
app declares the same names; both read ``contract_topics()``. No faust import here, so the CLI and
connectors can use it without starting an app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.names import (
    AUDIT,
    DLQ_CDC,
    DLQ_COMMANDS,
    ENTITIES,
    TENANT_CONFIG,
    System,
    cdc_topic,
    commands_topic,
    results_topic,
)


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
        TopicSpec(cdc_topic(system, entity), role="cdc") for system in System for entity in sorted(ENTITIES[system])
    ]


def contract_topics() -> list[TopicSpec]:
    """All topics of the contract, in a stable order."""
    topics = cdc_topics()
    for system in System:
        topics.append(TopicSpec(commands_topic(system), role="commands"))
    for system in System:
        topics.append(TopicSpec(results_topic(system), role="results"))
    topics += [
        TopicSpec(DLQ_CDC, role="dlq"),
        TopicSpec(DLQ_COMMANDS, role="dlq"),
        TopicSpec(AUDIT, role="audit"),
        TopicSpec(TENANT_CONFIG, role="config", compacted=True),
    ]
    return topics
