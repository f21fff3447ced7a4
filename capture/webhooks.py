"""Inbound webhooks: a system's change notification becomes a change event on ``cdc.<system>.<entity>``.

``POST /webhooks/<system>/<tenant>`` with a JSON body::

    {"event_id": "…", "entity": "customer", "op": "c" | "u" | "d", "action": "…"?,
     "ts_ms": 1764201600000, "before": {…} | null, "after": {…} | null}

(CRM records come in its API's snake_case field names and labels; they are turned into canonical
ones. AMIS CRM documents no webhooks, and this is not one of its formats: the receiver is for a
system, or a bridge, that can send signed change notifications. AMIS itself is captured by polling
and by ACT's callbacks: ``capture/crm.py``, ``capture/acct.py``.)
Headers: ``X-Timestamp`` (unix seconds) and ``X-Signature: sha256=<hex>``, an HMAC-SHA256 with the
tenant's secret over ``<timestamp>.<body>``. What is refused, and answered with a one-line reason:

* 401: a wrong signature, an unknown tenant, a timestamp that is not plain unix seconds (``nan``,
  ``inf``, an exponent, non-ASCII) or is more than the tolerance (300 s) before or after now;
* 400: a body that is not one JSON object (the receiver takes one webhook a request), a missing or
  empty ``event_id``, an unknown entity or op, a ``ts_ms`` that is not a positive integer or is in
  the future, ``before``/``after`` that are not objects, a record without an id, anything the
  worker's own checks of a change event would refuse (``streams.core.validation``); 408 or 400 a
  body that did not arrive whole in time (``common.listeners.guard_requests``).

The server, not the payload, decides ``origin``: always ``user`` (an ``origin`` in the payload is
ignored: a webhook cannot pass itself off as the integration's own echo, which rule X-1 drops).
No replay changes anything (``capture/webhook_state.py``): a webhook is taken only when its
``ts_ms`` is newer than the last one taken for its record; the same ``event_id`` again, or an older
one, is answered 200 and produces nothing; a delete is not undone by an older create or update.
A webhook taken is produced with an idempotent producer under its ``event_id`` and answered 202 once
the broker has it (503 if it could not: send it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import Producer
from pydantic import SecretStr

from amis.crm_mapping import from_crm
from capture.webhook_state import Version, WebhookVersions, verdict
from common import listeners, metrics
from common.delivery import produce_acknowledged
from common.names import ENTITIES, System, cdc_topic
from streams.core.contract import change_event_json, decode_change_event
from streams.core.errors import BadInput
from streams.core.validation import check_record


class KeyLocks:
    """An asyncio lock per key, dropped once nobody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[Any, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def held(self, key: Any) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


SECRETS = web.AppKey("secrets", dict)
PRODUCER = web.AppKey("producer", Producer)
SETTINGS = web.AppKey("settings", dict)
VERSIONS = web.AppKey("versions", WebhookVersions)
LOCKS = web.AppKey("locks", KeyLocks)


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def receive(request: web.Request) -> web.Response:
    answer = await _receive(request)
    name = request.match_info["system"]
    # a caller's path is no label: one series per name it makes up would grow without bound
    metrics.WEBHOOKS.labels(name if name in System.__members__.values() else "unknown", str(answer.status)).inc()
    return answer


#: ``X-Timestamp``: plain unix seconds, no sign, exponent, ``nan`` or ``inf`` (float() takes those).
TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")
OPS = ("c", "u", "d")


class Refused(Exception):
    """A webhook refused: the status and the one-line reason answered."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(reason.split())[:400]


def _check_signed(request: web.Request, system: System, tenant: str, body: bytes) -> None:
    secret = request.app[SECRETS].get((system, tenant))
    timestamp = request.headers.get("X-Timestamp", "")
    signature = request.headers.get("X-Signature", "")
    # shapes first: a non-ASCII or oversized header must not reach encode() or compare_digest()
    if secret is None or not SIGNATURE.fullmatch(signature) or not TIMESTAMP.fullmatch(timestamp):
        raise Refused(401, "bad signature or timestamp: X-Signature is sha256=<64 hex>, X-Timestamp unix seconds")
    if not hmac.compare_digest(webhook_signature(secret, timestamp, body), signature):
        raise Refused(401, "bad signature")
    age = time.time() - float(timestamp)
    if abs(age) > request.app[SETTINGS]["tolerance_s"]:
        raise Refused(401, f"timestamp {timestamp} is {abs(age):.0f}s away from now; refused as a possible replay")


def _parse(system: System, tenant: str, body: bytes, tolerance_s: float) -> tuple[str, str, dict[str, Any], str]:
    """The webhook -> (entity, record id, change event, key), or ``Refused`` saying what is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Refused(400, f"expected one webhook, a JSON object; got {type(payload).__name__}")
    event_id, entity, op, ts_ms = (payload.get(k) for k in ("event_id", "entity", "op", "ts_ms"))
    if not isinstance(event_id, str) or not event_id:
        raise Refused(400, "event_id is missing or not a string: every webhook needs its own event_id")
    if not isinstance(entity, str) or entity not in ENTITIES[system]:
        raise Refused(400, f"{system} has no entity {str(entity)[:64]!r}")
    if op not in OPS:
        raise Refused(400, f"op {str(op)[:16]!r} is not one of c, u, d")
    if type(ts_ms) is not int or ts_ms <= 0:
        raise Refused(400, "ts_ms (the time of the change, unix milliseconds) is missing or not a positive integer")
    if ts_ms > (time.time() + tolerance_s) * 1000:  # a future one would outrank every real change of its record
        raise Refused(400, f"ts_ms {ts_ms} is in the future")
    records = {name: payload.get(name) for name in ("before", "after")}
    for name, record in records.items():
        if record is not None and not isinstance(record, dict):
            raise Refused(400, f"{name} must be an object or null, not {type(record).__name__}")
    if records["after" if op != "d" else "before"] is None:
        raise Refused(400, f"op {op!r} needs {'after' if op != 'd' else 'before'}")
    action = payload.get("action")
    if action is not None and not isinstance(action, str):
        raise Refused(400, "action must be a string")
    try:  # the raw ids too: mapping a CRM record would turn an id [] into the string "[]"
        for name, record in records.items():
            check_record(record, name, "the webhook")
    except BadInput as exc:
        raise Refused(400, exc.message) from None
    if system == System.CRM:
        try:
            records = {name: from_crm(entity, r) if r is not None else None for name, r in records.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Refused(400, f"the {entity} is not a CRM record: {exc}") from None
    record_id = (records["after"] or records["before"] or {}).get("id")
    if record_id is None or isinstance(record_id, bool) or str(record_id) == "":
        raise Refused(400, f"the {entity} has no id")
    event = change_event_json(
        event_id=event_id,
        tenant=tenant,
        system=system,
        entity=entity,
        op=op,
        origin="user",  # the server's to say, never the payload's (see the module's docstring)
        ts_ms=ts_ms,
        before=records["before"],
        after=records["after"],
        action=action,
    )
    key = f"{tenant}:{record_id}"
    try:  # the worker's checks: what it would dead-letter is refused here, before it is produced
        decode_change_event(orjson.dumps(event), topic_system=system, topic_entity=entity, key=key.encode())
    except BadInput as exc:
        raise Refused(400, exc.message) from None
    return entity, str(record_id), event, key


async def _receive(request: web.Request) -> web.Response:
    name, tenant = request.match_info["system"], request.match_info["tenant"]
    try:
        system = System(name)
    except ValueError:
        return error(404, f"unknown system {name[:64]!r}")
    body = await request.read()  # read within common.listeners.BODY_TIMEOUT_S by the app's guard
    try:
        _check_signed(request, system, tenant, body)
        entity, record_id, event, key = _parse(system, tenant, body, request.app[SETTINGS]["tolerance_s"])
    except Refused as refused:
        return error(refused.status, refused.reason)
    versions = request.app[VERSIONS]
    # one webhook of a record at a time: the version check, the produce and the keep go together
    async with request.app[LOCKS].held((system, tenant, entity, record_id)):
        why_not = verdict(
            versions.held(system, tenant, entity, record_id), event["event_id"], event["ts_ms"], event["op"]
        )
        if why_not is not None:
            return web.json_response({"ignored": event["event_id"], "reason": why_not}, status=200)
        topic = request.app[SETTINGS]["topic_prefix"] + cdc_topic(system, entity)
        try:
            await produce_acknowledged(request.app[PRODUCER], topic, key.encode(), orjson.dumps(event))
        except (RuntimeError, TimeoutError) as exc:
            return error(503, f"could not produce the event ({exc}); send the webhook again")
        versions.keep(system, tenant, entity, record_id, Version(event["ts_ms"], event["op"] == "d", event["event_id"]))
    metrics.CAPTURE_EVENTS.labels(system, entity, str(event["op"])).inc()
    return web.json_response({"accepted": event["event_id"], "topic": topic}, status=202)


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
    data_dir: Path,
    topic_prefix: str = "",
    tolerance_s: float = 300.0,
    body_timeout_s: float = listeners.BODY_TIMEOUT_S,
) -> web.Application:
    """``secrets``: (system, tenant) -> HMAC secret; ``kafka``: the client config of the cluster
    (common.kafka_config.confluent_config); ``data_dir``: where the versions taken are kept
    (``webhooks.sqlite3``)."""
    # guarded as it is made (a body-read timeout, client faults in one line): it faces the internet,
    # however it is served
    app = listeners.guard_requests(web.Application())
    app[SECRETS] = dict(secrets)
    app[VERSIONS] = WebhookVersions(Path(data_dir) / "webhooks.sqlite3")
    app[LOCKS] = KeyLocks()
    app[listeners.BODY_TIMEOUT] = body_timeout_s
    app[PRODUCER] = Producer({**kafka, "acks": "all", "enable.idempotence": True})
    app[SETTINGS] = {"topic_prefix": topic_prefix, "tolerance_s": tolerance_s}
    app.router.add_post("/webhooks/{system}/{tenant}", receive)
    # no /metrics or probes here: this app is the public listener (lienthong webhooks serves them on
    # LIENTHONG_WEBHOOK_METRICS_PORT, which no Ingress forwards to)

    async def close_versions(app: web.Application) -> None:
        app[VERSIONS].close()

    app.on_cleanup.append(close_versions)
    return app
