"""The contract's vocabulary, defined once: the two systems, every topic name and every header name.

``docs/contract.md`` describes each; every service (processor, connectors, capture, operator tools)
spells them from here. A topic name here is without the deployment's prefix
(``LIENTHONG_TOPIC_PREFIX``), which the service that uses it prepends.
"""

from __future__ import annotations

from enum import StrEnum


class System(StrEnum):
    """One of the two systems lienthong keeps in sync."""

    CRM = "crm"
    ACCT = "acct"


# Every entity each system reports on ``cdc.<system>.<entity>`` (and commands may write).
# "quote" is not in the original contract's list of acct entities, but QUO-1 writes acct quotes and
# QUO-3 reads their changes: see docs/decisions.md.
ENTITIES: dict[System, frozenset[str]] = {
    System.CRM: frozenset(
        {"customer", "product_category", "product", "quote", "sale_order", "invoice", "price_policy"}
    ),
    System.ACCT: frozenset(
        {
            "customer",
            "quote",
            "product_category",
            "product",
            "price_policy",
            "sale_order",
            "contract",
            "sales_voucher",
            "receipt",
            "invoice",
        }
    ),
}


# --- topics ------------------------------------------------------------------------------------

DLQ_CDC = "dlq.cdc"
DLQ_COMMANDS = "dlq.commands"
AUDIT = "audit.sync"
TENANT_CONFIG = "config.tenants"


def cdc_topic(system: System, entity: str) -> str:
    return f"cdc.{system}.{entity}"


def commands_topic(system: System) -> str:
    return f"commands.{system}"


def results_topic(system: System) -> str:
    return f"results.{system}"


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


# The processor's own topics, named after its app id (``LIENTHONG_APP_ID``, which is also its
# consumer group; no topic prefix, as faust names internal topics): every change event and result
# routed by tenant, and the state of each partition's tenants.
def changes_topic(app_id: str) -> str:
    return f"{app_id}-changes"


def state_changelog_topic(app_id: str) -> str:
    return f"{app_id}-state-changelog"


# --- headers -----------------------------------------------------------------------------------

# A dead letter: why, and where its original was read.
ERROR_KIND = "error.kind"
ERROR_MESSAGE = "error.message"
ORIGIN_TOPIC = "origin.topic"
ORIGIN_PARTITION = "origin.partition"
ORIGIN_OFFSET = "origin.offset"
FAILED_AT_MS = "failed.at_ms"
# A dead letter whose original was too large to keep whole.
TRUNCATED = "dlq.truncated"
ORIGINAL_BYTES = "dlq.original_bytes"
# A dead letter written back by ``lienthong dlq replay``: where it was read from.
REPLAYED_FROM = "replayed.from"

# A message routed onto the changes topic keeps its bytes and headers and says where it came from:
# the ``origin.topic``/``origin.partition``/``origin.offset`` above, its original key, and the time
# it reached Kafka (its record timestamp, ms).
ORIGIN_KEY = "origin.key"
ORIGIN_TIMESTAMP = "origin.timestamp"

# A command: when the change it comes from happened in its source system (the change event's
# ``ts_ms``); the connector measures the end-to-end sync latency from it.
SOURCE_TS_MS = "lienthong.source_ts_ms"

# A Debezium change event's headers (docs/contract.md, "Debezium envelope").
TENANT = "tenant"
EVENT_ID = "event_id"
ACTION = "action"
ORIGIN = "origin"
