"""A sync-health page for the demo: consumer lag per group, traffic per topic, connector outcomes.

``GET /`` is an HTML page (refreshes itself), ``GET /health.json`` the same numbers as JSON. Lag is
read from the broker (end offsets minus each group's committed offsets); outcomes from the
connectors' counters and the sandboxes' injected faults.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition

from demo.local import LocalSystems
from streams.kafka_config import confluent_config
from streams.settings import Settings
from streams.topics import contract_topics

SYSTEMS = web.AppKey("systems", LocalSystems)
SETTINGS = web.AppKey("settings", Settings)


def broker_numbers(settings: Settings, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Messages per contract topic, and lag per consumer group over the topics it reads."""
    names = [settings.topic_prefix + spec.name for spec in contract_topics()]
    probe = Consumer(confluent_config(settings, {"group.id": "lienthong-dashboard-probe", "enable.auto.commit": False}))
    try:
        metadata = probe.list_topics(timeout=5).topics
        ends: dict[tuple[str, int], int] = {}
        totals: dict[str, int] = {}
        for name in names:
            if name not in metadata:
                continue
            for partition in metadata[name].partitions:
                low, high = probe.get_watermark_offsets(TopicPartition(name, partition), timeout=5)
                ends[(name, partition)] = high
                totals[name.removeprefix(settings.topic_prefix)] = (
                    totals.get(name.removeprefix(settings.topic_prefix), 0) + high - low
                )
    finally:
        probe.close()
    lag: dict[str, int] = {}
    for group, topics in groups.items():
        reader = Consumer(confluent_config(settings, {"group.id": group, "enable.auto.commit": False}))
        try:
            wanted = [
                TopicPartition(settings.topic_prefix + t, p)
                for t in topics
                for (name, p) in ends
                if name == settings.topic_prefix + t
            ]
            committed = reader.committed(wanted, timeout=5) if wanted else []
            lag[group] = sum(max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed)
        finally:
            reader.close()
    return {"messages": totals, "lag": lag}


def watched_groups(settings: Settings) -> dict[str, list[str]]:
    """The consumer groups of the worker and of both connectors, with the topics each reads."""
    cdc = [spec.name for spec in contract_topics() if spec.role == "cdc"]
    return {
        settings.app_id: [*cdc, "results.crm", "results.acct"],
        f"{settings.topic_prefix}lienthong-connector-crm": ["commands.crm"],
        f"{settings.topic_prefix}lienthong-connector-acct": ["commands.acct"],
    }


async def health(request: web.Request) -> dict[str, Any]:
    settings, systems = request.app[SETTINGS], request.app[SYSTEMS]
    numbers = await asyncio.to_thread(broker_numbers, settings, watched_groups(settings))
    numbers["connectors"] = {local.system: dict(local.connector.stats) for local in (systems.crm, systems.acct)}
    numbers["faults_injected"] = {local.system: dict(local.faults.counts) for local in (systems.crm, systems.acct)}
    numbers["capture"] = {
        local.system: {"events": local.capture.reporter.emitted} for local in (systems.crm, systems.acct)
    }
    return numbers


async def health_json(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(await health(request)), content_type="application/json")


async def page(request: web.Request) -> web.Response:
    numbers = await health(request)

    def table(title: str, rows: dict[str, Any]) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in sorted(rows.items())
        )
        return f"<h2>{title}</h2><table border=1 cellpadding=3>{cells or '<tr><td>none</td></tr>'}</table>"

    body = (
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=3><title>lienthong sync health</title>"
        "<h1>lienthong: sync health</h1>"
        + table("consumer lag (messages not yet committed)", numbers["lag"])
        + table("messages per topic", numbers["messages"])
        + "".join(table(f"{system} connector outcomes", stats) for system, stats in numbers["connectors"].items())
        + "".join(table(f"{system} capture", counts) for system, counts in numbers["capture"].items())
        + "".join(
            table(f"{system} sandbox faults injected", counts) for system, counts in numbers["faults_injected"].items()
        )
        + "<p><a href=/health.json>as JSON</a></p>"
    )
    return web.Response(text=body, content_type="text/html")


def create_dashboard(settings: Settings, systems: LocalSystems) -> web.Application:
    app = web.Application()
    app[SETTINGS], app[SYSTEMS] = settings, systems
    app.router.add_get("/", page)
    app.router.add_get("/health.json", health_json)
    return app
