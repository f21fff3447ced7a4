"""Inbound webhooks: a system's change notification becomes a change event on ``cdc.<system>.<entity>``.

``POST /webhooks/<system>/<tenant>`` with a JSON body::

    {"event_id": "…", "entity": "customer", "op": "c" | "u" | "d", "action": "…"?,
     "ts_ms": 1764201600000, "before": {…} | null, "after": {…} | null}

(CRM records come in its API's snake_case field names and labels; they are turned into canonical
ones. AMIS CRM documents no webhooks, and this is not one of its formats: the receiver is for a
system, or a bridge, that can send signed change notifications. AMIS itself is captured by polling
and by ACT's callbacks: ``capture/crm.py``, ``capture/acct.py``.)
Headers: ``X-Timestamp`` (unix seconds) and ``X-Signature: sha256=<hex>``, an HMAC-SHA256 with the
tenant's secret over ``<timestamp>.<body>``. A wrong signature, an unknown tenant, or a timestamp
outside the tolerance (a replay) is answered 401 and nothing is produced. A good one is produced
with an idempotent producer under the webhook's ``event_id``, so a redelivered webhook is a
duplicate the processor drops; the answer (202) comes once the broker has it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import Producer
from pydantic import SecretStr

from amis.crm_mapping import from_crm
from common import metrics
from common.delivery import produce_acknowledged
from common.names import ENTITIES, System, cdc_topic
from streams.core.contract import change_event_json

SECRETS = web.AppKey("secrets", dict)
PRODUCER = web.AppKey("producer", Producer)
SETTINGS = web.AppKey("settings", dict)


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def receive(request: web.Request) -> web.Response:
    answer = await _receive(request)
    metrics.WEBHOOKS.labels(request.match_info["system"], str(answer.status)).inc()
    return answer


async def _receive(request: web.Request) -> web.Response:
    name, tenant = request.match_info["system"], request.match_info["tenant"]
    try:
        system = System(name)
    except ValueError:
        return error(404, f"unknown system {name!r}")
    body = await request.read()
    secret = request.app[SECRETS].get((system, tenant))
    timestamp = request.headers.get("X-Timestamp", "")
    signature = request.headers.get("X-Signature", "")
    if secret is None or not hmac.compare_digest(webhook_signature(secret, timestamp, body), signature):
        return error(401, "bad signature")
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError:
        return error(401, "bad timestamp")
    if age > request.app[SETTINGS]["tolerance_s"]:
        return error(401, f"timestamp {timestamp} is {age:.0f}s away from now; refused as a possible replay")
    try:
        payload = orjson.loads(body)
        entity = payload["entity"]
        event_id = str(payload["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return error(400, f"not a webhook payload: {exc}")
    if entity not in ENTITIES[system]:
        return error(400, f"{system} has no entity {entity!r}")
    records = {name: payload.get(name) for name in ("before", "after")}
    if system == System.CRM:
        records = {name: from_crm(entity, r) if isinstance(r, dict) else r for name, r in records.items()}
    record = records["after"] or records["before"] or {}
    event = change_event_json(
        event_id=event_id,
        tenant=tenant,
        system=system,
        entity=entity,
        op=payload.get("op", "u"),
        origin=payload.get("origin", "user"),
        ts_ms=int(payload.get("ts_ms") or time.time() * 1000),
        before=records["before"],
        after=records["after"],
        action=payload.get("action"),
    )
    topic = request.app[SETTINGS]["topic_prefix"] + cdc_topic(system, entity)
    try:
        await produce_acknowledged(
            request.app[PRODUCER], topic, f"{tenant}:{record.get('id')}".encode(), orjson.dumps(event)
        )
    except (RuntimeError, TimeoutError) as exc:
        return error(503, f"could not produce the event ({exc}); send the webhook again")
    metrics.CAPTURE_EVENTS.labels(system, entity, str(event["op"])).inc()
    return web.json_response({"accepted": event_id, "topic": topic}, status=202)


def secrets_by_tenant(secrets: Mapping[str, str | SecretStr]) -> dict[tuple[str, str], str]:
    """``{"<system>:<tenant>": secret}`` (``LIENTHONG_WEBHOOK_SECRETS``) as ``create_webhooks`` takes it.
    Raises ``ValueError`` for a key that is not ``<system>:<tenant>``."""
    by_tenant: dict[tuple[str, str], str] = {}
    for key, secret in secrets.items():
        system, colon, tenant = key.partition(":")
        if not colon:
            raise ValueError(f"webhook secret key {key!r} is not '<system>:<tenant>'")
        by_tenant[(system, tenant)] = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    return by_tenant


def create_webhooks(
    *,
    secrets: dict[tuple[str, str], str],
    kafka: Mapping[str, Any],
    topic_prefix: str = "",
    tolerance_s: float = 300.0,
) -> web.Application:
    """``secrets``: (system, tenant) -> HMAC secret; ``kafka``: the client config of the cluster
    (common.kafka_config.confluent_config)."""
    app = web.Application()
    app[SECRETS] = dict(secrets)
    app[PRODUCER] = Producer({**kafka, "acks": "all", "enable.idempotence": True})
    app[SETTINGS] = {"topic_prefix": topic_prefix, "tolerance_s": tolerance_s}
    app.router.add_post("/webhooks/{system}/{tenant}", receive)
    # no /metrics or probes here: this app is the public listener (lienthong webhooks serves them on
    # LIENTHONG_WEBHOOK_METRICS_PORT, which no Ingress forwards to)
    return app
